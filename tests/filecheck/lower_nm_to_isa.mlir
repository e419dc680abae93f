// RUN: nmc opt -p 'lower-nm-to-isa{target=sta_ref}' %s | filecheck %s

// lower-nm-to-isa turns the planned nm function into the isa program: one isa.buffer per
// DRAM tensor (params with their layout, the input, the output, temporaries), then one
// isa op per instruction in program order, each tagged with its layer, ending in halt.
// The 2:4 sparse linear with bias (one 4x8x8 tile) loads the bias row, the input tile, the
// packed values and the index words, runs `spmatmul` into the accumulator, adds the bias
// on the vector unit on its way to SPAD and stores the tile; the residual add loads both
// operands, adds and stores. Every wait/signal mask is still empty: insert-tokens sets
// them.

builtin.module attributes {nm.target = #nm.target<"sta_ref">, nm.dram_words = #nm.dram_words<320>} {
  func.func @main(%x: tensor<1x4x8xf32>) -> tensor<1x4x8xf32> attributes {nm.input_names = ["x"], nm.output_names = ["output"], nm.input_addrs = [#nm.addr<128>]} {
    %w = nm.param "fc.weight" {nm.layout = #nm.layout<nm_pack 2:4, f32>, nm.addr = #nm.addr<0>} : tensor<8x8xf32>
    %b = nm.param "fc.bias" {nm.addr = #nm.addr<64>, nm.layout = #nm.layout<identity, f32>} : tensor<8xf32>
    %fc = nm.linear "fc" %x, %w, %b sparsity array<i64: 2, 4> {nm.tile = #nm.tile<m = 4, n = 8, k = 8>, nm.addr = #nm.addr<256>} : (tensor<1x4x8xf32>, tensor<8x8xf32>, tensor<8xf32>) -> tensor<1x4x8xf32>
    %add = nm.add "add" %x, %fc {nm.tile = #nm.tile<rows = 4>, nm.addr = #nm.addr<192>} : (tensor<1x4x8xf32>, tensor<1x4x8xf32>) -> tensor<1x4x8xf32>
    func.return %add : tensor<1x4x8xf32>
  }
}

// CHECK:      builtin.module attributes {{{.*}}isa.target = "sta_ref", isa.target_id = 1 : i64, nm.layer_kinds = {fc = "linear", add = "add"}, nm.layer_weights = {fc = "fc.weight"}}
// CHECK-NEXT: "isa.buffer"() <{name = "fc.weight", kind = "const", addr = 0 : i64, shape = array<i64: 5, 8>, param = "fc.weight", layout = "nm_pack:2:4"}>
// CHECK-NEXT: "isa.buffer"() <{name = "fc.bias", kind = "const", addr = 64 : i64, shape = array<i64: 8>, param = "fc.bias", layout = "identity"}>
// CHECK-NEXT: "isa.buffer"() <{name = "x", kind = "input", addr = 128 : i64, shape = array<i64: 1, 4, 8>}>
// CHECK-NEXT: "isa.buffer"() <{name = "output", kind = "output", addr = 192 : i64, shape = array<i64: 1, 4, 8>}>
// CHECK-NEXT: "isa.buffer"() <{name = "fc", kind = "temp", addr = 256 : i64, shape = array<i64: 1, 4, 8>}>
// CHECK-NEXT: isa.load wait=- signal=- mem=spad local=0xe0 dram=0x40 rows=1 cols=8 stride=8 layer "fc"
// CHECK-NEXT: isa.load wait=- signal=- mem=spad local=0x0 dram=0x80 rows=4 cols=8 stride=8 layer "fc"
// CHECK-NEXT: isa.load wait=- signal=- mem=spad local=0x40 dram=0x0 rows=4 cols=8 stride=8 layer "fc"
// CHECK-NEXT: isa.load wait=- signal=- mem=spad local=0x80 dram=0x20 rows=1 cols=8 stride=8 layer "fc"
// CHECK-NEXT: isa.spmatmul wait=- signal=- a=0x0 w=0x40 idx=0x80 out=0x0 m=4 k=8 n=8 pat_n=2 pat_m=4 accumulate=0 layer "fc"
// CHECK-NEXT: isa.vbin wait=- signal=- fn=add dst_mem=spad dst=0xa0 a_mem=acc a=0x0 b_mem=spad b=0xe0 rows=4 cols=8 bcast=1 layer "fc"
// CHECK-NEXT: isa.store wait=- signal=- mem=spad local=0xa0 dram=0x100 rows=4 cols=8 stride=8 layer "fc"
// CHECK-NEXT: isa.load wait=- signal=- mem=spad local=0x0 dram=0x80 rows=4 cols=8 stride=8 layer "add"
// CHECK-NEXT: isa.load wait=- signal=- mem=spad local=0x40 dram=0x100 rows=4 cols=8 stride=8 layer "add"
// CHECK-NEXT: isa.vbin wait=- signal=- fn=add dst_mem=spad dst=0x0 a_mem=spad a=0x0 b_mem=spad b=0x40 rows=4 cols=8 bcast=0 layer "add"
// CHECK-NEXT: isa.store wait=- signal=- mem=spad local=0x0 dram=0xc0 rows=4 cols=8 stride=8 layer "add"
// CHECK-NEXT: isa.halt wait=- signal=-
// CHECK-NEXT: }

// RUN: nmc opt -p insert-tokens %s | filecheck %s

// insert-tokens sets each instruction's wait/signal masks from the memory footprints of
// the instructions (RAW, WAR and WAW hazards between units), keeping for each consumer
// only the latest producer per unit: the in-order queues imply the earlier ones. The
// input is lower-nm-to-isa's output for a 2:4 sparse linear and a residual add (see
// lower_nm_to_isa.mlir), every mask empty. Read the result as: the last of fc's loads
// signals the matrix unit, whose spmatmul waits for it (RAW on SPAD) and signals the
// vector unit (RAW on ACC) and the load unit (the add's first load overwrites SPAD 0x0,
// which spmatmul reads: WAR); the store waits for the bias add; the add's second load
// reads what fc's store wrote (RAW on DRAM 0x100), and so on.

builtin.module attributes {nm.target = #nm.target<"sta_ref">, nm.dram_words = #nm.dram_words<320>, isa.target = "sta_ref", isa.target_id = 1 : i64, nm.layer_kinds = {fc = "linear", add = "add"}, nm.layer_weights = {fc = "fc.weight"}} {
  "isa.buffer"() <{name = "fc.weight", kind = "const", addr = 0 : i64, shape = array<i64: 5, 8>, param = "fc.weight", layout = "nm_pack:2:4"}> : () -> ()
  "isa.buffer"() <{name = "fc.bias", kind = "const", addr = 64 : i64, shape = array<i64: 8>, param = "fc.bias", layout = "identity"}> : () -> ()
  "isa.buffer"() <{name = "x", kind = "input", addr = 128 : i64, shape = array<i64: 1, 4, 8>}> : () -> ()
  "isa.buffer"() <{name = "output", kind = "output", addr = 192 : i64, shape = array<i64: 1, 4, 8>}> : () -> ()
  "isa.buffer"() <{name = "fc", kind = "temp", addr = 256 : i64, shape = array<i64: 1, 4, 8>}> : () -> ()
  isa.load wait=- signal=- mem=spad local=0xe0 dram=0x40 rows=1 cols=8 stride=8 layer "fc"
  isa.load wait=- signal=- mem=spad local=0x0 dram=0x80 rows=4 cols=8 stride=8 layer "fc"
  isa.load wait=- signal=- mem=spad local=0x40 dram=0x0 rows=4 cols=8 stride=8 layer "fc"
  isa.load wait=- signal=- mem=spad local=0x80 dram=0x20 rows=1 cols=8 stride=8 layer "fc"
  isa.spmatmul wait=- signal=- a=0x0 w=0x40 idx=0x80 out=0x0 m=4 k=8 n=8 pat_n=2 pat_m=4 accumulate=0 layer "fc"
  isa.vbin wait=- signal=- fn=add dst_mem=spad dst=0xa0 a_mem=acc a=0x0 b_mem=spad b=0xe0 rows=4 cols=8 bcast=1 layer "fc"
  isa.store wait=- signal=- mem=spad local=0xa0 dram=0x100 rows=4 cols=8 stride=8 layer "fc"
  isa.load wait=- signal=- mem=spad local=0x0 dram=0x80 rows=4 cols=8 stride=8 layer "add"
  isa.load wait=- signal=- mem=spad local=0x40 dram=0x100 rows=4 cols=8 stride=8 layer "add"
  isa.vbin wait=- signal=- fn=add dst_mem=spad dst=0x0 a_mem=spad a=0x0 b_mem=spad b=0x40 rows=4 cols=8 bcast=0 layer "add"
  isa.store wait=- signal=- mem=spad local=0x0 dram=0xc0 rows=4 cols=8 stride=8 layer "add"
  isa.halt wait=- signal=-
}

// CHECK:      isa.load wait=- signal=- mem=spad local=0xe0 dram=0x40 rows=1 cols=8 stride=8 layer "fc"
// CHECK-NEXT: isa.load wait=- signal=- mem=spad local=0x0 dram=0x80 rows=4 cols=8 stride=8 layer "fc"
// CHECK-NEXT: isa.load wait=- signal=- mem=spad local=0x40 dram=0x0 rows=4 cols=8 stride=8 layer "fc"
// CHECK-NEXT: isa.load wait=- signal=matrix mem=spad local=0x80 dram=0x20 rows=1 cols=8 stride=8 layer "fc"
// CHECK-NEXT: isa.spmatmul wait=load signal=load|vector a=0x0 w=0x40 idx=0x80 out=0x0 m=4 k=8 n=8 pat_n=2 pat_m=4 accumulate=0 layer "fc"
// CHECK-NEXT: isa.vbin wait=matrix signal=store fn=add {{.*}} layer "fc"
// CHECK-NEXT: isa.store wait=vector signal=load mem=spad local=0xa0 dram=0x100 {{.*}} layer "fc"
// CHECK-NEXT: isa.load wait=matrix signal=- mem=spad local=0x0 dram=0x80 {{.*}} layer "add"
// CHECK-NEXT: isa.load wait=store signal=vector mem=spad local=0x40 dram=0x100 {{.*}} layer "add"
// CHECK-NEXT: isa.vbin wait=load signal=store fn=add {{.*}} layer "add"
// CHECK-NEXT: isa.store wait=vector signal=- mem=spad local=0x0 dram=0xc0 {{.*}} layer "add"
// CHECK-NEXT: isa.halt wait=- signal=-

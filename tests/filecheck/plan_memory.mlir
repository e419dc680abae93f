// RUN: nmc opt -p plan-memory %s | filecheck %s

// plan-memory gives every tensor a DRAM address (`nm.addr`, in words, aligned to 64):
// the params first in program order (0 to 383), then the input (`nm.input_addrs` of
// @main: 384) and the output (the value returned: 448), then the intermediates (from
// 512), allocated in program order and freed after their last use: fc2 reuses norm's
// space, which is dead once fc1 has read it. Params get a layout: `identity`;
// `transpose` for a dense linear's weight (the kernel reads it [K, N]); a packed
// `nm_pack:N:M` set by prune-and-pack is kept. `nm.dram_words` on the module is the DRAM
// the program needs.

builtin.module attributes {nm.target = #nm.target<"sta_ref">} {
  func.func @main(%x: tensor<1x4x8xf32>) -> tensor<1x4x8xf32> attributes {nm.input_names = ["x"], nm.output_names = ["output"]} {
    %g = nm.param "norm.weight" : tensor<8xf32>
    %b = nm.param "norm.bias" : tensor<8xf32>
    %w1 = nm.param "fc1.weight" {nm.layout = #nm.layout<nm_pack 2:4, f32>} : tensor<16x8xf32>
    %w2 = nm.param "fc2.weight" : tensor<8x16xf32>
    %norm = nm.layer_norm "norm" %x, %g, %b eps 1.000000e-06 {nm.tile = #nm.tile<rows = 4>} : (tensor<1x4x8xf32>, tensor<8xf32>, tensor<8xf32>) -> tensor<1x4x8xf32>
    %fc1 = nm.linear "fc1" %norm, %w1 sparsity array<i64: 2, 4> {nm.tile = #nm.tile<m = 4, n = 16, k = 8>} : (tensor<1x4x8xf32>, tensor<16x8xf32>) -> tensor<1x4x16xf32>
    %fc2 = nm.linear "fc2" %fc1, %w2 {nm.tile = #nm.tile<m = 4, n = 8, k = 16>} : (tensor<1x4x16xf32>, tensor<8x16xf32>) -> tensor<1x4x8xf32>
    %add = nm.add "add" %x, %fc2 {nm.tile = #nm.tile<rows = 4>} : (tensor<1x4x8xf32>, tensor<1x4x8xf32>) -> tensor<1x4x8xf32>
    func.return %add : tensor<1x4x8xf32>
  }
}

// CHECK:      builtin.module attributes {nm.target = #nm.target<"sta_ref">, nm.dram_words = #nm.dram_words<640>}
// CHECK:      func.func @main{{.*}} attributes {{{.*}}nm.input_addrs = [#nm.addr<384>]}
// CHECK-NEXT: %g = nm.param "norm.weight" {nm.addr = #nm.addr<0>, nm.layout = #nm.layout<identity, f32>}
// CHECK-NEXT: %b = nm.param "norm.bias" {nm.addr = #nm.addr<64>, nm.layout = #nm.layout<identity, f32>}
// CHECK-NEXT: %w1 = nm.param "fc1.weight" {nm.layout = #nm.layout<nm_pack 2:4, f32>, nm.addr = #nm.addr<128>}
// CHECK-NEXT: %w2 = nm.param "fc2.weight" {nm.addr = #nm.addr<256>, nm.layout = #nm.layout<transpose, f32>}
// CHECK-NEXT: %norm = nm.layer_norm "norm" {{.*}}nm.addr = #nm.addr<512>}
// CHECK-NEXT: %fc1 = nm.linear "fc1" {{.*}}nm.addr = #nm.addr<576>}
// CHECK-NEXT: %fc2 = nm.linear "fc2" {{.*}}nm.addr = #nm.addr<512>}
// CHECK-NEXT: %add = nm.add "add" {{.*}}nm.addr = #nm.addr<448>}
// CHECK-NEXT: func.return %add

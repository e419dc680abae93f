// RUN: nmc opt -p 'prune-and-pack{target=sta_ref}' %s | filecheck %s

// prune-and-pack checks each sparse linear's N:M pattern against the target and marks
// its weight's nm.param with the packed DRAM layout `nm_pack:N:M` (the values are packed
// at emission). Dense weights, N = M (dense too) and other params keep no layout.

builtin.module {
  func.func @main(%x: tensor<2x8xf32>) -> tensor<2x8xf32> {
    %w1 = nm.param "fc1.weight" : tensor<16x8xf32>
    %b1 = nm.param "fc1.bias" : tensor<16xf32>
    %w2 = nm.param "fc2.weight" : tensor<8x16xf32>
    %w3 = nm.param "fc3.weight" : tensor<8x8xf32>
    %w4 = nm.param "fc4.weight" : tensor<8x8xf32>
    %fc1 = nm.linear "fc1" %x, %w1, %b1 sparsity array<i64: 2, 4> : (tensor<2x8xf32>, tensor<16x8xf32>, tensor<16xf32>) -> tensor<2x16xf32>
    %fc2 = nm.linear "fc2" %fc1, %w2 sparsity array<i64: 1, 8> : (tensor<2x16xf32>, tensor<8x16xf32>) -> tensor<2x8xf32>
    %fc3 = nm.linear "fc3" %fc2, %w3 sparsity array<i64: 4, 4> : (tensor<2x8xf32>, tensor<8x8xf32>) -> tensor<2x8xf32>
    %fc4 = nm.linear "fc4" %fc3, %w4 : (tensor<2x8xf32>, tensor<8x8xf32>) -> tensor<2x8xf32>
    func.return %fc4 : tensor<2x8xf32>
  }
}

// CHECK:      %w1 = nm.param "fc1.weight" {nm.layout = #nm.layout<nm_pack 2:4, f32>} : tensor<16x8xf32>
// CHECK-NEXT: %b1 = nm.param "fc1.bias" : tensor<16xf32>
// CHECK-NEXT: %w2 = nm.param "fc2.weight" {nm.layout = #nm.layout<nm_pack 1:8, f32>} : tensor<8x16xf32>
// CHECK-NEXT: %w3 = nm.param "fc3.weight" : tensor<8x8xf32>
// CHECK-NEXT: %w4 = nm.param "fc4.weight" : tensor<8x8xf32>
// CHECK-NEXT: %fc1 = nm.linear "fc1" %x, %w1, %b1 sparsity array<i64: 2, 4> :

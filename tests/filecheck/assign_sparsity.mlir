// RUN: nmc opt -p 'assign-sparsity{spec="2:4"}' %s | filecheck %s
// RUN: nmc opt -p assign-sparsity %s | filecheck %s --check-prefix=NOSPEC

// A uniform spec N:M sets the `sparsity` property of every nm.linear except the
// classifier head (named head/classifier, or returned directly), which stays dense.
// Without a spec the pass changes nothing.

builtin.module {
  func.func @main(%x: tensor<2x8xf32>) -> tensor<2x3xf32> {
    %w1 = nm.param "fc1.weight" : tensor<16x8xf32>
    %w2 = nm.param "fc2.weight" : tensor<8x16xf32>
    %wh = nm.param "head.weight" : tensor<3x8xf32>
    %fc1 = nm.linear "fc1" %x, %w1 : (tensor<2x8xf32>, tensor<16x8xf32>) -> tensor<2x16xf32>
    %fc2 = nm.linear "fc2" %fc1, %w2 : (tensor<2x16xf32>, tensor<8x16xf32>) -> tensor<2x8xf32>
    %head = nm.linear "head" %fc2, %wh : (tensor<2x8xf32>, tensor<3x8xf32>) -> tensor<2x3xf32>
    func.return %head : tensor<2x3xf32>
  }
}

// CHECK:      %fc1 = nm.linear "fc1" %x, %w1 sparsity array<i64: 2, 4> :
// CHECK-NEXT: %fc2 = nm.linear "fc2" %fc1, %w2 sparsity array<i64: 2, 4> :
// CHECK-NEXT: %head = nm.linear "head" %fc2, %wh : (tensor<2x8xf32>, tensor<3x8xf32>) -> tensor<2x3xf32>

// NOSPEC-NOT: sparsity

// RUN: not nmc opt -p 'assign-sparsity{spec="2:4"}' %s 2>&1 | filecheck %s
// RUN: nmc opt -p 'assign-sparsity{spec="dense"}' %s | filecheck %s --check-prefix=DENSE

// A model without transformer blocks (no residual x + f(x)) has nothing a uniform N:M
// prunes: an error that names its linears, which a FILE.json can prune one by one, instead
// of a program as dense as before. A dense spec has nothing to prune anyway.

builtin.module {
  func.func @main(%x: tensor<2x8xf32>) -> tensor<2x3xf32> {
    %w1 = nm.param "fc1.weight" : tensor<16x8xf32>
    %w2 = nm.param "fc2.weight" : tensor<3x16xf32>
    %fc1 = nm.linear "fc1" %x, %w1 : (tensor<2x8xf32>, tensor<16x8xf32>) -> tensor<2x16xf32>
    %fc2 = nm.linear "fc2" %fc1, %w2 : (tensor<2x16xf32>, tensor<3x16xf32>) -> tensor<2x3xf32>
    func.return %fc2 : tensor<2x3xf32>
  }
}

// CHECK: nmc: error: --sparsity 2:4 prunes the linears of transformer blocks (inside a residual branch x + f(x)) and this model has none; name the linears to prune in a FILE.json (linear layers: fc1, fc2)
// DENSE-NOT: sparsity

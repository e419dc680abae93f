// RUN: nmc opt -p 'assign-sparsity{spec="2:4"}' %s | filecheck %s
// RUN: nmc opt -p assign-sparsity %s | filecheck %s --check-prefix=NOSPEC

// A uniform spec N:M sets the `sparsity` property of the linears of transformer blocks,
// ELSA's choice set: the linears inside a residual branch x + f(x), whatever their names.
// Linears outside every branch stay dense: one before the blocks ("embed"), one between
// them (Swin's patch-merging "reduction": it computes the next block's x, so it is not
// inside that block's branch) and the classifier head (named head/classifier, or
// returned directly). An add of unrelated tensors (a position embedding) is no residual.
// Without a spec the pass changes nothing.

builtin.module {
  func.func @main(%x: tensor<2x8xf32>) -> tensor<2x3xf32> {
    %we = nm.param "embed.weight" : tensor<8x8xf32>
    %w1 = nm.param "blocks.0.mlp.fc1.weight" : tensor<16x8xf32>
    %w2 = nm.param "blocks.0.mlp.fc2.weight" : tensor<8x16xf32>
    %wr = nm.param "downsample.reduction.weight" : tensor<8x8xf32>
    %wq = nm.param "blocks.1.attention.query.weight" : tensor<8x8xf32>
    %pos = nm.param "pos_embed" : tensor<2x8xf32>
    %wh = nm.param "head.weight" : tensor<3x8xf32>
    %embed = nm.linear "embed" %x, %we : (tensor<2x8xf32>, tensor<8x8xf32>) -> tensor<2x8xf32>
    %tokens = nm.add "pos_add" %embed, %pos : (tensor<2x8xf32>, tensor<2x8xf32>) -> tensor<2x8xf32>
    %fc1 = nm.linear "blocks.0.mlp.fc1" %tokens, %w1 : (tensor<2x8xf32>, tensor<16x8xf32>) -> tensor<2x16xf32>
    %fc2 = nm.linear "blocks.0.mlp.fc2" %fc1, %w2 : (tensor<2x16xf32>, tensor<8x16xf32>) -> tensor<2x8xf32>
    %add0 = nm.add "blocks.0.add" %tokens, %fc2 : (tensor<2x8xf32>, tensor<2x8xf32>) -> tensor<2x8xf32>
    %red = nm.linear "downsample.reduction" %add0, %wr : (tensor<2x8xf32>, tensor<8x8xf32>) -> tensor<2x8xf32>
    %query = nm.linear "blocks.1.attention.query" %red, %wq : (tensor<2x8xf32>, tensor<8x8xf32>) -> tensor<2x8xf32>
    %add1 = nm.add "blocks.1.add" %query, %red : (tensor<2x8xf32>, tensor<2x8xf32>) -> tensor<2x8xf32>
    %head = nm.linear "head" %add1, %wh : (tensor<2x8xf32>, tensor<3x8xf32>) -> tensor<2x3xf32>
    func.return %head : tensor<2x3xf32>
  }
}

// CHECK:      %embed = nm.linear "embed" %x, %we : (tensor<2x8xf32>, tensor<8x8xf32>) -> tensor<2x8xf32>
// CHECK:      %fc1 = nm.linear "blocks.0.mlp.fc1" %tokens, %w1 sparsity array<i64: 2, 4> :
// CHECK-NEXT: %fc2 = nm.linear "blocks.0.mlp.fc2" %fc1, %w2 sparsity array<i64: 2, 4> :
// CHECK:      %red = nm.linear "downsample.reduction" %add0, %wr : (tensor<2x8xf32>, tensor<8x8xf32>) -> tensor<2x8xf32>
// CHECK-NEXT: %query = nm.linear "blocks.1.attention.query" %red, %wq sparsity array<i64: 2, 4> :
// CHECK:      %head = nm.linear "head" %add1, %wh : (tensor<2x8xf32>, tensor<3x8xf32>) -> tensor<2x3xf32>

// NOSPEC-NOT: sparsity

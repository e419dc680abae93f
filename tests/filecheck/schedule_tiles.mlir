// RUN: nmc opt -p 'schedule-tiles{target=sta_ref}' %s | filecheck %s

// schedule-tiles sets the module's target and gives every compute op its tile sizes
// (`nm.tile`), chosen on the target's timing model so that the tiles (double-buffered)
// fit the scratchpad and accumulator: rows per tile for the row-wise ops, m x n x k for
// a linear (`acc = 1`: k is split, partial sums stay in the accumulator). The shapes are
// mlp_block's (DeiT-tiny's MLP: 197 tokens, 192 -> 768 -> 192), too big for one tile.

builtin.module {
  func.func @main(%x: tensor<1x197x192xf32>) -> tensor<1x197x192xf32> {
    %norm.weight = nm.param "norm.weight" : tensor<192xf32>
    %norm.bias = nm.param "norm.bias" : tensor<192xf32>
    %fc1.weight = nm.param "fc1.weight" : tensor<768x192xf32>
    %fc1.bias = nm.param "fc1.bias" : tensor<768xf32>
    %fc2.weight = nm.param "fc2.weight" : tensor<192x768xf32>
    %fc2.bias = nm.param "fc2.bias" : tensor<192xf32>
    %norm = nm.layer_norm "norm" %x, %norm.weight, %norm.bias eps 1.000000e-06 : (tensor<1x197x192xf32>, tensor<192xf32>, tensor<192xf32>) -> tensor<1x197x192xf32>
    %fc1 = nm.linear "fc1" %norm, %fc1.weight, %fc1.bias sparsity array<i64: 2, 4> activation "gelu" : (tensor<1x197x192xf32>, tensor<768x192xf32>, tensor<768xf32>) -> tensor<1x197x768xf32>
    %fc2 = nm.linear "fc2" %fc1, %fc2.weight, %fc2.bias sparsity array<i64: 2, 4> : (tensor<1x197x768xf32>, tensor<192x768xf32>, tensor<192xf32>) -> tensor<1x197x192xf32>
    %add = nm.add "add" %x, %fc2 : (tensor<1x197x192xf32>, tensor<1x197x192xf32>) -> tensor<1x197x192xf32>
    func.return %add : tensor<1x197x192xf32>
  }
}

// CHECK:      builtin.module attributes {nm.target = #nm.target<"sta_ref">}
// CHECK:      %norm = nm.layer_norm "norm" {{.*}} {nm.tile = #nm.tile<rows = 16>}
// CHECK-NEXT: %fc1 = nm.linear "fc1" {{.*}} {nm.tile = #nm.tile<m = 64, n = 112, k = 192>}
// CHECK-NEXT: %fc2 = nm.linear "fc2" {{.*}} {nm.tile = #nm.tile<m = 80, n = 192, k = 128, acc = 1>}
// CHECK-NEXT: %add = nm.add "add" {{.*}} {nm.tile = #nm.tile<rows = 29>}

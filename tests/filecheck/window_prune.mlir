// RUN: nmc opt -p 'window-prune{keep="0.5"}' %s | filecheck %s
// RUN: nmc opt -p window-prune %s | filecheck %s --check-prefix=NOKEEP

// One Swin block (swin_micro shrunk to a 4x4 token grid of 4 channels, 2x2 windows: 4
// windows of 4 tokens), as raise-torch-to-nm writes it: norm1 -> window partition
// (permute_rows) -> qkv -> attention -> proj -> window reverse -> residual add -> norm2
// -> MLP -> residual add. With keep = 0.5 window-prune rewrites it in window space: the
// windows are scored (win.magnitude: mean |x| per token; L2 norm per window in win.rank,
// which keeps the best 2), win.gather takes the kept windows of the partitioned input,
// the whole block runs on them (2 windows instead of 4), and win.scatter writes them back
// over the input before the window reverse, so pruned windows pass through unchanged.
// Without `keep` the pass changes nothing.

builtin.module {
  func.func @main(%x: tensor<1x4x4x4xf32>) -> tensor<1x16x4xf32> {
    %norm1.weight = nm.param "layers.0.blocks.0.norm1.weight" : tensor<4xf32>
    %norm1.bias = nm.param "layers.0.blocks.0.norm1.bias" : tensor<4xf32>
    %attn.qkv.weight = nm.param "layers.0.blocks.0.attn.qkv.weight" : tensor<12x4xf32>
    %attn.qkv.bias = nm.param "layers.0.blocks.0.attn.qkv.bias" : tensor<12xf32>
    %attn.proj.weight = nm.param "layers.0.blocks.0.attn.proj.weight" : tensor<4x4xf32>
    %attn.proj.bias = nm.param "layers.0.blocks.0.attn.proj.bias" : tensor<4xf32>
    %norm2.weight = nm.param "layers.0.blocks.0.norm2.weight" : tensor<4xf32>
    %norm2.bias = nm.param "layers.0.blocks.0.norm2.bias" : tensor<4xf32>
    %mlp.fc1.weight = nm.param "layers.0.blocks.0.mlp.fc1.weight" : tensor<16x4xf32>
    %mlp.fc1.bias = nm.param "layers.0.blocks.0.mlp.fc1.bias" : tensor<16xf32>
    %mlp.fc2.weight = nm.param "layers.0.blocks.0.mlp.fc2.weight" : tensor<4x16xf32>
    %mlp.fc2.bias = nm.param "layers.0.blocks.0.mlp.fc2.bias" : tensor<4xf32>
    %attn.folded_unsqueeze = nm.param "layers.0.blocks.0.attn.folded_unsqueeze" : tensor<1x2x4x4xf32>
    %norm1 = nm.layer_norm "layers.0.blocks.0.norm1" %x, %norm1.weight, %norm1.bias eps 1.000000e-05 : (tensor<1x4x4x4xf32>, tensor<4xf32>, tensor<4xf32>) -> tensor<1x4x4x4xf32>
    %permute_rows = nm.permute_rows "layers.0.blocks.0.permute_rows" %norm1 rows array<i64: 0, 1, 4, 5, 2, 3, 6, 7, 8, 9, 12, 13, 10, 11, 14, 15> : (tensor<1x4x4x4xf32>) -> tensor<4x4x4xf32>
    %attn.qkv = nm.linear "layers.0.blocks.0.attn.qkv" %permute_rows, %attn.qkv.weight, %attn.qkv.bias : (tensor<4x4x4xf32>, tensor<12x4xf32>, tensor<12xf32>) -> tensor<4x4x12xf32>
    %attn = nm.attention "layers.0.blocks.0.attn" %attn.qkv bias %attn.folded_unsqueeze heads 2 scale 0.70710678118654757 : (tensor<4x4x12xf32>, tensor<1x2x4x4xf32>) -> tensor<4x4x4xf32>
    %attn.proj = nm.linear "layers.0.blocks.0.attn.proj" %attn, %attn.proj.weight, %attn.proj.bias : (tensor<4x4x4xf32>, tensor<4x4xf32>, tensor<4xf32>) -> tensor<4x4x4xf32>
    %permute_rows_1 = nm.permute_rows "layers.0.blocks.0.permute_rows_1" %attn.proj rows array<i64: 0, 1, 4, 5, 2, 3, 6, 7, 8, 9, 12, 13, 10, 11, 14, 15> : (tensor<4x4x4xf32>) -> tensor<1x4x4x4xf32>
    %add = nm.add "layers.0.blocks.0.add" %x, %permute_rows_1 : (tensor<1x4x4x4xf32>, tensor<1x4x4x4xf32>) -> tensor<1x4x4x4xf32>
    %r = nm.reshape %add : tensor<1x4x4x4xf32> -> tensor<1x16x4xf32>
    %norm2 = nm.layer_norm "layers.0.blocks.0.norm2" %r, %norm2.weight, %norm2.bias eps 1.000000e-05 : (tensor<1x16x4xf32>, tensor<4xf32>, tensor<4xf32>) -> tensor<1x16x4xf32>
    %mlp.fc1 = nm.linear "layers.0.blocks.0.mlp.fc1" %norm2, %mlp.fc1.weight, %mlp.fc1.bias : (tensor<1x16x4xf32>, tensor<16x4xf32>, tensor<16xf32>) -> tensor<1x16x16xf32>
    %mlp.act = nm.gelu "layers.0.blocks.0.mlp.act" %mlp.fc1 approximate "none" : (tensor<1x16x16xf32>) -> tensor<1x16x16xf32>
    %mlp.fc2 = nm.linear "layers.0.blocks.0.mlp.fc2" %mlp.act, %mlp.fc2.weight, %mlp.fc2.bias : (tensor<1x16x16xf32>, tensor<4x16xf32>, tensor<4xf32>) -> tensor<1x16x4xf32>
    %add_1 = nm.add "layers.0.blocks.0.add_1" %r, %mlp.fc2 : (tensor<1x16x4xf32>, tensor<1x16x4xf32>) -> tensor<1x16x4xf32>
    func.return %add_1 : tensor<1x16x4xf32>
  }
}

// CHECK:      builtin.module attributes {nm.window_keep = {layers.0.blocks.0 = 5.000000e-01 : f64}
// CHECK:      %[[MAG:.*]] = win.magnitude "layers.0.blocks.0.window_magnitude" %x : (tensor<1x4x4x4xf32>) -> tensor<1x4x4x1xf32>
// CHECK-NEXT: %[[SCORES:.*]] = nm.permute_rows "layers.0.blocks.0.window_scores" %[[MAG]] rows array<i64: 0, 1, 4, 5, 2, 3, 6, 7, 8, 9, 12, 13, 10, 11, 14, 15> : (tensor<1x4x4x1xf32>) -> tensor<4x4xf32>
// CHECK-NEXT: %[[GRID:.*]] = nm.reshape %[[SCORES]] : tensor<4x4xf32> -> tensor<1x4x4xf32>
// CHECK-NEXT: %[[IDX:.*]] = win.rank "layers.0.blocks.0.window_rank" %[[GRID]] keep 2 : (tensor<1x4x4xf32>) -> tensor<1x2xf32>
// CHECK-NEXT: %[[WINDOWS:.*]] = nm.permute_rows "layers.0.blocks.0.window_partition" %x
// CHECK-NEXT: %[[KEPT:.*]] = win.gather "layers.0.blocks.0.window_gather" %[[WINDOWS]], %[[IDX]] count 2 : (tensor<4x4x4xf32>, tensor<1x2xf32>) -> tensor<2x4x4xf32>
// CHECK-NEXT: %[[N1:.*]] = nm.layer_norm "layers.0.blocks.0.norm1" %[[KEPT]], {{.*}} -> tensor<2x4x4xf32>
// CHECK-NEXT: %[[QKV:.*]] = nm.linear "layers.0.blocks.0.attn.qkv" %[[N1]], {{.*}} -> tensor<2x4x12xf32>
// CHECK-NEXT: %[[ATTN:.*]] = nm.attention "layers.0.blocks.0.attn" %[[QKV]] bias %attn.folded_unsqueeze heads 2 {{.*}} -> tensor<2x4x4xf32>
// CHECK-NEXT: %[[PROJ:.*]] = nm.linear "layers.0.blocks.0.attn.proj" %[[ATTN]], {{.*}} -> tensor<2x4x4xf32>
// CHECK-NEXT: %[[ADD:.*]] = nm.add "layers.0.blocks.0.add" %[[KEPT]], %[[PROJ]] : {{.*}} -> tensor<2x4x4xf32>
// CHECK-NEXT: %[[N2:.*]] = nm.layer_norm "layers.0.blocks.0.norm2" %[[ADD]], {{.*}} -> tensor<2x4x4xf32>
// CHECK-NEXT: %[[FC1:.*]] = nm.linear "layers.0.blocks.0.mlp.fc1" %[[N2]], {{.*}} -> tensor<2x4x16xf32>
// CHECK-NEXT: %[[ACT:.*]] = nm.gelu "layers.0.blocks.0.mlp.act" %[[FC1]] {{.*}} -> tensor<2x4x16xf32>
// CHECK-NEXT: %[[FC2:.*]] = nm.linear "layers.0.blocks.0.mlp.fc2" %[[ACT]], {{.*}} -> tensor<2x4x4xf32>
// CHECK-NEXT: %[[ADD1:.*]] = nm.add "layers.0.blocks.0.add_1" %[[ADD]], %[[FC2]] : {{.*}} -> tensor<2x4x4xf32>
// CHECK-NEXT: %[[BACK:.*]] = win.scatter "layers.0.blocks.0.window_scatter" %[[WINDOWS]], %[[IDX]], %[[ADD1]] count 2 : (tensor<4x4x4xf32>, tensor<1x2xf32>, tensor<2x4x4xf32>) -> tensor<4x4x4xf32>
// CHECK-NEXT: %[[OUT:.*]] = nm.permute_rows "layers.0.blocks.0.window_reverse" %[[BACK]] {{.*}} -> tensor<1x4x4x4xf32>
// CHECK-NEXT: %[[RES:.*]] = nm.reshape %[[OUT]] : tensor<1x4x4x4xf32> -> tensor<1x16x4xf32>
// CHECK-NEXT: func.return %[[RES]] : tensor<1x16x4xf32>

// NOKEEP:     builtin.module {
// NOKEEP:     %permute_rows = nm.permute_rows "layers.0.blocks.0.permute_rows" %norm1
// NOKEEP-NOT: win.

// RUN: not nmc opt -p 'prune-and-pack{target=sta_ref}' %s 2>&1 | filecheck %s

// A pattern the target's matrix unit does not support (sta_ref: 1:4, 2:4, 1:8, 2:8, 4:8)
// is an error naming the layer, not a silently dense layer.

builtin.module {
  func.func @main(%x: tensor<2x8xf32>) -> tensor<2x16xf32> {
    %w = nm.param "fc.weight" : tensor<16x8xf32>
    %fc = nm.linear "fc" %x, %w sparsity array<i64: 3, 8> : (tensor<2x8xf32>, tensor<16x8xf32>) -> tensor<2x16xf32>
    func.return %fc : tensor<2x16xf32>
  }
}

// CHECK: nmc: error: {{.*}}layer 'fc'{{.*}}3:8

// RUN: not nmc opt -p 'assign-sparsity{target=sta_ref}' %s 2>&1 | filecheck %s
// RUN: not nmc opt -p 'schedule-tiles{target=sta_ref}' %s 2>&1 | filecheck %s

// A pattern already in the IR (by hand, or from an earlier nmc opt) is checked against the
// target where patterns are set, assign-sparsity, even without a spec; schedule-tiles
// refuses it too, before it costs a tiling for it (sta_ref: 1:4, 2:4, 1:8, 2:8, 4:8).

builtin.module {
  func.func @main(%x: tensor<2x8xf32>) -> tensor<2x16xf32> {
    %w = nm.param "fc.weight" : tensor<16x8xf32>
    %fc = nm.linear "fc" %x, %w sparsity array<i64: 3, 8> : (tensor<2x8xf32>, tensor<16x8xf32>) -> tensor<2x16xf32>
    func.return %fc : tensor<2x16xf32>
  }
}

// CHECK: nmc: error: layer 'fc': target 'sta_ref' does not support N:M pattern 3:8; supported: 1:4, 2:4, 1:8, 2:8, 4:8

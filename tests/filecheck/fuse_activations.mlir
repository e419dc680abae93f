// RUN: nmc opt -p fuse-activations %s | filecheck %s

// A GELU whose input is a linear with no other user becomes the linear's `activation`
// (exact GELU: "gelu", tanh approximation: "gelu_tanh"), and the GELU op disappears.
// A linear whose result is also read elsewhere keeps its GELU: the unfused value is
// needed too.

builtin.module {
  func.func @main(%x: tensor<2x4xf32>) -> (tensor<2x4xf32>, tensor<2x4xf32>, tensor<2x4xf32>) {
    %w = nm.param "w" : tensor<4x4xf32>
    %b = nm.param "b" : tensor<4xf32>
    %fc1 = nm.linear "fc1" %x, %w, %b : (tensor<2x4xf32>, tensor<4x4xf32>, tensor<4xf32>) -> tensor<2x4xf32>
    %act1 = nm.gelu "act1" %fc1 approximate "none" : (tensor<2x4xf32>) -> tensor<2x4xf32>
    %fc2 = nm.linear "fc2" %act1, %w : (tensor<2x4xf32>, tensor<4x4xf32>) -> tensor<2x4xf32>
    %act2 = nm.gelu "act2" %fc2 approximate "tanh" : (tensor<2x4xf32>) -> tensor<2x4xf32>
    %fc3 = nm.linear "fc3" %act2, %w : (tensor<2x4xf32>, tensor<4x4xf32>) -> tensor<2x4xf32>
    %act3 = nm.gelu "act3" %fc3 approximate "none" : (tensor<2x4xf32>) -> tensor<2x4xf32>
    %add = nm.add "add" %fc3, %act3 : (tensor<2x4xf32>, tensor<2x4xf32>) -> tensor<2x4xf32>
    func.return %act2, %add, %fc3 : tensor<2x4xf32>, tensor<2x4xf32>, tensor<2x4xf32>
  }
}

// CHECK:      %fc1 = nm.linear "fc1" %x, %w, %b activation "gelu" : (tensor<2x4xf32>, tensor<4x4xf32>, tensor<4xf32>) -> tensor<2x4xf32>
// CHECK-NEXT: %fc2 = nm.linear "fc2" %fc1, %w activation "gelu_tanh" : (tensor<2x4xf32>, tensor<4x4xf32>) -> tensor<2x4xf32>
// CHECK-NEXT: %fc3 = nm.linear "fc3" %fc2, %w : (tensor<2x4xf32>, tensor<4x4xf32>) -> tensor<2x4xf32>
// CHECK-NEXT: %act3 = nm.gelu "act3" %fc3 approximate "none"
// CHECK-NEXT: %add = nm.add "add" %fc3, %act3
// CHECK-NEXT: func.return %fc2, %add, %fc3
// CHECK-NOT:  nm.gelu

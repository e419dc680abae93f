// RUN: nmc opt -p 'quantize{target=sta_int8}' %s | filecheck %s
// RUN: not nmc opt -p 'quantize{target=sta_int8 quant="q.json"}' %s 2>&1 | filecheck %s --check-prefix=QUANT

// A model that carries its own int8 scales (a PT2E-quantized model: the frontend writes
// them as nm.model_scales, by weight name) needs no --calib / --quant: quantize takes
// them as it takes a scales file. fc1 gets its scales and the int8 weight layout; fc3,
// which the model did not quantize, and fc2, which it did but whose N = 3 is no multiple
// of 4, stay fp32. A scales file next to the model's own scales is refused.

builtin.module attributes {nm.model_scales = {"fc1.weight" = #nm.quant<input = 0.5, weights = [0.25, 0.125, 1.0, 2.0]>, "fc2.weight" = #nm.quant<input = 0.25, weights = [1.0, 1.0, 1.0]>}} {
  func.func @main(%x: tensor<2x8xf32>) -> tensor<2x3xf32> {
    %w1 = nm.param "fc1.weight" : tensor<4x8xf32>
    %b1 = nm.param "fc1.bias" : tensor<4xf32>
    %w3 = nm.param "fc3.weight" : tensor<4x4xf32>
    %w2 = nm.param "fc2.weight" : tensor<3x4xf32>
    %fc1 = nm.linear "fc1" %x, %w1, %b1 : (tensor<2x8xf32>, tensor<4x8xf32>, tensor<4xf32>) -> tensor<2x4xf32>
    %fc3 = nm.linear "fc3" %fc1, %w3 : (tensor<2x4xf32>, tensor<4x4xf32>) -> tensor<2x4xf32>
    %fc2 = nm.linear "fc2" %fc3, %w2 : (tensor<2x4xf32>, tensor<3x4xf32>) -> tensor<2x3xf32>
    func.return %fc2 : tensor<2x3xf32>
  }
}

// CHECK:      %w1 = nm.param "fc1.weight" {nm.layout = #nm.layout<transpose, i8>} : tensor<4x8xf32>
// CHECK-NEXT: %b1 = nm.param "fc1.bias" : tensor<4xf32>
// CHECK-NEXT: %w3 = nm.param "fc3.weight" : tensor<4x4xf32>
// CHECK-NEXT: %w2 = nm.param "fc2.weight" : tensor<3x4xf32>
// CHECK-NEXT: %fc1 = nm.linear "fc1" %x, %w1, %b1 {nm.quant = #nm.quant<input = 0.5, weights = [0.25, 0.125, 1.0, 2.0]>}
// CHECK-NEXT: %fc3 = nm.linear "fc3" %fc1, %w3 :
// CHECK-NEXT: %fc2 = nm.linear "fc2" %fc3, %w2 :

// QUANT: nmc: error: --quant: the model carries its own int8 scales

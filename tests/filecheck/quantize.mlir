// RUN: echo '{"layers": {"fc1": {"input_scale": 0.5, "weight_scales": [0.25, 0.125, 1.0, 2.0]}}}' > %t.json && nmc opt -p 'quantize{target=sta_int8 quant="%t.json"}' %s | filecheck %s
// RUN: nmc opt -p 'quantize{target=sta_ref}' %s | filecheck %s --check-prefix=FP32

// On an int8 target, quantize gives every linear whose K and N are multiples of 4 its
// scales (#nm.quant: the input's, then one per output channel; here from a scales file)
// and its weight the int8 layout; other linears (fc2: N = 3) stay fp32. On an fp32 target
// it changes nothing.

builtin.module {
  func.func @main(%x: tensor<2x8xf32>) -> tensor<2x3xf32> {
    %w1 = nm.param "fc1.weight" : tensor<4x8xf32>
    %b1 = nm.param "fc1.bias" : tensor<4xf32>
    %w2 = nm.param "fc2.weight" : tensor<3x4xf32>
    %fc1 = nm.linear "fc1" %x, %w1, %b1 : (tensor<2x8xf32>, tensor<4x8xf32>, tensor<4xf32>) -> tensor<2x4xf32>
    %fc2 = nm.linear "fc2" %fc1, %w2 : (tensor<2x4xf32>, tensor<3x4xf32>) -> tensor<2x3xf32>
    func.return %fc2 : tensor<2x3xf32>
  }
}

// CHECK:      %w1 = nm.param "fc1.weight" {nm.layout = #nm.layout<transpose, i8>} : tensor<4x8xf32>
// CHECK-NEXT: %b1 = nm.param "fc1.bias" : tensor<4xf32>
// CHECK-NEXT: %w2 = nm.param "fc2.weight" : tensor<3x4xf32>
// CHECK-NEXT: %fc1 = nm.linear "fc1" %x, %w1, %b1 {nm.quant = #nm.quant<input = 0.5, weights = [0.25, 0.125, 1.0, 2.0]>}
// CHECK-NEXT: %fc2 = nm.linear "fc2" %fc1, %w2 :

// FP32-NOT: nm.quant
// FP32-NOT: i8

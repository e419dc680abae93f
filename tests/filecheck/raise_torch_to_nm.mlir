// RUN: nmc opt -p raise-torch-to-nm %s | filecheck %s

// The torch-mlir import of a layer norm, a linear and a GELU (cut from
// `nmc compile --dump-ir` of `nmc export mlp_block`, smaller): the weights are arguments
// of @main named by `nm.param`; raise-torch-to-nm turns each into an nm.param op, each
// torch.aten op into its nm op with a `layer` name from the PyTorch module path (the
// callsite locations), and drops the torch constants.

builtin.module {
  func.func @main(%arg0: !torch.vtensor<[4],f32> {nm.state_key = "norm.weight"}, %arg1: !torch.vtensor<[4],f32> {nm.state_key = "norm.bias"}, %arg2: !torch.vtensor<[8,4],f32> {nm.state_key = "fc1.weight"}, %arg3: !torch.vtensor<[8],f32> {nm.state_key = "fc1.bias"}, %arg4: !torch.vtensor<[1,3,4],f32>) -> !torch.vtensor<[1,3,8],f32> attributes {nm.input_names = ["x"], nm.output_names = ["output"]} {
    %0 = "torch.constant.str"() <{value = "none"}> : () -> !torch.str
    %1 = "torch.constant.bool"() <{value = false}> : () -> !torch.bool
    %2 = "torch.constant.float"() <{value = 1.000000e-06 : f64}> : () -> !torch.float
    %3 = "torch.constant.int"() <{value = 4 : i64}> : () -> !torch.int
    %4 = "torch.prim.ListConstruct"(%3) : (!torch.int) -> !torch.list<int>
    %5 = "torch.aten.layer_norm"(%arg4, %4, %arg0, %arg1, %2, %1) : (!torch.vtensor<[1,3,4],f32>, !torch.list<int>, !torch.vtensor<[4],f32>, !torch.vtensor<[4],f32>, !torch.float, !torch.bool) -> !torch.vtensor<[1,3,4],f32> loc(callsite("norm":0:0 at "mlp_block.py":31:0))
    %6 = "torch.aten.linear"(%5, %arg2, %arg3) : (!torch.vtensor<[1,3,4],f32>, !torch.vtensor<[8,4],f32>, !torch.vtensor<[8],f32>) -> !torch.vtensor<[1,3,8],f32> loc(callsite("fc1":0:0 at "mlp_block.py":31:0))
    %7 = "torch.aten.gelu"(%6, %0) : (!torch.vtensor<[1,3,8],f32>, !torch.str) -> !torch.vtensor<[1,3,8],f32> loc(callsite("act":0:0 at "mlp_block.py":31:0))
    func.return %7 : !torch.vtensor<[1,3,8],f32>
  }
}

// CHECK:      func.func @main(%x: tensor<1x3x4xf32>{{.*}}) -> tensor<1x3x8xf32>
// CHECK-DAG:  %norm.weight = nm.param "norm.weight" : tensor<4xf32>
// CHECK-DAG:  %norm.bias = nm.param "norm.bias" : tensor<4xf32>
// CHECK-DAG:  %fc1.weight = nm.param "fc1.weight" : tensor<8x4xf32>
// CHECK-DAG:  %fc1.bias = nm.param "fc1.bias" : tensor<8xf32>
// CHECK:      %norm = nm.layer_norm "norm" %x, %norm.weight, %norm.bias eps 1.000000e-06 : (tensor<1x3x4xf32>, tensor<4xf32>, tensor<4xf32>) -> tensor<1x3x4xf32>
// CHECK-NEXT: %fc1 = nm.linear "fc1" %norm, %fc1.weight, %fc1.bias : (tensor<1x3x4xf32>, tensor<8x4xf32>, tensor<8xf32>) -> tensor<1x3x8xf32>
// CHECK-NEXT: %act = nm.gelu "act" %fc1 approximate "none" : (tensor<1x3x8xf32>) -> tensor<1x3x8xf32>
// CHECK-NEXT: func.return %act : tensor<1x3x8xf32>
// CHECK-NOT:  torch.

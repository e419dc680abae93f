// RUN: nmc opt -p raise-torch-to-nm %s | filecheck %s

// A top-level nn.Sequential(nn.LayerNorm(64), nn.Linear(64, 64)) (cut from its
// `nmc compile --dump-ir`, smaller): its parameters are `0.weight`, `1.bias`, ... and its
// module paths `0`, `1`. Layer and parameter names stay as PyTorch spells them; only the
// SSA value names, which must not start with a digit in MLIR, get a `v` in front.

builtin.module {
  func.func @main(%arg0: !torch.vtensor<[4],f32> {nm.state_key = "0.weight"}, %arg1: !torch.vtensor<[4],f32> {nm.state_key = "0.bias"}, %arg2: !torch.vtensor<[8,4],f32> {nm.state_key = "1.weight"}, %arg3: !torch.vtensor<[8],f32> {nm.state_key = "1.bias"}, %arg4: !torch.vtensor<[1,5,4],f32>) -> !torch.vtensor<[1,5,8],f32> attributes {nm.input_names = ["input"], nm.output_names = ["output"]} {
    %0 = "torch.constant.bool"() <{value = false}> : () -> !torch.bool
    %1 = "torch.constant.float"() <{value = 1.000000e-05 : f64}> : () -> !torch.float
    %2 = "torch.constant.int"() <{value = 4 : i64}> : () -> !torch.int
    %3 = "torch.prim.ListConstruct"(%2) : (!torch.int) -> !torch.list<int>
    %4 = "torch.aten.layer_norm"(%arg4, %3, %arg0, %arg1, %1, %0) : (!torch.vtensor<[1,5,4],f32>, !torch.list<int>, !torch.vtensor<[4],f32>, !torch.vtensor<[4],f32>, !torch.float, !torch.bool) -> !torch.vtensor<[1,5,4],f32> loc("0":0:0)
    %5 = "torch.aten.linear"(%4, %arg2, %arg3) : (!torch.vtensor<[1,5,4],f32>, !torch.vtensor<[8,4],f32>, !torch.vtensor<[8],f32>) -> !torch.vtensor<[1,5,8],f32> loc("1":0:0)
    func.return %5 : !torch.vtensor<[1,5,8],f32>
  }
}

// CHECK:      func.func @main(%input: tensor<1x5x4xf32>{{.*}}) -> tensor<1x5x8xf32>
// CHECK-DAG:  %v0.weight = nm.param "0.weight" : tensor<4xf32>
// CHECK-DAG:  %v0.bias = nm.param "0.bias" : tensor<4xf32>
// CHECK-DAG:  %v1.weight = nm.param "1.weight" : tensor<8x4xf32>
// CHECK-DAG:  %v1.bias = nm.param "1.bias" : tensor<8xf32>
// CHECK:      %v0 = nm.layer_norm "0" %input, %v0.weight, %v0.bias eps 1.000000e-05
// CHECK-NEXT: %v1 = nm.linear "1" %v0, %v1.weight, %v1.bias
// CHECK-NEXT: func.return %v1 : tensor<1x5x8xf32>

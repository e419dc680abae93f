// RUN: nmc opt -p raise-torch-to-nm %s | filecheck %s

// timm 1.0's Swin pads every window partition unconditionally and crops the result back
// (cut from `nmc compile --dump-ir` of F.pad(x, (0,) * 6) -> linear -> y[:, :2, 1:, :]):
// a constant pad of width zero is an identity and disappears; slices of leading dims are
// row movement, composed into one nm.permute_rows (rows (0,1), (0,2), (1,1), (1,2) of the
// 3x3 map: 1, 2, 4, 5). Real pads never reach raising: the frontend makes them
// concatenations with constant tensors.

builtin.module {
  func.func @main(%arg0: !torch.vtensor<[4,4],f32> {nm.state_key = "fc.weight"}, %arg1: !torch.vtensor<[4],f32> {nm.state_key = "fc.bias"}, %arg2: !torch.vtensor<[1,3,3,4],f32>) -> !torch.vtensor<[1,2,2,4],f32> attributes {nm.input_names = ["x"], nm.output_names = ["output"]} {
    %0 = "torch.constant.float"() <{value = 0.000000e+00 : f64}> : () -> !torch.float
    %1 = "torch.constant.int"() <{value = 9223372036854775807 : i64}> : () -> !torch.int
    %2 = "torch.constant.int"() <{value = 2 : i64}> : () -> !torch.int
    %3 = "torch.constant.int"() <{value = 1 : i64}> : () -> !torch.int
    %4 = "torch.constant.int"() <{value = 0 : i64}> : () -> !torch.int
    %5 = "torch.prim.ListConstruct"(%4, %4, %4, %4, %4, %4) : (!torch.int, !torch.int, !torch.int, !torch.int, !torch.int, !torch.int) -> !torch.list<int>
    %6 = "torch.aten.constant_pad_nd"(%arg2, %5, %0) : (!torch.vtensor<[1,3,3,4],f32>, !torch.list<int>, !torch.float) -> !torch.vtensor<[1,3,3,4],f32>
    %7 = "torch.aten.linear"(%6, %arg0, %arg1) : (!torch.vtensor<[1,3,3,4],f32>, !torch.vtensor<[4,4],f32>, !torch.vtensor<[4],f32>) -> !torch.vtensor<[1,3,3,4],f32> loc(callsite("fc":0:0 at "padir.py":10:0))
    %8 = "torch.aten.slice.Tensor"(%7, %3, %4, %2, %3) : (!torch.vtensor<[1,3,3,4],f32>, !torch.int, !torch.int, !torch.int, !torch.int) -> !torch.vtensor<[1,2,3,4],f32>
    %9 = "torch.aten.slice.Tensor"(%8, %2, %3, %1, %3) : (!torch.vtensor<[1,2,3,4],f32>, !torch.int, !torch.int, !torch.int, !torch.int) -> !torch.vtensor<[1,2,2,4],f32>
    func.return %9 : !torch.vtensor<[1,2,2,4],f32>
  }
}

// CHECK:      func.func @main(%x: tensor<1x3x3x4xf32>{{.*}}) -> tensor<1x2x2x4xf32>
// CHECK:      %fc = nm.linear "fc" %x, %fc.weight, %fc.bias
// CHECK-NEXT: %permute_rows = nm.permute_rows "permute_rows" %fc rows array<i64: 1, 2, 4, 5> : (tensor<1x3x3x4xf32>) -> tensor<1x2x2x4xf32>
// CHECK-NEXT: func.return %permute_rows
// CHECK-NOT:  torch.

// RUN: not nmc opt -p raise-torch-to-nm %s 2>&1 | filecheck %s

// An nn.Conv3d (cut from `nmc compile --dump-ir` of a bare nn.Conv3d, whose location is
// torch's own conv.py: the model has no source line of its own): torch-mlir decomposes it
// to aten.convolution, which nmc does not model; the error says why it is refused, with
// the location.

builtin.module {
  func.func @main(%arg0: !torch.vtensor<[8,3,2,2,2],f32> {nm.state_key = "weight"}, %arg1: !torch.vtensor<[8],f32> {nm.state_key = "bias"}, %arg2: !torch.vtensor<[1,3,4,4,4],f32>) -> !torch.vtensor<[1,8,2,2,2],f32> attributes {nm.input_names = ["input"], nm.output_names = ["output"]} {
    %0 = "torch.constant.bool"() <{value = false}> : () -> !torch.bool
    %1 = "torch.constant.int"() <{value = 1 : i64}> : () -> !torch.int
    %2 = "torch.constant.int"() <{value = 0 : i64}> : () -> !torch.int
    %3 = "torch.constant.int"() <{value = 2 : i64}> : () -> !torch.int
    %4 = "torch.prim.ListConstruct"(%3, %3, %3) : (!torch.int, !torch.int, !torch.int) -> !torch.list<int>
    %5 = "torch.prim.ListConstruct"(%2, %2, %2) : (!torch.int, !torch.int, !torch.int) -> !torch.list<int>
    %6 = "torch.prim.ListConstruct"(%1, %1, %1) : (!torch.int, !torch.int, !torch.int) -> !torch.list<int>
    %7 = "torch.prim.ListConstruct"() : () -> !torch.list<int>
    %8 = "torch.aten.convolution"(%arg2, %arg0, %arg1, %4, %5, %6, %0, %7, %1) : (!torch.vtensor<[1,3,4,4,4],f32>, !torch.vtensor<[8,3,2,2,2],f32>, !torch.vtensor<[8],f32>, !torch.list<int>, !torch.list<int>, !torch.list<int>, !torch.bool, !torch.list<int>, !torch.int) -> !torch.vtensor<[1,8,2,2,2],f32> loc("/usr/lib/python3/site-packages/torch/nn/modules/conv.py":735:0)
    func.return %8 : !torch.vtensor<[1,8,2,2,2],f32>
  }
}

// CHECK: nmc: error: unsupported operation(s): torch.aten.convolution at <top level> (conv.py:735): only 2-D convolutions are supported

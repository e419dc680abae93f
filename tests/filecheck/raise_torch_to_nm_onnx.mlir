// RUN: nmc opt -p raise-torch-to-nm %s | filecheck %s

// An ONNX model as the ONNX frontend imports it (torch-mlir's importer and its
// convert-torch-onnx-to-torch; cut from `nmc compile blk.onnx --dump-ir` of a LayerNorm and
// a timm Attention exported with torch.onnx.export): LayerNormalization is
// aten.native_layer_norm, the linears are matmul by a transposed weight + add, timm's head
// split permute(2, 0, 3, 1, 4) is three transposes, unbind is slice + squeeze, k^T is
// reshape/transpose/reshape and the scale sqrt(s) multiplies both q and k^T. The
// decomposed matchers raise it to the same nm ops as the torch.export form; layer names
// come from the module scopes in the locations.

"builtin.module"() ({
  "func.func"() <{function_type = (!torch.vtensor<[1,3,8],f32>, !torch.vtensor<[8],f32>, !torch.vtensor<[8],f32>, !torch.vtensor<[24],f32>, !torch.vtensor<[8],f32>, !torch.vtensor<[24,8],f32>, !torch.vtensor<[8,8],f32>) -> !torch.vtensor<[1,3,8],f32>, sym_name = "main", arg_attrs = [{}, {nm.state_key = "norm.weight"}, {nm.state_key = "norm.bias"}, {nm.state_key = "attn.qkv.bias"}, {nm.state_key = "attn.proj.bias"}, {nm.state_key = "attn.qkv.weight"}, {nm.state_key = "attn.proj.weight"}]}> ({
  ^bb0(%arg0: !torch.vtensor<[1,3,8],f32> loc("x"), %arg1: !torch.vtensor<[8],f32> loc("norm.weight"), %arg2: !torch.vtensor<[8],f32> loc("norm.bias"), %arg3: !torch.vtensor<[24],f32> loc("attn.qkv.bias"), %arg4: !torch.vtensor<[8],f32> loc("attn.proj.bias"), %arg5: !torch.vtensor<[24,8],f32> loc("attn.qkv.weight"), %arg6: !torch.vtensor<[8,8],f32> loc("attn.proj.weight")):
    %0 = "torch.constant.int"() <{value = 4 : i64}> : () -> !torch.int loc(unknown)
    %1 = "torch.constant.int"() <{value = 2 : i64}> : () -> !torch.int loc(unknown)
    %2 = "torch.constant.int"() <{value = 3 : i64}> : () -> !torch.int loc(unknown)
    %3 = "torch.constant.int"() <{value = 1 : i64}> : () -> !torch.int loc(unknown)
    %4 = "torch.constant.int"() <{value = 0 : i64}> : () -> !torch.int loc(unknown)
    %5 = "torch.vtensor.literal"() <{value = dense<0.707106769> : tensor<1xf32>}> : () -> !torch.vtensor<[1],f32> loc("val_47")
    %6 = "torch.constant.none"() : () -> !torch.none loc(unknown)
    %7 = "torch.constant.float"() <{value = 9.9999997473787516e-06 : f64}> : () -> !torch.float loc("ONNX LayerNormalization node 'node_layer_norm'"("norm":0:0))
    %8 = "torch.constant.int"() <{value = 8 : i64}> : () -> !torch.int loc(unknown)
    %9 = "torch.prim.ListConstruct"(%8) : (!torch.int) -> !torch.list<int> loc("ONNX LayerNormalization node 'node_layer_norm'"("norm":0:0))
    %10, %11, %12 = "torch.aten.native_layer_norm"(%arg0, %9, %arg1, %arg2, %7) : (!torch.vtensor<[1,3,8],f32>, !torch.list<int>, !torch.vtensor<[8],f32>, !torch.vtensor<[8],f32>, !torch.float) -> (!torch.vtensor<[1,3,8],f32>, !torch.vtensor<[1,3,1],f32>, !torch.vtensor<[1,3,1],f32>) loc("ONNX LayerNormalization node 'node_layer_norm'"("norm":0:0))
    %13 = "torch.aten.transpose.int"(%arg5, %4, %3) : (!torch.vtensor<[24,8],f32>, !torch.int, !torch.int) -> !torch.vtensor<[8,24],f32> loc("ONNX Transpose node 'node_MatMul_1__weight_transpose'"("attn.qkv":0:0))
    %14 = "torch.aten.matmul"(%10, %13) : (!torch.vtensor<[1,3,8],f32>, !torch.vtensor<[8,24],f32>) -> !torch.vtensor<[1,3,24],f32> loc("ONNX MatMul node 'node_MatMul_1'"("attn.qkv":0:0))
    %15 = "torch.aten.add.Tensor"(%14, %arg3, %3) : (!torch.vtensor<[1,3,24],f32>, !torch.vtensor<[24],f32>, !torch.int) -> !torch.vtensor<[1,3,24],f32> loc("ONNX Add node 'node_linear'"("attn.qkv":0:0))
    %16 = "torch.prim.ListConstruct"(%3, %2, %2, %1, %0) : (!torch.int, !torch.int, !torch.int, !torch.int, !torch.int) -> !torch.list<int> loc("ONNX Reshape node 'node_view'"("attn":0:0))
    %17 = "torch.aten.reshape"(%15, %16) : (!torch.vtensor<[1,3,24],f32>, !torch.list<int>) -> !torch.vtensor<[1,3,3,2,4],f32> loc("ONNX Reshape node 'node_view'"("attn":0:0))
    %18 = "torch.aten.transpose.int"(%17, %4, %1) : (!torch.vtensor<[1,3,3,2,4],f32>, !torch.int, !torch.int) -> !torch.vtensor<[3,3,1,2,4],f32> loc("ONNX Transpose node 'node_permute'"("attn":0:0))
    %19 = "torch.aten.transpose.int"(%18, %3, %1) : (!torch.vtensor<[3,3,1,2,4],f32>, !torch.int, !torch.int) -> !torch.vtensor<[3,1,3,2,4],f32> loc("ONNX Transpose node 'node_permute'"("attn":0:0))
    %20 = "torch.aten.transpose.int"(%19, %1, %2) : (!torch.vtensor<[3,1,3,2,4],f32>, !torch.int, !torch.int) -> !torch.vtensor<[3,1,2,3,4],f32> loc("ONNX Transpose node 'node_permute'"("attn":0:0))
    %21 = "torch.aten.slice.Tensor"(%20, %4, %4, %3, %3) : (!torch.vtensor<[3,1,2,3,4],f32>, !torch.int, !torch.int, !torch.int, !torch.int) -> !torch.vtensor<[1,1,2,3,4],f32> loc("ONNX Slice node 'node_Slice_12'"("attn":0:0))
    %22 = "torch.prim.ListConstruct"(%3) : (!torch.int) -> !torch.list<int> loc("ONNX Squeeze node 'node_unbind__0'"("attn":0:0))
    %23 = "torch.prims.squeeze"(%21, %22) : (!torch.vtensor<[1,1,2,3,4],f32>, !torch.list<int>) -> !torch.vtensor<[1,2,3,4],f32> loc("ONNX Squeeze node 'node_unbind__0'"("attn":0:0))
    %24 = "torch.aten.slice.Tensor"(%20, %4, %3, %1, %3) : (!torch.vtensor<[3,1,2,3,4],f32>, !torch.int, !torch.int, !torch.int, !torch.int) -> !torch.vtensor<[1,1,2,3,4],f32> loc("ONNX Slice node 'node_Slice_17'"("attn":0:0))
    %25 = "torch.prim.ListConstruct"(%3) : (!torch.int) -> !torch.list<int> loc("ONNX Squeeze node 'node_unbind__1'"("attn":0:0))
    %26 = "torch.prims.squeeze"(%24, %25) : (!torch.vtensor<[1,1,2,3,4],f32>, !torch.list<int>) -> !torch.vtensor<[1,2,3,4],f32> loc("ONNX Squeeze node 'node_unbind__1'"("attn":0:0))
    %27 = "torch.aten.slice.Tensor"(%20, %4, %1, %2, %3) : (!torch.vtensor<[3,1,2,3,4],f32>, !torch.int, !torch.int, !torch.int, !torch.int) -> !torch.vtensor<[1,1,2,3,4],f32> loc("ONNX Slice node 'node_Slice_21'"("attn":0:0))
    %28 = "torch.prim.ListConstruct"(%3) : (!torch.int) -> !torch.list<int> loc("ONNX Squeeze node 'node_unbind__2'"("attn":0:0))
    %29 = "torch.prims.squeeze"(%27, %28) : (!torch.vtensor<[1,1,2,3,4],f32>, !torch.list<int>) -> !torch.vtensor<[1,2,3,4],f32> loc("ONNX Squeeze node 'node_unbind__2'"("attn":0:0))
    %30 = "torch.prim.ListConstruct"(%1, %2, %0) : (!torch.int, !torch.int, !torch.int) -> !torch.list<int> loc("ONNX Reshape node 'node_Reshape_41'"("attn":0:0))
    %31 = "torch.aten.reshape"(%26, %30) : (!torch.vtensor<[1,2,3,4],f32>, !torch.list<int>) -> !torch.vtensor<[2,3,4],f32> loc("ONNX Reshape node 'node_Reshape_41'"("attn":0:0))
    %32 = "torch.aten.transpose.int"(%31, %3, %1) : (!torch.vtensor<[2,3,4],f32>, !torch.int, !torch.int) -> !torch.vtensor<[2,4,3],f32> loc("ONNX Transpose node 'node_Transpose_42'"("attn":0:0))
    %33 = "torch.prim.ListConstruct"(%3, %1, %0, %2) : (!torch.int, !torch.int, !torch.int, !torch.int) -> !torch.list<int> loc("ONNX Reshape node 'node_Reshape_44'"("attn":0:0))
    %34 = "torch.aten.reshape"(%32, %33) : (!torch.vtensor<[2,4,3],f32>, !torch.list<int>) -> !torch.vtensor<[1,2,4,3],f32> loc("ONNX Reshape node 'node_Reshape_44'"("attn":0:0))
    %35 = "torch.aten.mul.Tensor"(%23, %5) : (!torch.vtensor<[1,2,3,4],f32>, !torch.vtensor<[1],f32>) -> !torch.vtensor<[1,2,3,4],f32> loc("ONNX Mul node 'node_Mul_46'"("attn":0:0))
    %36 = "torch.aten.mul.Tensor"(%34, %5) : (!torch.vtensor<[1,2,4,3],f32>, !torch.vtensor<[1],f32>) -> !torch.vtensor<[1,2,4,3],f32> loc("ONNX Mul node 'node_Mul_49'"("attn":0:0))
    %37 = "torch.aten.matmul"(%35, %36) : (!torch.vtensor<[1,2,3,4],f32>, !torch.vtensor<[1,2,4,3],f32>) -> !torch.vtensor<[1,2,3,3],f32> loc("ONNX MatMul node 'node_MatMul_50'"("attn":0:0))
    %38 = "torch.aten.softmax.int"(%37, %2, %6) : (!torch.vtensor<[1,2,3,3],f32>, !torch.int, !torch.none) -> !torch.vtensor<[1,2,3,3],f32> loc("ONNX Softmax node 'node_Softmax_51'"("attn":0:0))
    %39 = "torch.aten.matmul"(%38, %29) : (!torch.vtensor<[1,2,3,3],f32>, !torch.vtensor<[1,2,3,4],f32>) -> !torch.vtensor<[1,2,3,4],f32> loc("ONNX MatMul node 'node_scaled_dot_product_attention'"("attn":0:0))
    %40 = "torch.aten.transpose.int"(%39, %3, %1) : (!torch.vtensor<[1,2,3,4],f32>, !torch.int, !torch.int) -> !torch.vtensor<[1,3,2,4],f32> loc("ONNX Transpose node 'node_transpose'"("attn":0:0))
    %41 = "torch.prim.ListConstruct"(%3, %2, %8) : (!torch.int, !torch.int, !torch.int) -> !torch.list<int> loc("ONNX Reshape node 'node_view_1'"("attn":0:0))
    %42 = "torch.aten.reshape"(%40, %41) : (!torch.vtensor<[1,3,2,4],f32>, !torch.list<int>) -> !torch.vtensor<[1,3,8],f32> loc("ONNX Reshape node 'node_view_1'"("attn":0:0))
    %43 = "torch.aten.transpose.int"(%arg6, %4, %3) : (!torch.vtensor<[8,8],f32>, !torch.int, !torch.int) -> !torch.vtensor<[8,8],f32> loc("ONNX Transpose node 'node_MatMul_58__weight_transpose'"("attn.proj":0:0))
    %44 = "torch.aten.matmul"(%42, %43) : (!torch.vtensor<[1,3,8],f32>, !torch.vtensor<[8,8],f32>) -> !torch.vtensor<[1,3,8],f32> loc("ONNX MatMul node 'node_MatMul_58'"("attn.proj":0:0))
    %45 = "torch.aten.add.Tensor"(%44, %arg4, %3) : (!torch.vtensor<[1,3,8],f32>, !torch.vtensor<[8],f32>, !torch.int) -> !torch.vtensor<[1,3,8],f32> loc("ONNX Add node 'node_linear_1'"("attn.proj":0:0))
    "func.return"(%45) : (!torch.vtensor<[1,3,8],f32>) -> () loc(unknown)
  }) {torch.onnx_meta.ir_version = 10 : si64, torch.onnx_meta.opset_version = 20 : si64, torch.onnx_meta.producer_name = "pytorch", torch.onnx_meta.producer_version = "2.13.0+cpu", nm.input_names = ["x"], nm.output_names = ["linear_1"]} : () -> () loc("graph:main")
}) : () -> () loc(unknown)

// CHECK:      func.func @main(%x: tensor<1x3x8xf32>{{.*}}) -> tensor<1x3x8xf32>
// CHECK:      %norm = nm.layer_norm "norm" %x, %norm.weight, %norm.bias eps 9.9999997473787516e-06
// CHECK-NEXT: %attn.qkv = nm.linear "attn.qkv" %norm, %attn.qkv.weight, %attn.qkv.bias : (tensor<1x3x8xf32>, tensor<24x8xf32>, tensor<24xf32>) -> tensor<1x3x24xf32>
// CHECK-NEXT: %attn = nm.attention "attn" %attn.qkv heads 2 scale 5.000000e-01 : (tensor<1x3x24xf32>) -> tensor<1x3x8xf32>
// CHECK-NEXT: %attn.proj = nm.linear "attn.proj" %attn, %attn.proj.weight, %attn.proj.bias
// CHECK-NEXT: func.return %attn.proj : tensor<1x3x8xf32>
// CHECK-NOT:  torch.

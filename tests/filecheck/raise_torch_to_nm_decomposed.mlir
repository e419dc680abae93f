// RUN: nmc opt -p raise-torch-to-nm %s | filecheck %s

// A LayerNorm, a linear and a GELU written out, as torch.export's default decomposition
// table and torch-mlir leave them (`nmc compile --dump-ir` of a model with nn.LayerNorm,
// nn.Linear and 0.5 * h * (1 + erf(h / sqrt(2))), after ep.run_decompositions()): the
// LayerNorm is mean / sub / mul / mean / add.Scalar / rsqrt / mul / mul / add, the linear
// view / mm(x, permute(W)) / add(b * 1) / view, the GELU an erf expression. The decomposed
// matchers raise them to nm.layer_norm (its eps from the add.Scalar), nm.linear (the
// views around it become free nm.reshapes) and nm.gelu (recognised by what it computes).

"builtin.module"() ({
  "func.func"() <{function_type = (!torch.vtensor<[8],f32>, !torch.vtensor<[8],f32>, !torch.vtensor<[16,8],f32>, !torch.vtensor<[16],f32>, !torch.vtensor<[1,3,8],f32>) -> !torch.vtensor<[1,3,16],f32>, sym_name = "main", arg_attrs = [{nm.state_key = "norm.weight"}, {nm.state_key = "norm.bias"}, {nm.state_key = "fc1.weight"}, {nm.state_key = "fc1.bias"}, {}]}> ({
  ^bb0(%arg0: !torch.vtensor<[8],f32> loc(callsite("norm":0:0 at "blk.py":9:0)), %arg1: !torch.vtensor<[8],f32> loc(callsite("norm":0:0 at "blk.py":9:0)), %arg2: !torch.vtensor<[16,8],f32> loc(callsite("norm":0:0 at "blk.py":9:0)), %arg3: !torch.vtensor<[16],f32> loc(callsite("norm":0:0 at "blk.py":9:0)), %arg4: !torch.vtensor<[1,3,8],f32> loc(callsite("norm":0:0 at "blk.py":9:0))):
    %0 = "torch.constant.none"() : () -> !torch.none loc(callsite("norm":0:0 at "blk.py":9:0))
    %1 = "torch.constant.bool"() <{value = true}> : () -> !torch.bool loc(callsite("norm":0:0 at "blk.py":9:0))
    %2 = "torch.constant.float"() <{value = 1.4142135623730951 : f64}> : () -> !torch.float loc("blk.py":10:0)
    %3 = "torch.constant.float"() <{value = 5.000000e-01 : f64}> : () -> !torch.float loc("blk.py":10:0)
    %4 = "torch.constant.int"() <{value = 16 : i64}> : () -> !torch.int loc(callsite("fc1":0:0 at "blk.py":9:0))
    %5 = "torch.constant.int"() <{value = 0 : i64}> : () -> !torch.int loc(callsite("fc1":0:0 at "blk.py":9:0))
    %6 = "torch.constant.int"() <{value = 1 : i64}> : () -> !torch.int loc(unknown)
    %7 = "torch.constant.int"() <{value = 3 : i64}> : () -> !torch.int loc(unknown)
    %8 = "torch.constant.float"() <{value = 1.000000e-05 : f64}> : () -> !torch.float loc(callsite("norm":0:0 at "blk.py":9:0))
    %9 = "torch.constant.int"() <{value = 8 : i64}> : () -> !torch.int loc(unknown)
    %10 = "torch.constant.int"() <{value = 2 : i64}> : () -> !torch.int loc(callsite("norm":0:0 at "blk.py":9:0))
    %11 = "torch.prim.ListConstruct"(%10) : (!torch.int) -> !torch.list<int> loc(callsite("norm":0:0 at "blk.py":9:0))
    %12 = "torch.aten.mean.dim"(%arg4, %11, %1, %0) : (!torch.vtensor<[1,3,8],f32>, !torch.list<int>, !torch.bool, !torch.none) -> !torch.vtensor<[1,3,1],f32> loc(callsite("norm":0:0 at "blk.py":9:0))
    %13 = "torch.prim.ListConstruct"(%6, %7, %9) : (!torch.int, !torch.int, !torch.int) -> !torch.list<int> loc(callsite("norm":0:0 at "blk.py":9:0))
    %14 = "torch.aten.broadcast_to"(%12, %13) : (!torch.vtensor<[1,3,1],f32>, !torch.list<int>) -> !torch.vtensor<[1,3,8],f32> loc(callsite("norm":0:0 at "blk.py":9:0))
    %15 = "torch.aten.sub.Tensor"(%arg4, %14, %6) : (!torch.vtensor<[1,3,8],f32>, !torch.vtensor<[1,3,8],f32>, !torch.int) -> !torch.vtensor<[1,3,8],f32> loc(callsite("norm":0:0 at "blk.py":9:0))
    %16 = "torch.aten.mul.Tensor"(%15, %15) : (!torch.vtensor<[1,3,8],f32>, !torch.vtensor<[1,3,8],f32>) -> !torch.vtensor<[1,3,8],f32> loc(callsite("norm":0:0 at "blk.py":9:0))
    %17 = "torch.aten.mean.dim"(%16, %11, %1, %0) : (!torch.vtensor<[1,3,8],f32>, !torch.list<int>, !torch.bool, !torch.none) -> !torch.vtensor<[1,3,1],f32> loc(callsite("norm":0:0 at "blk.py":9:0))
    %18 = "torch.aten.add.Scalar"(%17, %8, %6) : (!torch.vtensor<[1,3,1],f32>, !torch.float, !torch.int) -> !torch.vtensor<[1,3,1],f32> loc(callsite("norm":0:0 at "blk.py":9:0))
    %19 = "torch.aten.rsqrt"(%18) : (!torch.vtensor<[1,3,1],f32>) -> !torch.vtensor<[1,3,1],f32> loc(callsite("norm":0:0 at "blk.py":9:0))
    %20 = "torch.prim.ListConstruct"(%6, %7, %9) : (!torch.int, !torch.int, !torch.int) -> !torch.list<int> loc(callsite("norm":0:0 at "blk.py":9:0))
    %21 = "torch.aten.broadcast_to"(%19, %20) : (!torch.vtensor<[1,3,1],f32>, !torch.list<int>) -> !torch.vtensor<[1,3,8],f32> loc(callsite("norm":0:0 at "blk.py":9:0))
    %22 = "torch.aten.mul.Tensor"(%15, %21) : (!torch.vtensor<[1,3,8],f32>, !torch.vtensor<[1,3,8],f32>) -> !torch.vtensor<[1,3,8],f32> loc(callsite("norm":0:0 at "blk.py":9:0))
    %23 = "torch.aten.mul.Tensor"(%22, %arg0) : (!torch.vtensor<[1,3,8],f32>, !torch.vtensor<[8],f32>) -> !torch.vtensor<[1,3,8],f32> loc(callsite("norm":0:0 at "blk.py":9:0))
    %24 = "torch.aten.add.Tensor"(%23, %arg1, %6) : (!torch.vtensor<[1,3,8],f32>, !torch.vtensor<[8],f32>, !torch.int) -> !torch.vtensor<[1,3,8],f32> loc(callsite("norm":0:0 at "blk.py":9:0))
    %25 = "torch.prim.ListConstruct"(%7, %9) : (!torch.int, !torch.int) -> !torch.list<int> loc(callsite("fc1":0:0 at "blk.py":9:0))
    %26 = "torch.aten.view"(%24, %25) : (!torch.vtensor<[1,3,8],f32>, !torch.list<int>) -> !torch.vtensor<[3,8],f32> loc(callsite("fc1":0:0 at "blk.py":9:0))
    %27 = "torch.prim.ListConstruct"(%6, %5) : (!torch.int, !torch.int) -> !torch.list<int> loc(callsite("fc1":0:0 at "blk.py":9:0))
    %28 = "torch.aten.permute"(%arg2, %27) : (!torch.vtensor<[16,8],f32>, !torch.list<int>) -> !torch.vtensor<[8,16],f32> loc(callsite("fc1":0:0 at "blk.py":9:0))
    %29 = "torch.aten.mm"(%26, %28) : (!torch.vtensor<[3,8],f32>, !torch.vtensor<[8,16],f32>) -> !torch.vtensor<[3,16],f32> loc(callsite("fc1":0:0 at "blk.py":9:0))
    %30 = "torch.aten.mul.Scalar"(%arg3, %6) : (!torch.vtensor<[16],f32>, !torch.int) -> !torch.vtensor<[16],f32> loc(callsite("fc1":0:0 at "blk.py":9:0))
    %31 = "torch.aten.add.Tensor"(%30, %29, %6) : (!torch.vtensor<[16],f32>, !torch.vtensor<[3,16],f32>, !torch.int) -> !torch.vtensor<[3,16],f32> loc(callsite("fc1":0:0 at "blk.py":9:0))
    %32 = "torch.prim.ListConstruct"(%6, %7, %4) : (!torch.int, !torch.int, !torch.int) -> !torch.list<int> loc(callsite("fc1":0:0 at "blk.py":9:0))
    %33 = "torch.aten.view"(%31, %32) : (!torch.vtensor<[3,16],f32>, !torch.list<int>) -> !torch.vtensor<[1,3,16],f32> loc(callsite("fc1":0:0 at "blk.py":9:0))
    %34 = "torch.aten.mul.Scalar"(%33, %3) : (!torch.vtensor<[1,3,16],f32>, !torch.float) -> !torch.vtensor<[1,3,16],f32> loc("blk.py":10:0)
    %35 = "torch.aten.div.Scalar"(%33, %2) : (!torch.vtensor<[1,3,16],f32>, !torch.float) -> !torch.vtensor<[1,3,16],f32> loc("blk.py":10:0)
    %36 = "torch.aten.erf"(%35) : (!torch.vtensor<[1,3,16],f32>) -> !torch.vtensor<[1,3,16],f32> loc("blk.py":10:0)
    %37 = "torch.aten.add.Scalar"(%36, %6, %6) : (!torch.vtensor<[1,3,16],f32>, !torch.int, !torch.int) -> !torch.vtensor<[1,3,16],f32> loc("blk.py":10:0)
    %38 = "torch.aten.mul.Tensor"(%34, %37) : (!torch.vtensor<[1,3,16],f32>, !torch.vtensor<[1,3,16],f32>) -> !torch.vtensor<[1,3,16],f32> loc("blk.py":10:0)
    "func.return"(%38) : (!torch.vtensor<[1,3,16],f32>) -> () loc("blk.py":10:0)
  }) {nm.input_names = ["x"], nm.output_names = ["output"]} : () -> () loc(callsite("norm":0:0 at "blk.py":9:0))
}) : () -> () loc(unknown)

// CHECK:      func.func @main(%x: tensor<1x3x8xf32>{{.*}}) -> tensor<1x3x16xf32>
// CHECK:      %norm = nm.layer_norm "norm" %x, %norm.weight, %norm.bias eps 1.000000e-05 : (tensor<1x3x8xf32>, tensor<8xf32>, tensor<8xf32>) -> tensor<1x3x8xf32>
// CHECK-NEXT: %[[X:.*]] = nm.reshape %norm : tensor<1x3x8xf32> -> tensor<3x8xf32>
// CHECK-NEXT: %fc1 = nm.linear "fc1" %[[X]], %fc1.weight, %fc1.bias : (tensor<3x8xf32>, tensor<16x8xf32>, tensor<16xf32>) -> tensor<3x16xf32>
// CHECK-NEXT: %[[H:.*]] = nm.reshape %fc1 : tensor<3x16xf32> -> tensor<1x3x16xf32>
// CHECK-NEXT: %gelu = nm.gelu "gelu" %[[H]] approximate "none" : (tensor<1x3x16xf32>) -> tensor<1x3x16xf32>
// CHECK-NEXT: func.return %gelu : tensor<1x3x16xf32>
// CHECK-NOT:  torch.

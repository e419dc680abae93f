// RUN: nmc opt -p raise-torch-to-nm %s | filecheck %s
// RUN: nmc opt -p raise-torch-to-nm,schedule-tiles,plan-memory,lower-nm-to-isa %s | filecheck %s --check-prefix=ISA

// relu(x) * 0.5 / 2.0 then softmax over the last dim (cut from `nmc compile --dump-ir` of
// such a model): each op raises one to one; a multiplication by a number and a division by
// a power of two are nm.scale (x / 2.0 as x * 0.5, equal bit for bit); each lowers to one
// vector instruction per row block (vun relu, vun scale with its f32 immediate, vrow
// softmax with input scale 1).

builtin.module {
  func.func @main(%arg0: !torch.vtensor<[1,3,4],f32>) -> !torch.vtensor<[1,3,4],f32> attributes {nm.input_names = ["x"], nm.output_names = ["output"]} {
    %0 = "torch.constant.none"() : () -> !torch.none
    %1 = "torch.constant.int"() <{value = -1 : i64}> : () -> !torch.int
    %2 = "torch.constant.float"() <{value = 2.000000e+00 : f64}> : () -> !torch.float
    %3 = "torch.constant.float"() <{value = 5.000000e-01 : f64}> : () -> !torch.float
    %4 = "torch.aten.relu"(%arg0) : (!torch.vtensor<[1,3,4],f32>) -> !torch.vtensor<[1,3,4],f32>
    %5 = "torch.aten.mul.Scalar"(%4, %3) : (!torch.vtensor<[1,3,4],f32>, !torch.float) -> !torch.vtensor<[1,3,4],f32>
    %6 = "torch.aten.div.Scalar"(%5, %2) : (!torch.vtensor<[1,3,4],f32>, !torch.float) -> !torch.vtensor<[1,3,4],f32>
    %7 = "torch.aten.softmax.int"(%6, %1, %0) : (!torch.vtensor<[1,3,4],f32>, !torch.int, !torch.none) -> !torch.vtensor<[1,3,4],f32>
    func.return %7 : !torch.vtensor<[1,3,4],f32>
  }
}

// CHECK:      %relu = nm.relu "relu" %x : (tensor<1x3x4xf32>) -> tensor<1x3x4xf32>
// CHECK-NEXT: %scale = nm.scale "scale" %relu by 5.000000e-01
// CHECK-NEXT: %scale_1 = nm.scale "scale_1" %scale by 5.000000e-01
// CHECK-NEXT: %softmax = nm.softmax "softmax" %scale_1
// CHECK-NEXT: func.return %softmax
// CHECK-NOT:  torch.

// ISA:     isa.vun {{.*}} fn=relu {{.*}} rows=3 cols=4 {{.*}} layer "relu"
// ISA:     isa.vun {{.*}} fn=scale {{.*}} rows=3 cols=4 imm=0.5 layer "scale"
// ISA:     isa.vun {{.*}} fn=scale {{.*}} rows=3 cols=4 imm=0.5 layer "scale_1"
// ISA:     isa.vrow {{.*}} fn=softmax {{.*}} rows=3 cols=4 imm=1. layer "softmax"

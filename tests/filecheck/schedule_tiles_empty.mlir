// RUN: not nmc opt -p 'schedule-tiles{target=sta_ref}' %s 2>&1 | filecheck %s
// RUN: sed 's/1x0x8/1x4x8/g; s/1x0x0/1x4x0/g' %s | not nmc opt -p 'schedule-tiles{target=sta_ref}' 2>&1 | filecheck %s --check-prefix=LAYER

// schedule-tiles refuses an empty tensor (a dimension of 0, e.g. a model exported with
// zero tokens) before costing a tiling for it (a kernel would divide by its extent),
// naming the input, else the first layer that holds one (here a linear with 0 outputs).

builtin.module {
  func.func @main(%x: tensor<1x0x8xf32>) -> tensor<1x0x0xf32> attributes {nm.input_names = ["x"], nm.output_names = ["output"]} {
    %w = nm.param "fc.weight" : tensor<0x8xf32>
    %fc = nm.linear "fc" %x, %w : (tensor<1x0x8xf32>, tensor<0x8xf32>) -> tensor<1x0x0xf32>
    func.return %fc : tensor<1x0x0xf32>
  }
}

// CHECK: nmc: error: input 'x' has shape [1, 0, 8]: an empty tensor (a dimension of 0); nmc compiles tensors with at least one element: export the model with a non-empty input
// LAYER: nmc: error: layer 'fc': tensor of shape [0, 8] is empty (a dimension of 0); nmc compiles tensors with at least one element

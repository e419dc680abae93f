// RUN: not nmc opt -p plan-memory %s 2>&1 | filecheck %s

// plan-memory refuses a program that needs more DRAM than the module's target has, at
// compile time (the emulator would refuse it only when run): sta_ref has 2^28 words, and
// this add's input and output take 2^28 words each.

builtin.module attributes {nm.target = #nm.target<"sta_ref">} {
  func.func @main(%x: tensor<16384x16384xf32>) -> tensor<16384x16384xf32> attributes {nm.input_names = ["x"], nm.output_names = ["output"]} {
    %add = nm.add "add" %x, %x {nm.tile = #nm.tile<rows = 4>} : (tensor<16384x16384xf32>, tensor<16384x16384xf32>) -> tensor<16384x16384xf32>
    func.return %add : tensor<16384x16384xf32>
  }
}

// CHECK: nmc: error: the program needs 536870912 DRAM words (2048.00 MiB: weights, inputs, outputs and intermediates) but target 'sta_ref' has 268435456 (1024.00 MiB)

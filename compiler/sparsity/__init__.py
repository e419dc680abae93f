"""N:M sparsity choice (issue 5): parsing `--sparsity`, the cost and sensitivity of each
(layer, pattern) choice, and the ELSA-style search. The pass that applies a choice to the
IR is `nmc.compiler.transforms.assign_sparsity`."""

"""Sparsity choices and their searches: N:M sparsity (issue 5: parsing `--sparsity`, the
cost and sensitivity of each (layer, pattern) choice, the ELSA-style search) and SparseViT
window pruning (the Swin-block rewrite, its latency model and search). The passes that
apply a choice to the IR are `nmc.compiler.transforms.assign_sparsity` and
`nmc.compiler.transforms.window_prune`; they import this package, never the reverse."""

"""Sparsity training on data (`nmc sparsify`, docs/SPARSIFY.md): ELSA's N:M supernet and
SparseViT's window adaptation, in resumable runs. It sits above the compiler, whose nm IR,
cost models and searches it reuses, and below the command line (nmc.cli.sparsify)."""

"""Ops nmc knows and refuses, with the reason a user is told.

The torch dialect models only the ops nmc converts; every other op is an `UnregisteredOp`
reported as unsupported by name. For the ops a ViT user is likely to meet, the report also
says why, from `REFUSALS` (op name -> reason): raise-torch-to-nm for the ops it sees, and
the frontend's torch-mlir diagnostics (`frontend/diagnostics.py`) for the ops torch-mlir
cannot import at all, which never reach nmc's own dialect. docs/SUPPORTED_OPS.md lists
them.
"""

from __future__ import annotations

REFUSALS: dict[str, str] = {
    "torch.aten.convolution": (
        "only 2-D convolutions are supported (nn.Conv2d as a patch embedding: stride = "
        "kernel, no padding); Conv1d and Conv3d are not"
    ),
    "torch.aten.constant_pad_nd": (
        "only padding of leading dims by non-negative widths is supported (a pad of the "
        "last, channel dim, or a negative pad that crops, is not)"
    ),
    "torch.aten.div.Tensor": (
        "the vector unit has no division; only division by a constant power of two (an "
        "exact multiplication) is supported"
    ),
    # torch-mlir has no lowering for the eval-mode form; the frontend folds it where it can
    "torch.aten._native_batch_norm_legit_no_training": (
        "BatchNorm is supported only in eval mode directly after a Conv2d whose output "
        "nothing else reads (folded into the convolution); this one follows something else"
    ),
    "torch.aten._native_batch_norm_legit_functional": (
        "BatchNorm in training mode (batch statistics): call model.eval() before "
        "torch.export"
    ),
}

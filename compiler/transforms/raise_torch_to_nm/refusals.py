"""Ops nmc knows and refuses, with the reason a user is told.

The torch dialect models only the ops nmc converts; every other op is an `UnregisteredOp`
reported as unsupported by name. For the ops a ViT user is likely to meet, the report also
says why, from `REFUSALS` (op name -> reason). docs/SUPPORTED_OPS.md lists them.
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
}

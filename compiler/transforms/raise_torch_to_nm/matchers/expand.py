"""The class token's expand to the batch.

    expand / broadcast_to([1, ...] -> [B, ...])   -> nm.concat of B copies along axis 0
                                                     (layer kind "expand")

An expand to its own shape (batch 1) is a no-op (see `noops.py`).
"""

from __future__ import annotations

from nmc.compiler.dialects import nm
from nmc.compiler.dialects import torch as tt
from nmc.compiler.transforms.raise_torch_to_nm.framework import Group, Matcher, anchored_by
from nmc.compiler.transforms.raise_torch_to_nm.reading import Reject, op_name, shape, verified


def match_expand(ex: tt.AtenExpandOp | tt.AtenBroadcastToOp) -> Group:
    verified(ex)
    x, y = shape(ex.input), shape(ex.result)
    if not (len(x) == len(y) >= 2 and x[0] == 1 and x[1:] == y[1:]):
        raise Reject(
            f"{op_name(ex).removeprefix('torch.aten.')} is supported only along a leading "
            f"dim of size 1 (cls_token.expand(B, -1, -1)), got {list(x)} -> {list(y)}"
        )
    x_value = ex.input
    return Group(
        "expand", (ex,), ex, lambda v, layer: nm.ConcatOp([v(x_value)] * y[0], 0, layer), ex
    )


MATCHER = Matcher("expand", anchored_by(*tt.EXPAND_OPS), match_expand)

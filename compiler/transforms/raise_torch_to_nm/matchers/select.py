"""Class-token pooling: x[:, i] of x [B, N, D].

    squeeze(slice(x, 1, i, i + 1), 1), or select(x, 1, i)   -> nm.select
"""

from __future__ import annotations

from xdsl.ir import Operation

from nmc.compiler.dialects import nm
from nmc.compiler.dialects import torch as tt
from nmc.compiler.transforms.raise_torch_to_nm.framework import Group, Matcher
from nmc.compiler.transforms.raise_torch_to_nm.reading import (
    Reject, const, int_const, norm_dim, owner, shape, verified,
)

_USAGE = "only x[:, i] of a [B, N, D] tensor (class-token pooling) is supported"


def anchors_select(op: Operation) -> bool:
    """A select.int of a rank-3 tensor or a squeeze.dim of a slice.Tensor (x[:, i])."""
    if isinstance(op, tt.AtenSelectIntOp):
        t = op.input.type
        return isinstance(t, tt.ValueTensorType) and len(t.get_shape() or ()) == 3
    return isinstance(op, tt.AtenSqueezeDimOp) and isinstance(
        owner(op.input), tt.AtenSliceTensorOp
    )


def _sliced_index(sl: tt.AtenSliceTensorOp) -> int:
    """i of squeeze(slice(x, 1, i, i + 1), 1)."""
    n = shape(sl.input)[1]
    start = const(sl.start, "start")
    start = 0 if start is None else start
    if not isinstance(start, int) or isinstance(start, bool):
        raise Reject(f"slice start must be an integer constant, got {start!r}")
    index = start + n if start < 0 else start
    if not 0 <= index < n:
        raise Reject(_USAGE)
    return index


def match_select(op: Operation) -> Group:
    verified(op)
    if isinstance(op, tt.AtenSelectIntOp):
        x = op.input
        ops: tuple[Operation, ...] = (op,)
        x_shape = shape(x)
        if len(x_shape) != 3 or norm_dim(int_const(op.dim, "dim"), 3) != 1:
            raise Reject(_USAGE)
        index = norm_dim(int_const(op.index, "index"), x_shape[1])
    else:
        assert isinstance(op, tt.AtenSqueezeDimOp)
        sl = owner(op.input)
        if not isinstance(sl, tt.AtenSliceTensorOp):
            raise Reject(_USAGE)
        verified(sl)
        x = sl.input
        if len(shape(x)) != 3 or (
            norm_dim(int_const(sl.dim, "dim"), 3),
            norm_dim(int_const(op.dim, "dim"), 3),
        ) != (1, 1):
            raise Reject(_USAGE)
        if shape(sl.result)[1] != 1 or const(sl.step, "step") != 1:
            raise Reject(_USAGE)
        index = _sliced_index(sl)
        ops = (sl, op)
    return Group(
        nm.SelectOp.KIND, ops, op, lambda v, layer: nm.SelectOp(v(x), 1, index, layer), op
    )


MATCHER = Matcher("select", anchors_select, match_select)

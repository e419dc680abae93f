"""Class-token pooling as ONNX Gather gives it: squeeze(index_select(x, 1, [i]), 1) of
x [B, N, D] -> nm.select."""

from __future__ import annotations

from xdsl.ir import Operation

from nmc.compiler.dialects import nm
from nmc.compiler.dialects import torch as tt
from nmc.compiler.transforms.raise_torch_to_nm.framework import Group, Matcher
from nmc.compiler.transforms.raise_torch_to_nm.reading import (
    Reject, int_const, norm_dim, only_user, shape, verified,
)

_USAGE = "only x[:, i] of a [B, N, D] tensor (class-token pooling) is supported"


def match(op: tt.AtenIndexSelectOp) -> Group:
    verified(op)
    x = shape(op.input)
    index = tt.literal_array(op.index)
    if len(x) != 3 or index is None or index.size != 1 \
            or norm_dim(int_const(op.dim, "dim"), 3) != 1:
        raise Reject(_USAGE)
    i = int(index.reshape(-1)[0])
    i = i + x[1] if i < 0 else i
    sq = only_user(op.result)
    ops: tuple[Operation, ...] = (op,)
    if isinstance(sq, (tt.AtenSqueezeDimOp, tt.PrimsSqueezeOp)) and shape(sq.results[0]) == (
            x[0], x[2]):
        ops = (op, sq)
    else:
        raise Reject(_USAGE + " (the selected token squeezed to [B, D])")
    if not 0 <= i < x[1]:
        raise Reject(_USAGE)
    inp = op.input
    return Group(nm.SelectOp.KIND, ops, ops[-1],
                 lambda v, layer: nm.SelectOp(v(inp), 1, i, layer), op)


MATCHER = Matcher("select (index_select)", lambda o: isinstance(o, tt.AtenIndexSelectOp), match)

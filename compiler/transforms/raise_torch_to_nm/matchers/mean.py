"""Global average pooling: mean.dim(x, [1 .. rank-2]) of x [B, tokens..., C]   -> nm.mean."""

from __future__ import annotations

from nmc.compiler.dialects import nm
from nmc.compiler.dialects import torch as tt
from nmc.compiler.transforms.raise_torch_to_nm.framework import Group, Matcher, anchored_by
from nmc.compiler.transforms.raise_torch_to_nm.reading import (
    Reject, const, ints, norm_dim, shape, verified,
)


def match_mean(op: tt.AtenMeanDimOp) -> Group:
    verified(op)
    x = shape(op.input)
    r = len(x)
    dims = sorted({norm_dim(d, r) for d in ints(op.dim, "dim")}) if r else []
    if r < 3 or dims != list(range(1, r - 1)):
        raise Reject(f"only the mean over the token dims 1..{r - 2} of a [B, tokens..., C] "
                     f"tensor is supported (global average pooling), got dims "
                     f"{const(op.dim, 'dim')} of {list(x)}")
    if const(op.keepdim, "keepdim") not in (False, 0):
        raise Reject("mean with keepdim=True is not supported")
    if const(op.dtype, "dtype") is not None:
        raise Reject("mean with a dtype is not supported")
    x_value = op.input
    return Group(nm.MeanOp.KIND, (op,), op, lambda v, layer: nm.MeanOp(v(x_value), layer), op)


MATCHER = Matcher("mean", anchored_by(tt.AtenMeanDimOp), match_mean)

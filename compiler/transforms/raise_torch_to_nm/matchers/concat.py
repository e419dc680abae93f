"""Concatenation: torch.cat([a, b, ...], dim) (dim < rank - 1)   -> nm.concat."""

from __future__ import annotations

from nmc.compiler.dialects import nm
from nmc.compiler.dialects import torch as tt
from nmc.compiler.transforms.raise_torch_to_nm.framework import Group, Matcher, anchored_by
from nmc.compiler.transforms.raise_torch_to_nm.reading import (
    Reject, int_const, norm_dim, owner, shape, verified,
)


def match_concat(cat: tt.AtenCatOp) -> Group:
    verified(cat)
    lst = owner(cat.tensors)
    if not isinstance(lst, tt.PrimListConstructOp):
        raise Reject("the tensors of cat must be a list built in the model")
    elems = list(lst.elements)
    shapes = [shape(e) for e in elems]
    rank = len(shape(cat.result))
    axis = norm_dim(int_const(cat.dim, "dim"), rank)
    if not 0 <= axis < rank - 1:
        raise Reject(f"concatenation along the last dim is not supported (dim {axis} of a "
                     f"rank-{rank} tensor)")
    if any(len(s) != rank for s in shapes):
        raise Reject(f"cat of tensors of different ranks: {[list(s) for s in shapes]}")
    if all(isinstance(owner(e), tt.AtenSliceTensorOp) for e in elems) and len(
            {owner(e).input for e in elems}) == 1:  # type: ignore[union-attr]
        raise Reject("slices of one tensor put back together (a roll) are row movement")
    return Group(
        nm.ConcatOp.KIND,
        (cat,),
        cat,
        lambda v, layer: nm.ConcatOp([v(e) for e in elems], axis, layer),
        cat,
    )


MATCHER = Matcher("concat", anchored_by(tt.AtenCatOp), match_concat)

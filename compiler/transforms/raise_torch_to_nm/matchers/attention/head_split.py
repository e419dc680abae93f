"""The head split before the attention core: q, k, v as views of one qkv tensor.

    view [B, N, 3, H, hd] of qkv [B, N, 3C] -> permute(2, 0, 3, 1, 4) -> select(0, 0/1/2)
      = q, k, v (timm's `qkv.reshape(...).permute(...).unbind(0)`)

so that nm.attention reads q, k and v of a head as plain 2-D strided blocks of qkv.
"""

from __future__ import annotations

from dataclasses import dataclass

from xdsl.ir import Operation, SSAValue

from nmc.compiler.dialects import torch as tt
from nmc.compiler.transforms.raise_torch_to_nm.reading import (
    Reject, int_const, ints, norm_dim, owner, shape, verified,
)

USAGE = (
    "the q, k, v head split must be timm's: qkv [B, N, 3C] -> reshape [B, N, 3, heads, "
    "C/heads] -> permute(2, 0, 3, 1, 4) -> q, k, v = [0], [1], [2] (unbind)"
)


@dataclass
class HeadSplit:
    qkv: SSAValue  # [B, N, 3C]
    batch: int
    tokens: int
    heads: int
    head_dim: int
    ops: tuple[Operation, ...]

    @property
    def channels(self) -> int:
        return self.heads * self.head_dim


def match_head_split(q: SSAValue, k: SSAValue, v: SSAValue, out: SSAValue) -> HeadSplit:
    """The split that makes q, k and v; `out` is the core's result [B, heads, N, hd]."""
    sels: list[tt.AtenSelectIntOp] = []
    for t in (q, k, v):
        sel = owner(t)
        if not isinstance(sel, tt.AtenSelectIntOp):
            raise Reject(USAGE)
        verified(sel)
        sels.append(sel)
    perm = owner(sels[0].input)
    if any(s.input is not sels[0].input for s in sels) or not isinstance(perm, tt.AtenPermuteOp):
        raise Reject(USAGE)
    verified(perm)
    if len(shape(perm.result)) != 5 or [
            norm_dim(d, 5) for d in ints(perm.dims, "dims")] != [2, 0, 3, 1, 4]:
        raise Reject(USAGE)
    for i, s in enumerate(sels):
        if (norm_dim(int_const(s.dim, "dim"), 5), norm_dim(int_const(s.index, "index"), 3)) \
                != (0, i):
            raise Reject(USAGE)
    split = owner(perm.input)
    if not isinstance(split, tt.RESHAPE_OPS):
        raise Reject(USAGE)
    verified(split)
    b, n, three, heads, hd = shape(split.results[0])
    qkv = split.input
    if three != 3 or shape(qkv) != (b, n, 3 * heads * hd):
        raise Reject(USAGE + f"; got {list(shape(qkv))} -> {list(shape(split.results[0]))}")
    if shape(v) != (b, heads, n, hd) or shape(out) != (b, heads, n, hd):
        raise Reject(USAGE)
    return HeadSplit(qkv, b, n, heads, hd, (split, perm, *sels))

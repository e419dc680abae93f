"""Reading chains of pure data movement by what they do to the elements, not their form.

Exporters spell one view in many ways: timm's `permute(2, 0, 3, 1, 4)` of the head split is
three transposes after torch-mlir's ONNX conversion, `unbind` is slice + squeeze, and k^T is
reshape -> transpose -> reshape. Whatever the ops, a chain of views of a tensor is a map
from each element of the result to an element of the source; `trace` walks back from a
value through such ops (and through multiplications by constant scalars, which commute
with them) and `element_map` computes that map with numpy, so matchers compare maps with
the one the pattern needs instead of matching op sequences.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from xdsl.ir import Operation, SSAValue

from nmc.compiler.dialects import torch as tt
from nmc.compiler.transforms.raise_torch_to_nm.noops import noop_source
from nmc.compiler.transforms.raise_torch_to_nm.reading import (
    Reject, const, int_const, ints, norm_dim, owner, shape,
)

VIEW_OPS = (*tt.RESHAPE_OPS, tt.AtenTransposeIntOp, tt.AtenPermuteOp, tt.AtenSliceTensorOp,
            tt.AtenSqueezeDimOp, tt.PrimsSqueezeOp, tt.AtenUnsqueezeOp, tt.AtenSelectIntOp,
            tt.AtenIndexSelectOp)

SCALE_OPS = (tt.AtenMulScalarOp, tt.AtenDivScalarOp, tt.AtenMulTensorOp, tt.AtenDivTensorOp)


def scalar_factor(op: Operation) -> tuple[SSAValue, float] | None:
    """(x, s) when `op` computes x * s for a constant scalar s (mul / div by a number or
    by a one-element constant tensor), else None."""
    if not isinstance(op, SCALE_OPS):
        return None
    operands = [op.operands[0], op.operands[1]]
    if isinstance(op, tt.AtenMulTensorOp) and scalar_constant(operands[0]) is not None:
        operands.reverse()
    x, c = operands
    value = scalar_constant(c)
    if value is None or not isinstance(x.type, tt.ValueTensorType):
        return None
    if shape(op.results[0]) != shape(x):
        return None
    if isinstance(op, (tt.AtenDivScalarOp, tt.AtenDivTensorOp)):
        return (x, 1.0 / value) if value != 0 else None
    return x, value


def scalar_constant(v: SSAValue) -> float | None:
    """The value of a constant number (or one-element constant tensor); else None."""
    try:
        c = tt.constant_value(v)
    except ValueError:
        return None
    if isinstance(c, (int, float)) and not isinstance(c, bool):
        return float(c)
    return None


@dataclass
class Traced:
    """`value` = element_map-view of `source`, times `scale`."""

    source: SSAValue
    ops: list[Operation]  # from the source to the value (aliases of no-ops not included)
    scale: float

    def element_map(self) -> np.ndarray:
        return element_map(self.source, self.ops)


def trace(value: SSAValue, scales: bool = True) -> Traced:
    """Walk back from `value` through view ops, no-ops and (if `scales`) constant scalings."""
    ops: list[Operation] = []
    scale = 1.0
    while (op := owner(value)) is not None:
        src = noop_source(op)
        if src is not None:
            value = src
            continue
        if isinstance(op, VIEW_OPS):
            if isinstance(op, tt.AtenIndexSelectOp) and tt.literal_array(op.index) is None:
                break
            ops.append(op)
            value = op.operands[0]
            continue
        factor = scalar_factor(op) if scales else None
        if factor is None:
            break
        ops.append(op)
        value, s = factor
        scale *= s
    ops.reverse()
    return Traced(value, ops, scale)


def element_map(source: SSAValue, ops: list[Operation]) -> np.ndarray:
    """For every element of the last op's result (its shape), the flat index of the
    element of `source` it is."""
    m = np.arange(math.prod(shape(source)), dtype=np.int64).reshape(shape(source))
    for op in ops:
        m = apply_view(op, m)
    return m


def apply_view(op: Operation, m: np.ndarray) -> np.ndarray:
    """`op` applied to an array of element indices (a scaling is the identity)."""
    out_shape = shape(op.results[0])
    if isinstance(op, SCALE_OPS):
        return m
    r = m.ndim
    if isinstance(op, (*tt.RESHAPE_OPS, tt.AtenSqueezeDimOp, tt.PrimsSqueezeOp,
                       tt.AtenUnsqueezeOp)):
        return m.reshape(out_shape)
    if isinstance(op, tt.AtenTransposeIntOp):
        return m.swapaxes(norm_dim(int_const(op.dim0, "dim0"), r),
                          norm_dim(int_const(op.dim1, "dim1"), r))
    if isinstance(op, tt.AtenPermuteOp):
        return m.transpose([norm_dim(d, r) for d in ints(op.dims, "dims")])
    if isinstance(op, tt.AtenSelectIntOp):
        d = norm_dim(int_const(op.dim, "dim"), r)
        return np.take(m, int_const(op.index, "index"), axis=d)
    if isinstance(op, tt.AtenIndexSelectOp):
        d = norm_dim(int_const(op.dim, "dim"), r)
        index = tt.literal_array(op.index)
        assert index is not None
        return np.take(m, index.astype(np.int64).reshape(-1), axis=d)
    assert isinstance(op, tt.AtenSliceTensorOp)
    d = norm_dim(int_const(op.dim, "dim"), r)
    start, end, step = const(op.start, "start"), const(op.end, "end"), const(op.step, "step")
    sl = [slice(None)] * r
    sl[d] = slice(start, end, step)
    out = m[tuple(sl)]
    if out.shape != out_shape:
        raise Reject(f"slice of {list(m.shape)} gives {list(out.shape)}, the IR says "
                     f"{list(out_shape)}")
    return out


def forward_views(value: SSAValue) -> list[Operation]:
    """The chain of view ops (each the only user of the previous value) that reads `value`,
    in order; stops at the first op that is not a view or has other users."""
    chain: list[Operation] = []
    while True:
        uses = list(value.uses)
        if len(uses) != 1:
            return chain
        op = uses[0].operation
        if noop_source(op) is not None or not isinstance(op, VIEW_OPS):
            return chain  # a no-op is an alias of the plan's, not part of a group
        if isinstance(op, tt.AtenIndexSelectOp) and tt.literal_array(op.index) is None:
            return chain
        chain.append(op)
        value = op.results[0]

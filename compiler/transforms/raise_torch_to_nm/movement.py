"""Row movement: chains of data movement that keep rows whole become one nm op.

    chains of view / reshape / flatten / permute / transpose / roll / slice, and cats of
      such chains of one tensor, that keep rows (the last dim, or a multiple of it) whole,
      not claimed by a pattern
        -> one nm.permute_rows (the row index composed with numpy, `movement_rows`) or
           nm.reshape (rows in place) per value that something other than movement reads

Swin's cyclic shift + window partition into [B*nW, N, C], window reverse + shift back (and
the crop of a padded map, `x[:, :H, :W]`), and patch merging's 2x2 gather are such chains
(ONNX has no roll: its exporters write the shift as slices and a cat, which compose the
same way).
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np
from xdsl.ir import Operation, SSAValue

from nmc.compiler.dialects import nm
from nmc.compiler.dialects import torch as tt
from nmc.compiler.transforms.raise_torch_to_nm.framework import Group
from nmc.compiler.transforms.raise_torch_to_nm.reading import (
    Reject, const, int_const, ints, norm_dim, owner, shape, verified,
)

MOVEMENT_OPS = (*tt.RESHAPE_OPS, tt.AtenPermuteOp, tt.AtenTransposeIntOp, tt.AtenRollOp,
                tt.AtenSliceTensorOp, tt.AtenCatOp)


def movement_rows(op: Operation, units: np.ndarray, unit: int) -> np.ndarray:
    """The rows of `op`'s result, given those of its input: `units` has the input's shape
    with its last dim counted in rows of `unit` words (entry = row of the chain's base
    tensor); the result is the same for the output. Reject when the op splits rows."""
    x, y = shape(op.operands[0]), shape(op.results[0])
    r = len(x)
    if isinstance(op, tt.RESHAPE_OPS):
        if not y or y[-1] % unit:
            raise Reject(f"a reshape {list(x)} -> {list(y)} that splits rows of {unit} is "
                         f"only supported as part of another pattern")
        return units.reshape(*y[:-1], y[-1] // unit)
    if isinstance(op, tt.AtenPermuteOp):
        dims = [norm_dim(d, r) for d in ints(op.dims, "dims")]
        if dims[-1] != r - 1:
            raise Reject(f"a permute {dims} that moves the last dim is only supported as "
                         f"part of another pattern")
        return units.transpose(dims)
    if isinstance(op, tt.AtenTransposeIntOp):
        d0 = norm_dim(int_const(op.dim0, "dim0"), r)
        d1 = norm_dim(int_const(op.dim1, "dim1"), r)
        if r - 1 in (d0, d1) and d0 != d1:
            raise Reject("a transpose of the last dim is only supported as part of another "
                         "pattern")
        return units.swapaxes(d0, d1)
    if isinstance(op, tt.AtenSliceTensorOp):
        d = norm_dim(int_const(op.dim, "dim"), r)
        if d == r - 1:
            raise Reject("a slice of the last dim is not supported")
        start, end = const(op.start, "start"), const(op.end, "end")
        index = [slice(None)] * r
        index[d] = slice(start, end, int_const(op.step, "step"))
        rows = units[tuple(index)]
        if rows.shape[:-1] != y[:-1]:
            raise Reject(f"unexpected slice result {list(y)} of {list(x)}")
        return rows
    assert isinstance(op, tt.AtenRollOp)
    shifts, dims = ints(op.shifts, "shifts"), ints(op.dims, "dims")
    dims = [norm_dim(d, r) for d in dims]
    if len(shifts) != len(dims) or not dims:
        raise Reject("roll needs one shift per dim (a roll of the flattened tensor is not "
                     "supported)")
    if r - 1 in dims:
        raise Reject("a roll along the last dim is not supported")
    return np.roll(units, shifts, axis=dims)


# A movement op's composed form: (the chain's base value, the rows of the op's result as
# rows of the base, the row width in words, the chain's ops from the base to the op).
_Form = tuple[SSAValue, np.ndarray, int, tuple[Operation, ...]]


def compose_movements(ops: list[Operation], aliases: dict[Operation, SSAValue],
                      claimed: set[Operation], reasons: dict[Operation, str]) -> list[Group]:
    """Compose the unclaimed chains of data-movement ops into one nm op per value that
    something else reads: nm.reshape when the rows stay in place, else nm.permute_rows.
    Movement ops read only by other movement ops, or that leave their base as it is,
    become `aliases`; an op that splits rows gets its reason in `reasons`."""
    forms = _forms(ops, aliases, claimed, reasons)

    def consumers(value: SSAValue) -> Iterator[Operation]:
        for use in value.uses:
            if use.operation in aliases or isinstance(use.operation, tt.PrimListConstructOp):
                yield from consumers(use.operation.results[0])  # a list: its cat
            else:
                yield use.operation

    groups: list[Group] = []
    for op, (base, units, _unit, chain) in forms.items():
        claimed.add(op)
        if all(c in forms for c in consumers(op.results[0])):
            # read by other movement ops only: erased (a cat's operand is its list)
            aliases[op] = _cat_inputs(op)[0] if isinstance(op, tt.AtenCatOp) else op.operands[0]
            continue
        result_shape = shape(op.results[0])
        rows = units.reshape(-1)
        if np.array_equal(rows, np.arange(math.prod(shape(base)[:-1]) * shape(base)[-1]
                                          // _unit)):  # the rows stay in place
            if result_shape == shape(base):
                aliases[op] = base
                continue
            groups.append(Group(
                "", chain, op,
                lambda v, _layer, b=base, s=result_shape: nm.ReshapeOp(v(b), s), op))
            continue
        groups.append(Group(
            nm.PermuteRowsOp.KIND, chain, op,
            lambda v, layer, b=base, r=rows.tolist(), s=result_shape: nm.PermuteRowsOp(
                v(b), r, s, layer),
            op))
    return groups


def _forms(ops: list[Operation], aliases: dict[Operation, SSAValue], claimed: set[Operation],
           reasons: dict[Operation, str]) -> dict[Operation, _Form]:
    """The composed form of every unclaimed movement op that keeps rows whole."""

    def source(value: SSAValue) -> SSAValue:
        while (o := owner(value)) is not None and o in aliases:
            value = aliases[o]
        return value

    def form_of(x: SSAValue) -> _Form:
        """The form of a movement op's input: its producer's, or a new chain from it."""
        x_owner = owner(x)
        if x_owner in forms:
            return forms[x_owner]
        x_shape = shape(x)
        if not x_shape:
            raise Reject("a scalar cannot be reshaped into rows")
        units = np.arange(math.prod(x_shape[:-1])).reshape(*x_shape[:-1], 1)
        return x, units, x_shape[-1], ()

    forms: dict[Operation, _Form] = {}
    for op in ops:
        if op in claimed or not isinstance(op, MOVEMENT_OPS):
            continue
        try:
            verified(op)
            if isinstance(op, tt.AtenCatOp):
                forms[op] = _cat_form(op, [form_of(source(v)) for v in _cat_inputs(op)])
                continue
            x = source(op.operands[0])
            x_owner = owner(x)
            if x_owner in forms:
                base, units, unit, chain = forms[x_owner]
            else:
                x_shape = shape(x)
                if not x_shape:
                    raise Reject("a scalar cannot be reshaped into rows")
                base, unit, chain = x, x_shape[-1], ()
                units = np.arange(math.prod(x_shape[:-1])).reshape(*x_shape[:-1], 1)
            forms[op] = (base, movement_rows(op, units, unit), unit, (*chain, op))
        except Reject as e:
            reasons.setdefault(op, str(e))
    return forms


def _cat_inputs(cat: tt.AtenCatOp) -> list[SSAValue]:
    lst = owner(cat.tensors)
    if not isinstance(lst, tt.PrimListConstructOp):
        raise Reject("the tensors of cat must be a list built in the model")
    return list(lst.elements)


def _cat_form(cat: tt.AtenCatOp, parts: list[_Form]) -> _Form:
    """A cat of row movements of one base along a dim other than the last (ONNX's roll:
    slices of one tensor concatenated) is a row movement of that base."""
    base, _, unit, _ = parts[0]
    if any(p[0] is not base or p[2] != unit for p in parts):
        raise Reject("a cat of different tensors is only supported as nm.concat")
    rank = len(shape(cat.result))
    d = norm_dim(int_const(cat.dim, "dim"), rank)
    if d == rank - 1:
        raise Reject("a cat along the last dim is not supported")
    chain = tuple(dict.fromkeys(o for p in parts for o in p[3]))
    return base, np.concatenate([p[1] for p in parts], axis=d), unit, (*chain, cat)

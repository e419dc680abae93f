"""Softmax over the last dim, in the forms a decomposed graph has.

    aten.softmax.int(x, -1)
    exp(x - max(x, -1)) / sum(exp(...), -1)          (torch.export's default table)
      [where(all(x == -inf), 0, ...) around it: torch-mlir's NaN-safe form of sdpa's]
"""

from __future__ import annotations

from xdsl.ir import Operation, SSAValue

from nmc.compiler.dialects import torch as tt
from nmc.compiler.transforms.raise_torch_to_nm.reading import (
    Reject, const, int_const, ints, norm_dim, op_name, owner, shape, verified,
)


def _name(op: Operation | None) -> str:
    return op_name(op) if op is not None else ""


def _check_last(dims: list[int], rank: int) -> None:
    if [norm_dim(d, rank) for d in dims] != [rank - 1]:
        raise Reject("attention softmax must be over the last dim")


def softmax_input(value: SSAValue) -> tuple[SSAValue, list[Operation]] | None:
    """(x, ops) when `value` is softmax(x) over the last dim in one of the forms above."""
    op = owner(value)
    if isinstance(op, tt.AtenSoftmaxIntOp):
        verified(op)
        if const(op.dtype, "softmax dtype") is not None:
            raise Reject("attention softmax with a dtype is not supported")
        _check_last([int_const(op.dim, "softmax dim")], len(shape(op.input)))
        return op.input, [op]
    ops: list[Operation] = []
    if _name(op) == "torch.aten.where.self":
        # where(cond, zeros, div): the NaN guard of a fully masked row; no mask here means
        # the guard never fires, so the value is the division
        assert op is not None
        ops.append(op)
        op = owner(op.operands[2])
        guard = ops[0]
        cond = owner(guard.operands[0])
        while cond is not None and _name(cond) in (
                "torch.aten.logical_not", "torch.aten.any.dim", "torch.aten.eq.Scalar"):
            ops.append(cond)
            cond = owner(cond.operands[0])
    if _name(op) != "torch.aten.div.Tensor":
        return None
    assert op is not None
    ops.append(op)
    exp, total = owner(op.operands[0]), owner(op.operands[1])
    if _name(exp) != "torch.aten.exp" or _name(total) != "torch.aten.sum.dim_IntList":
        return None
    assert exp is not None and total is not None
    if owner(total.operands[0]) is not exp:
        return None
    sub = owner(exp.operands[0])
    if _name(sub) != "torch.aten.sub.Tensor":
        return None
    assert sub is not None
    x = sub.operands[0]
    mx = owner(sub.operands[1])
    if _name(mx) not in ("torch.aten.max.dim", "torch.aten.amax") or mx is None \
            or mx.operands[0] is not x:
        return None
    for reduce_op in (mx, total):
        _check_last(ints(reduce_op.operands[1], "dim"), len(shape(x)))
    ops += [exp, total, sub, mx]
    return x, ops

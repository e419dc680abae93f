"""Value-semantics no-ops: their result equals an operand, so they are dropped.

Reshapes, slices and expands to the operand's own shape, a constant pad of width zero
everywhere (timm 1.0's Swin pads unconditionally: at 224x224 every pad is zero-wide; the
frontend turns real pads into concatenations, frontend/materialize.py), and clone / alias /
detach / contiguous (unmodelled, recognised by name).
"""

from __future__ import annotations

from xdsl.dialects.builtin import UnregisteredOp
from xdsl.ir import Operation, SSAValue

from nmc.compiler.dialects import torch as tt
from nmc.compiler.transforms.raise_torch_to_nm.reading import Reject, const, ints

_IDENTITY_OP_NAMES = frozenset(
    {"torch.aten.clone", "torch.aten.alias", "torch.aten.detach", "torch.aten.contiguous"}
)


def noop_source(op: Operation) -> SSAValue | None:
    """The operand that a no-op's result equals, else None."""
    try:
        return _noop_source(op)
    except Reject:
        return None


def _noop_source(op: Operation) -> SSAValue | None:
    if isinstance(op, (*tt.RESHAPE_OPS, tt.AtenSliceTensorOp, *tt.EXPAND_OPS)):
        x = op.operands[0]
        if isinstance(x.type, tt.ValueTensorType) and x.type == op.results[0].type:
            if isinstance(op, tt.AtenSliceTensorOp) and const(op.step, "step") != 1:
                return None
            return x
        return None
    if isinstance(op, tt.AtenConstantPadNdOp):
        if all(p == 0 for p in ints(op.pad, "pad")) and op.input.type == op.result.type:
            return op.input
        return None
    if isinstance(op, UnregisteredOp) and op.op_name.data in _IDENTITY_OP_NAMES:
        if op.operands and len(op.results) == 1 and op.operands[0].type == op.results[0].type:
            return op.operands[0]
    return None

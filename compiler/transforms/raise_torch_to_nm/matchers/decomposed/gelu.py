"""GELU written out in arithmetic -> nm.gelu, recognised by what it computes.

    0.5 * x * (1 + erf(x / sqrt(2)))                                 approximate "none"
    0.5 * x * (1 + tanh(sqrt(2 / pi) * (x + 0.044715 * x^3)))        approximate "tanh"

in any arrangement of the products and constants (ONNX exporters before opset 20 write
Div, Erf, Add, Mul, Mul; others put the 0.5 first). From the erf / tanh anchor, the
expression is followed to the first value that, interpreted on sample points, equals the
GELU of the value the erf's argument is computed from; every op of it is elementwise over
that value and scalar constants.
"""

from __future__ import annotations

import math

import numpy as np
from xdsl.ir import Operation, SSAValue

from nmc.compiler.dialects import nm
from nmc.compiler.transforms.raise_torch_to_nm.framework import Group, Mapper, Matcher
from nmc.compiler.transforms.raise_torch_to_nm.matchers.decomposed.views import scalar_constant
from nmc.compiler.transforms.raise_torch_to_nm.reading import (
    Reject, only_user, op_name, owner, shape,
)

_SAMPLES = np.linspace(-5.0, 5.0, 41)
_ERF = np.vectorize(math.erf)
_GELU = {
    "none": 0.5 * _SAMPLES * (1.0 + _ERF(_SAMPLES / math.sqrt(2.0))),
    "tanh": 0.5 * _SAMPLES * (1.0 + np.tanh(math.sqrt(2.0 / math.pi)
                                            * (_SAMPLES + 0.044715 * _SAMPLES ** 3))),
}
_BINARY = {
    "torch.aten.add.Tensor": lambda a, b, alpha=1.0: a + alpha * b,
    "torch.aten.add.Scalar": lambda a, b, alpha=1.0: a + alpha * b,
    "torch.aten.sub.Tensor": lambda a, b, alpha=1.0: a - alpha * b,
    "torch.aten.sub.Scalar": lambda a, b, alpha=1.0: a - alpha * b,
    "torch.aten.rsub.Scalar": lambda a, b, alpha=1.0: b - alpha * a,
    "torch.aten.mul.Tensor": lambda a, b: a * b,
    "torch.aten.mul.Scalar": lambda a, b: a * b,
    "torch.aten.div.Tensor": lambda a, b: a / b,
    "torch.aten.div.Scalar": lambda a, b: a / b,
    "torch.aten.pow.Tensor_Scalar": lambda a, b: a ** b,
}
_UNARY = {"torch.aten.erf": _ERF, "torch.aten.tanh": np.tanh}
_MAX_OPS = 12


def _name(op: Operation | None) -> str:
    return op_name(op) if op is not None else ""




class _Eval:
    """Interprets the elementwise expression of `x` (and constants) at the sample points;
    records the ops it read."""

    def __init__(self, x: SSAValue):
        self.x = x
        self.ops: list[Operation] = []

    def __call__(self, v: SSAValue) -> np.ndarray | float:
        if v is self.x:
            return _SAMPLES
        c = scalar_constant(v)
        if c is not None:
            return c
        op = owner(v)
        name = _name(op)
        if op is None or len(self.ops) > _MAX_OPS or (name not in _BINARY and name not in _UNARY):
            raise Reject("not an elementwise expression of one value")
        if shape(op.results[0]) != shape(self.x):
            raise Reject("not an elementwise expression of one value")
        if op not in self.ops:
            self.ops.append(op)
        if name in _UNARY:
            return _UNARY[name](self(op.operands[0]))
        args = [self(o) for o in op.operands[:2]]
        if len(op.operands) > 2:
            alpha = scalar_constant(op.operands[2])
            if alpha is None:
                raise Reject("the alpha of an add must be a constant")
            return _BINARY[name](*args, alpha)
        return _BINARY[name](*args)


def _scalar_operand(op: Operation) -> SSAValue | None:
    """The one tensor operand of scalar arithmetic (x * c, x ** 3, ...), else None."""
    if _name(op) not in _BINARY:
        return None
    tensors = [o for o in op.operands[:2] if scalar_constant(o) is None]
    return tensors[0] if len(tensors) == 1 else None


def _derived(value: SSAValue, x: SSAValue) -> bool:
    """`value` is computed from x by scalar arithmetic alone (0.044715 * x^3)."""
    for _ in range(_MAX_OPS):
        if value is x:
            return True
        op = owner(value)
        t = _scalar_operand(op) if op is not None else None
        if t is None:
            return False
        value = t
    return False


def _source(anchor: Operation) -> SSAValue:
    """The value the erf / tanh argument is computed from by scalar arithmetic (through
    x + 0.044715 * x^3 in the tanh form)."""
    v = anchor.operands[0]
    for _ in range(_MAX_OPS):
        op = owner(v)
        if op is None or _name(op) not in _BINARY:
            return v
        t = _scalar_operand(op)
        if t is None:
            a, b = op.operands[0], op.operands[1]
            if _derived(b, a):
                return a
            if _derived(a, b):
                return b
            return v
        v = t
    return v


def match(anchor: Operation) -> Group:
    x = _source(anchor)
    shape(x)
    value = anchor.results[0]
    for _ in range(_MAX_OPS):
        user = only_user(value)
        if user is None or (_name(user) not in _BINARY):
            break
        value = user.results[0]
        ev = _Eval(x)
        try:
            got = np.broadcast_to(ev(value), _SAMPLES.shape)
        except Reject:
            break
        for approximate, want in _GELU.items():
            if np.allclose(got, want, rtol=1e-5, atol=1e-6):
                root = user
                ops = tuple(ev.ops)

                def build(v: Mapper, layer: str, a: str = approximate) -> nm.GeluOp:
                    return nm.GeluOp(v(x), layer, a)

                return Group(nm.GeluOp.KIND, ops, root, build, anchor)
    raise Reject("an erf / tanh that is not part of a GELU (0.5 * x * (1 + erf(x / "
                 "sqrt(2))) or its tanh approximation) is not supported")


MATCHER = Matcher("gelu (arithmetic)",
                  lambda op: _name(op) in ("torch.aten.erf", "torch.aten.tanh"), match)

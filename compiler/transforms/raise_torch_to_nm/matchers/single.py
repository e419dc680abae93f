"""Ops converted one to one: each torch op becomes one nm op of the same meaning.

`ONE_TO_ONE` maps each torch op to its nm op's kind and a rule that checks the op's form
(`Reject(reason)` otherwise) and returns the builder; the rule's docstring says what it
accepts, and docs/SUPPORTED_OPS.md (generated: `python -m nmc.compiler.supported_ops`)
lists the rows. Adding such an op is adding one row.

The frontend gives these ops the operands the vector unit needs (frontend/materialize.py):
add/sub of a number and `c - x` read a constant tensor, a layer norm without affine reads
ones and zeros, a convolution without bias zeros, so they arrive here in tensor form.
"""

from __future__ import annotations

import math
from collections.abc import Callable

from xdsl.ir import Operation

from nmc.compiler.dialects import nm
from nmc.compiler.dialects import torch as tt
from nmc.compiler.transforms.raise_torch_to_nm.framework import Builder, Group, Matcher
from nmc.compiler.transforms.raise_torch_to_nm.reading import (
    Reject, const, int_const, norm_dim, shape, verified,
)


OneToOne = Callable[[Operation], Builder]
"""Checks one op (Reject(reason) when its form is unsupported) and returns its builder."""


def _linear(op: tt.AtenLinearOp) -> Builder:
    """input [..., K] times weight [N, K] transposed, bias optional."""
    x, w = shape(op.input), shape(op.weight)
    if len(x) < 1 or len(w) != 2:
        raise Reject(f"expected input [..., K] and weight [N, K], got {list(x)} and {list(w)}")
    inp, weight, bias = op.input, op.weight, op.bias
    if isinstance(bias.type, tt.NoneType):
        return lambda v, layer: nm.LinearOp(v(inp), v(weight), None, layer)
    shape(bias)
    return lambda v, layer: nm.LinearOp(v(inp), v(weight), v(bias), layer)


def _layer_norm(op: tt.AtenLayerNormOp) -> Builder:
    """over the last dim (normalized_shape = [C]), eps a constant; with or without affine."""
    x = shape(op.input)
    normalized = const(op.normalized_shape, "normalized_shape")
    if not x or normalized != [x[-1]]:
        raise Reject(
            f"normalized_shape must be the last dim [{x[-1] if x else '?'}], got {normalized}"
        )
    for label, v in (("weight", op.weight), ("bias", op.bias)):
        if isinstance(v.type, tt.NoneType):
            raise Reject(
                f"layer_norm without {label} (elementwise_affine=False) is not supported"
            )
        shape(v)
    eps = const(op.eps, "eps")
    if not isinstance(eps, (int, float)):
        raise Reject(f"eps must be a float constant, got {eps!r}")
    inp, weight, bias = op.input, op.weight, op.bias
    return lambda v, layer: nm.LayerNormOp(v(inp), v(weight), v(bias), float(eps), layer)


def _gelu(op: tt.AtenGeluOp) -> Builder:
    """exact or tanh approximation."""
    shape(op.input)
    approximate = const(op.approximate, "approximate")
    if approximate not in nm.GELU_APPROXIMATIONS:
        raise Reject(f"approximate must be 'none' or 'tanh', got {approximate!r}")
    inp = op.input
    return lambda v, layer: nm.GeluOp(v(inp), layer, str(approximate))


def _relu(op: tt.AtenReluOp) -> Builder:
    """max(x, 0), NaN kept."""
    shape(op.input)
    inp = op.input
    return lambda v, layer: nm.ReluOp(v(inp), layer)


def _number(v, what: str) -> float:  # noqa: ANN001 - SSAValue
    value = const(v, what)
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        raise Reject(f"{what} must be a number constant, got {value!r}")
    return float(value)


def _mul_scalar(op: tt.AtenMulScalarOp) -> Builder:
    """x * c, c a number rounded to f32 as PyTorch does (attention's q * scale belongs to
    the attention pattern)."""
    shape(op.input)
    c = _number(op.other, "the factor")
    inp = op.input
    return lambda v, layer: nm.ScaleOp(v(inp), c, layer)


def _div_scalar(op: tt.AtenDivScalarOp) -> Builder:
    """x / c for c a power of two, as x * (1/c), equal bit for bit; other divisors are
    refused (the vector unit has no division)."""
    shape(op.input)
    c = _number(op.other, "the divisor")
    mantissa, exponent = math.frexp(c)
    # 1/c must be a power of two and a normal f32 (then x * (1/c) rounds like x / c)
    if abs(mantissa) != 0.5 or not -125 <= exponent <= 127:
        raise Reject(
            f"the vector unit has no division; nmc divides by a constant c as x * (1/c), "
            f"which equals PyTorch's x / c bit for bit only when c is a power of two; "
            f"c = {c!r} is not"
        )
    inp = op.input
    return lambda v, layer: nm.ScaleOp(v(inp), 1.0 / c, layer)


def _softmax(op: tt.AtenSoftmaxIntOp) -> Builder:
    """over the last dim (attention's softmax belongs to the attention pattern)."""
    x = shape(op.input)
    dim = int_const(op.dim, "dim")
    if not x or norm_dim(dim, len(x)) != len(x) - 1:
        raise Reject(f"softmax over the last dim only (got dim {dim} of a rank-{len(x)} "
                     f"tensor)")
    if const(op.dtype, "dtype") is not None:
        raise Reject("softmax with a dtype is not supported")
    inp = op.input
    return lambda v, layer: nm.SoftmaxOp(v(inp), layer)


def _elementwise(nm_op: type[nm.AddOp | nm.MulOp | nm.SubOp], commutes: bool, doc: str
                 ) -> OneToOne:
    """The check-and-build of a binary elementwise op; `commutes`: either operand may be
    the one that broadcasts (they are swapped so that the rhs is); `doc`: what it accepts."""

    def rule(op: Operation) -> Builder:
        a, b = shape(op.input), shape(op.other)
        if hasattr(op, "alpha"):
            alpha = const(op.alpha, "alpha")
            if alpha != 1:
                raise Reject(f"alpha must be 1, got {alpha!r}")
        swap = commutes and not nm.broadcasts_to(b, a) and nm.broadcasts_to(a, b)
        if not (nm.broadcasts_to(b, a) or swap):
            which = "one" if commutes else "the second"
            raise Reject(
                f"operands {list(a)} and {list(b)}: {which} must have the other's shape or "
                f"broadcast to it over leading dims (its shape without leading 1s a suffix "
                f"of the other's); other broadcasts are not supported"
            )
        lhs, rhs = (op.other, op.input) if swap else (op.input, op.other)
        return lambda v, layer: nm_op(v(lhs), v(rhs), layer)

    rule.__doc__ = doc
    return rule


ONE_TO_ONE: dict[type[Operation], tuple[str, OneToOne]] = {
    tt.AtenLinearOp: (nm.LinearOp.KIND, _linear),
    tt.AtenLayerNormOp: (nm.LayerNormOp.KIND, _layer_norm),
    tt.AtenGeluOp: (nm.GeluOp.KIND, _gelu),
    tt.AtenAddTensorOp: (nm.AddOp.KIND, _elementwise(nm.AddOp, True, (
        "alpha = 1; either operand may broadcast over leading dims (a bias row, a position "
        "embedding); x + c (a number) reads a constant row"))),
    tt.AtenMulTensorOp: (nm.MulOp.KIND, _elementwise(nm.MulOp, True, (
        "either operand may broadcast over leading dims (a LayerScale: x * gamma)"))),
    tt.AtenSubTensorOp: (nm.SubOp.KIND, _elementwise(nm.SubOp, False, (
        "alpha = 1; only the subtrahend may broadcast over leading dims; x - c reads a "
        "constant row, c - x a constant of x's shape"))),
    tt.AtenReluOp: (nm.ReluOp.KIND, _relu),
    tt.AtenMulScalarOp: (nm.ScaleOp.KIND, _mul_scalar),
    tt.AtenDivScalarOp: (nm.ScaleOp.KIND, _div_scalar),
    tt.AtenSoftmaxIntOp: (nm.SoftmaxOp.KIND, _softmax),
}
"""op type -> (the nm op's layer-name kind, its check-and-build function)."""


def match_one_to_one(op: Operation) -> Group:
    verified(op)
    kind, rule = ONE_TO_ONE[type(op)]
    return Group(kind, (op,), op, rule(op), op)


MATCHER = Matcher("one-to-one", lambda op: type(op) in ONE_TO_ONE, match_one_to_one)

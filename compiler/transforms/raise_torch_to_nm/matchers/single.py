"""Ops converted one to one: each torch op becomes one nm op of the same meaning.

    torch.aten.linear        -> nm.linear      (bias optional)
    torch.aten.layer_norm    -> nm.layer_norm  (normalized_shape = [last dim], eps constant)
    torch.aten.gelu          -> nm.gelu        (approximate from its string constant)
    torch.aten.add.Tensor    -> nm.add         (alpha == 1; one operand may broadcast to the
                                                other over leading dims, see nm.add)
    torch.aten.mul.Tensor    -> nm.mul         (likewise; a LayerScale: x * gamma)
    torch.aten.sub.Tensor    -> nm.sub         (alpha == 1; only the subtrahend may broadcast)

Adding such an op is adding one row to `ONE_TO_ONE`.
"""

from __future__ import annotations

from collections.abc import Callable
from xdsl.ir import Operation

from nmc.compiler.dialects import nm
from nmc.compiler.dialects import torch as tt
from nmc.compiler.transforms.raise_torch_to_nm.framework import Builder, Group, Matcher
from nmc.compiler.transforms.raise_torch_to_nm.reading import Reject, const, shape, verified


OneToOne = Callable[[Operation], Builder]
"""Checks one op (Reject(reason) when its form is unsupported) and returns its builder."""


def _linear(op: tt.AtenLinearOp) -> Builder:
    x, w = shape(op.input), shape(op.weight)
    if len(x) < 1 or len(w) != 2:
        raise Reject(f"expected input [..., K] and weight [N, K], got {list(x)} and {list(w)}")
    inp, weight, bias = op.input, op.weight, op.bias
    if isinstance(bias.type, tt.NoneType):
        return lambda v, layer: nm.LinearOp(v(inp), v(weight), None, layer)
    shape(bias)
    return lambda v, layer: nm.LinearOp(v(inp), v(weight), v(bias), layer)


def _layer_norm(op: tt.AtenLayerNormOp) -> Builder:
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
    shape(op.input)
    approximate = const(op.approximate, "approximate")
    if approximate not in nm.GELU_APPROXIMATIONS:
        raise Reject(f"approximate must be 'none' or 'tanh', got {approximate!r}")
    inp = op.input
    return lambda v, layer: nm.GeluOp(v(inp), layer, str(approximate))


def _elementwise(nm_op: type[nm.AddOp | nm.MulOp | nm.SubOp], commutes: bool,
                 ) -> OneToOne:
    """The check-and-build of a binary elementwise op; `commutes`: either operand may be
    the one that broadcasts (they are swapped so that the rhs is)."""

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

    return rule


ONE_TO_ONE: dict[type[Operation], tuple[str, OneToOne]] = {
    tt.AtenLinearOp: (nm.LinearOp.KIND, _linear),
    tt.AtenLayerNormOp: (nm.LayerNormOp.KIND, _layer_norm),
    tt.AtenGeluOp: (nm.GeluOp.KIND, _gelu),
    tt.AtenAddTensorOp: (nm.AddOp.KIND, _elementwise(nm.AddOp, commutes=True)),
    tt.AtenMulTensorOp: (nm.MulOp.KIND, _elementwise(nm.MulOp, commutes=True)),
    tt.AtenSubTensorOp: (nm.SubOp.KIND, _elementwise(nm.SubOp, commutes=False)),
}
"""op type -> (the nm op's layer-name kind, its check-and-build function)."""


def match_one_to_one(op: Operation) -> Group:
    verified(op)
    kind, rule = ONE_TO_ONE[type(op)]
    return Group(kind, (op,), op, rule(op), op)


MATCHER = Matcher("one-to-one", lambda op: type(op) in ONE_TO_ONE, match_one_to_one)

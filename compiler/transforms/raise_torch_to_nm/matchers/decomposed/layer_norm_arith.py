"""LayerNorm over the last dim written out in arithmetic -> nm.layer_norm.

    m = mean(x, -1, keepdim)        d = x - m
    v = mean(d * d | d ** 2, -1, keepdim)        (+ eps: add.Scalar or a constant tensor)
    y = d * rsqrt(v + eps)  or  d / sqrt(v + eps)
    y = y * gamma + beta                                    (gamma [C], beta [C])

(torch.export's default table through torch-mlir; ONNX exporters before opset 17:
ReduceMean, Sub, Pow, ReduceMean, Add, Sqrt, Div, Mul, Add). Any eps; the reads of m and
the normaliser may go through broadcast_to. The anchor is the first mean.
"""

from __future__ import annotations

from xdsl.ir import Operation, SSAValue

from nmc.compiler.dialects import nm
from nmc.compiler.dialects import torch as tt
from nmc.compiler.transforms.raise_torch_to_nm.framework import Group, Mapper, Matcher
from nmc.compiler.transforms.raise_torch_to_nm.matchers.decomposed.views import scalar_constant
from nmc.compiler.transforms.raise_torch_to_nm.reading import (
    Reject, const, ints, norm_dim, only_user, op_name, owner, shape,
)

_USAGE = ("a LayerNorm written out must be (x - mean) * rsqrt(mean((x - mean)^2) + eps) "
          "* gamma + beta over the last dim")


def _name(op: Operation | None) -> str:
    return op_name(op) if op is not None else ""


def _is_last_dim_mean(op: Operation | None) -> bool:
    if not isinstance(op, tt.AtenMeanDimOp):
        return False
    rank = len(shape(op.input))
    try:
        dims = [norm_dim(d, rank) for d in ints(op.dim, "dim")]
    except Reject:
        return False
    return dims == [rank - 1] and const(op.keepdim, "keepdim") in (True, 1)


def anchors(op: Operation) -> bool:
    if not _is_last_dim_mean(op):
        return False
    return any(_name(u.operation) == "torch.aten.sub.Tensor" for u in _readers(op.results[0]))


def _readers(value: SSAValue) -> list:
    """The uses of `value`, through one broadcast_to."""
    uses = []
    for u in value.uses:
        if isinstance(u.operation, tt.EXPAND_OPS):
            uses += list(u.operation.results[0].uses)
        else:
            uses.append(u)
    return uses


def _through_broadcast(value: SSAValue, ops: list[Operation]) -> SSAValue:
    o = owner(value)
    if isinstance(o, tt.EXPAND_OPS):
        ops.append(o)
        return o.operands[0]
    return value




def _next(value: SSAValue, names: tuple[str, ...]) -> Operation:
    op = only_user(value)
    if _name(op) not in names:
        raise Reject(_USAGE)
    assert op is not None
    return op


def match(mean: tt.AtenMeanDimOp) -> Group:
    x = mean.input
    c = shape(x)[-1]
    ops: list[Operation] = [mean]
    subs = [u.operation for u in _readers(mean.results[0])
            if _name(u.operation) == "torch.aten.sub.Tensor"]
    sub = subs[0]
    if sub.operands[0] is not x or _through_broadcast(sub.operands[1], ops) is not mean.result \
            or (len(sub.operands) > 2 and scalar_constant(sub.operands[2]) != 1.0):
        raise Reject(_USAGE)
    ops.append(sub)
    d = sub.results[0]
    sq = list(dict.fromkeys(u.operation for u in d.uses if _is_square(u.operation, d)))
    if len(sq) != 1:
        raise Reject(_USAGE)
    square = sq[0]
    var = only_user(square.results[0])
    if not _is_last_dim_mean(var):
        raise Reject(_USAGE)
    assert var is not None
    ops += [square, var]
    add_eps = _next(var.results[0], ("torch.aten.add.Scalar", "torch.aten.add.Tensor"))
    eps = scalar_constant(add_eps.operands[1])
    if eps is None or (len(add_eps.operands) > 2 and scalar_constant(add_eps.operands[2]) != 1.0):
        raise Reject(_USAGE + " (eps must be a constant)")
    root_op = _next(add_eps.results[0], ("torch.aten.rsqrt", "torch.aten.sqrt"))
    ops += [add_eps, root_op]
    norm_value = root_op.results[0]
    bc = only_user(norm_value)
    if isinstance(bc, tt.EXPAND_OPS):
        ops.append(bc)
        norm_value = bc.results[0]
    want = "torch.aten.mul.Tensor" if _name(root_op) == "torch.aten.rsqrt" else \
        "torch.aten.div.Tensor"
    scaled = only_user(norm_value)
    if _name(scaled) != want or scaled.operands[0] is not d or \
            scaled.operands[1] is not norm_value:  # type: ignore[union-attr]
        raise Reject(_USAGE)
    assert scaled is not None
    ops.append(scaled)
    mul = only_user(scaled.results[0])
    gamma = _affine(mul, scaled.results[0], "torch.aten.mul.Tensor", c)
    add = only_user(mul.results[0]) if gamma is not None else None  # type: ignore[union-attr]
    beta = _affine(add, mul.results[0], "torch.aten.add.Tensor", c) if add else None
    if gamma is None or beta is None:
        raise Reject("a LayerNorm written out without its affine gamma and beta is not "
                     "supported")
    ops += [mul, add]  # type: ignore[list-item]
    root = add

    def build(v: Mapper, layer: str) -> nm.LayerNormOp:
        return nm.LayerNormOp(v(x), v(gamma), v(beta), eps, layer)

    return Group(nm.LayerNormOp.KIND, tuple(ops), root, build, mean)  # type: ignore[arg-type]


def _is_square(op: Operation, d: SSAValue) -> bool:
    """d * d, or d ** 2."""
    if _name(op) == "torch.aten.mul.Tensor":
        return op.operands[0] is d and op.operands[1] is d
    return _name(op) == "torch.aten.pow.Tensor_Scalar" and scalar_constant(op.operands[1]) == 2.0


def _affine(op: Operation | None, y: SSAValue, name: str, c: int) -> SSAValue | None:
    """The [C] operand of `op` (mul by gamma, add of beta) whose other operand is y."""
    if _name(op) != name:
        return None
    assert op is not None
    a, b = op.operands[0], op.operands[1]
    other = b if a is y else a if b is y else None
    if other is None or shape(other) != (c,):
        return None
    if name == "torch.aten.add.Tensor" and scalar_constant(op.operands[2]) != 1.0:
        return None
    return other


MATCHER = Matcher("layer_norm (arithmetic)", anchors, match)

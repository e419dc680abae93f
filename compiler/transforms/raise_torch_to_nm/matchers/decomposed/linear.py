"""Linears as decomposed graphs spell them -> nm.linear.

    matmul(x [..., K], transpose(W [N, K])) [+ b]       ONNX MatMul (+ Add), Gemm
    mm(x [M, K], permute(W, [1, 0])) [+ b * 1]          torch.export's default table

The weight is a 2-D value read through a transpose / permute, so in PyTorch's [N, K]
orientation (the ONNX frontend stores a [K, N] weight as [N, K] behind a Transpose). The
bias is a [N] value added with alpha 1, possibly times a constant 1 (addmm's beta). Views
of x and of the result (flattening / unflattening leading dims) stay for the row
movement.
"""

from __future__ import annotations

from xdsl.ir import Operation, SSAValue

from nmc.compiler.dialects import nm
from nmc.compiler.dialects import torch as tt
from nmc.compiler.transforms.raise_torch_to_nm.framework import Group, Mapper, Matcher
from nmc.compiler.transforms.raise_torch_to_nm.matchers.decomposed.views import trace
from nmc.compiler.transforms.raise_torch_to_nm.reading import (
    Reject, const, only_user, owner, shape, swaps_last_two, verified,
)

_PRODUCTS = (tt.AtenMatmulOp, tt.AtenMmOp)


def _weight(product: Operation) -> tuple[SSAValue, Operation]:
    """W [N, K] and the transpose that reads it."""
    t = owner(product.operands[1])
    if t is None or not swaps_last_two(t) or len(shape(t.operands[0])) != 2:
        w = shape(product.operands[1])
        raise Reject(f"a matmul by {list(w)} that is not a linear layer's weight read "
                     f"through a transpose (x . W^T with W [N, K]) is not supported")
    verified(t)
    return t.operands[0], t


def _bias(product: Operation, n: int) -> tuple[Operation, SSAValue, list[Operation]] | None:
    """(the add, the bias value, the ops between) when the product's only user adds a
    [N] bias with alpha 1."""
    add = only_user(product.results[0])
    if not isinstance(add, tt.AtenAddTensorOp):
        return None
    verified(add)
    if const(add.alpha, "alpha") != 1:
        return None
    other = add.other if add.input is product.results[0] else add.input
    t = trace(other)
    if t.scale != 1.0 or shape(t.source) != (n,) or any(
            not hasattr(o, "operands") or o.results[0].type != t.source.type for o in t.ops):
        return None
    if shape(add.results[0]) != shape(product.results[0]):
        return None
    return add, t.source, t.ops


def match(product: Operation) -> Group:
    verified(product)
    x = product.operands[0]
    xs = shape(x)
    weight, wt = _weight(product)
    n, k = shape(weight)
    if not xs or xs[-1] != k:
        raise Reject(f"expected input [..., {k}], got {list(xs)}")
    ops: list[Operation] = [wt, product]
    root = product
    bias = None
    found = _bias(product, n)
    if found is not None:
        root, bias, between = found
        ops += [*between, root]

    def build(v: Mapper, layer: str) -> Operation:
        return nm.LinearOp(v(x), v(weight), None if bias is None else v(bias), layer)

    return Group(nm.LinearOp.KIND, tuple(ops), root, build, product)


MATCHER = Matcher("linear (decomposed)", lambda op: isinstance(op, _PRODUCTS), match)

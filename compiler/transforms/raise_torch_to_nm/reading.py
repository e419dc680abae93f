"""Reading the torch IR the matchers meet: types, shapes, constants, dims and neighbours.

Every reader raises `Reject` with the reason when the IR is not in a form nmc supports, so
a matcher reads as a straight line of expectations and its first failed one becomes the
reason reported with the op (see `plan.py`).
"""

from __future__ import annotations

from collections.abc import Callable

from xdsl.dialects.builtin import Float32Type, TensorType, UnregisteredOp
from xdsl.ir import Attribute, Operation, SSAValue
from xdsl.utils.exceptions import VerifyException

from nmc.compiler.dialects import nm
from nmc.compiler.dialects import torch as tt


class Reject(Exception):
    """A known op in a form nmc does not support; the message is the reason."""


class ModelError(Exception):
    """The model itself is wrong for nmc (not an unsupported op): a FrontendError."""


def op_name(op: Operation) -> str:
    if isinstance(op, UnregisteredOp):
        return op.op_name.data
    return op.name


def _fmt_type(t: Attribute) -> str:
    if isinstance(t, tt.ValueTensorType):
        shape = t.get_shape()
        dims = "*"
        if shape is not None:
            dims = "[" + ",".join("?" if d < 0 else str(d) for d in shape) + "]"
        return f"!torch.vtensor<{dims},{t.element_type or 'unk'}>"
    return str(t)


def convert_type(t: Attribute) -> TensorType[Float32Type]:
    """`!torch.vtensor<[d...],f32>` (static) -> `tensor<d...xf32>`; Reject otherwise."""
    if not isinstance(t, tt.ValueTensorType):
        raise Reject(f"expected a tensor, got {_fmt_type(t)}")
    if not isinstance(t.element_type, Float32Type):
        raise Reject(f"nmc supports f32 tensors only, got {_fmt_type(t)}")
    if not t.has_static_shape:
        raise Reject(f"nmc needs static shapes, got {_fmt_type(t)}")
    shape = t.get_shape()
    assert shape is not None
    return nm.f32_tensor(shape)


def shape(v: SSAValue) -> tuple[int, ...]:
    return tuple(convert_type(v.type).get_shape())


def const(v: SSAValue, what: str):  # noqa: ANN201 - python scalar or list
    try:
        return tt.constant_value(v)
    except ValueError:
        raise Reject(f"{what} must be a constant") from None


def ints(v: SSAValue, what: str) -> list[int]:
    value = const(v, what)
    if isinstance(value, int) and not isinstance(value, bool):
        return [value]
    if not isinstance(value, list) or not all(
        isinstance(x, int) and not isinstance(x, bool) for x in value
    ):
        raise Reject(f"{what} must be a list of integer constants, got {value!r}")
    return value


def int_const(v: SSAValue, what: str) -> int:
    value = const(v, what)
    if not isinstance(value, int) or isinstance(value, bool):
        raise Reject(f"{what} must be an integer constant, got {value!r}")
    return value


def norm_dim(d: int, rank: int) -> int:
    """A dim index normalised to [0, rank); Reject when out of range."""
    if not -rank <= d < rank:
        raise Reject(f"dim {d} is out of range for rank {rank}")
    return d % rank


def verified(op: Operation) -> None:
    """The op verifies and its results are static f32 tensors."""
    try:
        op.verify()
    except VerifyException as e:
        raise Reject(f"unexpected form ({' '.join(str(e).split())})") from None
    for r in op.results:
        convert_type(r.type)


def only_user(value: SSAValue) -> Operation | None:
    uses = list(value.uses)
    return uses[0].operation if len(uses) == 1 else None


def owner(value: SSAValue) -> Operation | None:
    """The op that defines `value` (None for a block argument)."""
    op = value.owner
    return op if isinstance(op, Operation) else None


def swaps_last_two(op: Operation | None) -> bool:
    """transpose(-2, -1) / permute(..., -1, -2) of a rank >= 2 tensor."""
    return _swaps(op, lambda r: (r - 2, r - 1), min_rank=2)


def swaps_1_2(op: Operation | None) -> bool:
    """transpose(1, 2) / permute(0, 2, 1, ...) (swap dims 1 and 2, rank >= 3)."""
    return _swaps(op, lambda r: (1, 2), min_rank=3)


def _swaps(op: Operation | None, pair: Callable[[int], tuple[int, int]], min_rank: int
           ) -> bool:
    """Whether `op` is a transpose / permute of a rank >= min_rank tensor that swaps the
    dims `pair(rank)` and keeps the others in place."""
    if not isinstance(op, (tt.AtenTransposeIntOp, tt.AtenPermuteOp)):
        return False
    r = len(shape(op.input))
    if isinstance(op, tt.AtenTransposeIntOp):
        if r < min_rank:
            return False
        dims = {norm_dim(int_const(op.dim0, "dim0"), r), norm_dim(int_const(op.dim1, "dim1"), r)}
        return dims == set(pair(r))
    perm = [norm_dim(d, r) for d in ints(op.dims, "dims")]
    if r < min_rank:
        return False
    a, b = pair(r)
    swapped = list(range(r))
    swapped[a], swapped[b] = b, a
    return perm == swapped

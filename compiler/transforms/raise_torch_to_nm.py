"""raise-torch-to-nm: the imported torch-dialect module -> the nm dialect.

Single ops:

    torch.aten.linear        -> nm.linear      (bias optional)
    torch.aten.layer_norm    -> nm.layer_norm  (normalized_shape = [last dim], eps constant)
    torch.aten.gelu          -> nm.gelu        (approximate from its string constant)
    torch.aten.add.Tensor    -> nm.add         (alpha == 1; one operand may broadcast to the
                                                other over leading dims, see nm.add)

Patterns (what torch.export + `run_decompositions({})` + the torch-mlir import make of a
timm / nmc DeiT):

    conv2d(x, w, b, stride = kernel = p, padding 0, dilation 1, groups 1)
      -> view [B, D, HW/p^2] -> transpose(1, 2)               -> nm.patch_embed
    cat([a, b, ...], dim) (dim < rank - 1)                     -> nm.concat
    expand / broadcast_to([1, ...] -> [B, ...])                -> nm.concat of B copies
                                                                  along axis 0 (layer kind
                                                                  "expand"); an expand to
                                                                  its own shape (batch 1) is
                                                                  a no-op
    view [B, N, 3, H, hd] of qkv [B, N, 3C] -> permute(2, 0, 3, 1, 4) -> select(0, 0/1/2)
      = q, k, v, then either scaled_dot_product_attention(q, k, v) (no mask, no dropout,
      not causal, scale default or constant) or matmul(softmax(matmul(q * s, k.transpose(-2,
      -1)), -1), v) (the scale as mul.Scalar / div.Scalar on q or on the scores, or none),
      then transpose(1, 2) -> view [B, N, C]                   -> nm.attention(qkv)
    squeeze(slice(x, 1, i, i + 1), 1), or select(x, 1, i), x [B, N, D]
                                                               -> nm.select (x[:, i])
    the explicit attention with an additive term before the softmax, softmax(q @ k^T *
      scale + bias) (bias [G, heads, N, N] or a suffix of it: Swin)
                                                               -> nm.attention(qkv, bias)
    conv2d -> permute(0, 2, 3, 1) (NHWC tokens, Swin)          -> nm.patch_embed + nm.reshape
    mean.dim(x, [1 .. rank-2]) (global average pooling)        -> nm.mean
    chains of view / reshape / flatten / permute / transpose / roll that keep rows (the
      last dim, or a multiple of it) whole, not claimed by the patterns above
                                                               -> one nm.permute_rows (row
                                                                  index composed with numpy,
                                                                  `movement_rows`) or
                                                                  nm.reshape (rows in place)
                                                                  per value read by others

Reshapes, slices and expands to the operand's own shape and clone / alias / detach /
contiguous are no-ops. Every other op, and any op of a pattern that does not match in
full (the anchor of a partial match, e.g. the sdpa or the conv2d, carries the reason), is
reported as unsupported. An image size the patch does not divide is a `FrontendError`
("input 225x225 is not divisible by patch 16 at patch_embed.proj").

`!torch.vtensor<[...],f32>` becomes `tensor<...xf32>`. Arguments of `@main` that carry the
`nm.param = "<state_dict key>"` argument attribute (set by the frontend) are replaced by
`nm.param {name = "<key>"}` ops, so `@main` afterwards takes only the user inputs; unused
parameters are dropped. Torch constants and lists are removed once unused.

Every compute op gets a unique `layer` name from the module path of the ops it came from
(for a pattern, the common prefix of their paths: `blocks.0.attn`, `patch_embed`; see
`assign_layer_names`). Anything that cannot be raised is collected first and reported in a
single `UnsupportedOpsError` listing each op with its module path and source line. After the
pass the module holds only builtin, func and nm ops, and verifies.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np

from xdsl.context import Context
from xdsl.dialects.builtin import (
    ArrayAttr,
    DictionaryAttr,
    Float32Type,
    FunctionType,
    ModuleOp,
    StringAttr,
    TensorType,
    UnregisteredOp,
)
from xdsl.dialects.func import FuncOp, ReturnOp
from xdsl.ir import Attribute, Operation, SSAValue
from xdsl.passes import ModulePass
from xdsl.utils.exceptions import VerifyException

from nmc.compiler.dialects import nm
from nmc.compiler.dialects import torch as tt
from nmc.compiler.errors import FrontendError, UnsupportedOp, UnsupportedOpsError
from nmc.compiler.dialects.nm import PARAM_ARG_ATTR
from nmc.compiler.frontend.locations import location_info

_CONVERTIBLE = (tt.AtenLinearOp, tt.AtenLayerNormOp, tt.AtenGeluOp, tt.AtenAddTensorOp)
_PASSIVE = (*tt.CONSTANT_OPS, tt.PrimListConstructOp)
_KIND: dict[type[Operation], str] = {
    tt.AtenLinearOp: nm.LinearOp.KIND,
    tt.AtenLayerNormOp: nm.LayerNormOp.KIND,
    tt.AtenGeluOp: nm.GeluOp.KIND,
    tt.AtenAddTensorOp: nm.AddOp.KIND,
}
# Value-semantics no-ops (unmodelled, recognised by name): result = first operand.
_IDENTITY_OP_NAMES = frozenset(
    {"torch.aten.clone", "torch.aten.alias", "torch.aten.detach", "torch.aten.contiguous"}
)


class _Reject(Exception):
    """A known op in a form nmc does not support; the message is the reason."""


def _op_name(op: Operation) -> str:
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
    """`!torch.vtensor<[d...],f32>` (static) -> `tensor<d...xf32>`; _Reject otherwise."""
    if not isinstance(t, tt.ValueTensorType):
        raise _Reject(f"expected a tensor, got {_fmt_type(t)}")
    if not isinstance(t.element_type, Float32Type):
        raise _Reject(f"nmc supports f32 tensors only, got {_fmt_type(t)}")
    if not t.has_static_shape:
        raise _Reject(f"nmc needs static shapes, got {_fmt_type(t)}")
    shape = t.get_shape()
    assert shape is not None
    return nm.f32_tensor(shape)


def _shape(v: SSAValue) -> tuple[int, ...]:
    return tuple(convert_type(v.type).get_shape())


def _const(v: SSAValue, what: str):  # noqa: ANN202 - python scalar or list
    try:
        return tt.constant_value(v)
    except ValueError:
        raise _Reject(f"{what} must be a constant") from None


class _ModelError(Exception):
    """The model itself is wrong for nmc (not an unsupported op): a FrontendError."""


def _ints(v: SSAValue, what: str) -> list[int]:
    value = _const(v, what)
    if isinstance(value, int) and not isinstance(value, bool):
        return [value]
    if not isinstance(value, list) or not all(
        isinstance(x, int) and not isinstance(x, bool) for x in value
    ):
        raise _Reject(f"{what} must be a list of integer constants, got {value!r}")
    return value


def _int(v: SSAValue, what: str) -> int:
    value = _const(v, what)
    if not isinstance(value, int) or isinstance(value, bool):
        raise _Reject(f"{what} must be an integer constant, got {value!r}")
    return value


def _dim(d: int, rank: int) -> int:
    """A dim index normalised to [0, rank); _Reject when out of range."""
    if not -rank <= d < rank:
        raise _Reject(f"dim {d} is out of range for rank {rank}")
    return d % rank


def _verified(op: Operation) -> None:
    try:
        op.verify()
    except VerifyException as e:
        raise _Reject(f"unexpected form ({' '.join(str(e).split())})") from None
    for r in op.results:
        convert_type(r.type)


def _path(op: Operation) -> str:
    return location_info(op.location)[0]


def _common_path(paths: Sequence[str]) -> str:
    """The longest common dotted prefix (`blocks.0.attn.qkv`, `blocks.0.attn` -> the
    latter)."""
    split = [p.split(".") if p else [] for p in paths]
    if not split:
        return ""
    common: list[str] = []
    for parts in zip(*split):
        if any(x != parts[0] for x in parts):
            break
        common.append(parts[0])
    return ".".join(common)


def _only_user(value: SSAValue) -> Operation | None:
    uses = list(value.uses)
    return uses[0].operation if len(uses) == 1 else None


def _owner(value: SSAValue) -> Operation | None:
    owner = value.owner
    return owner if isinstance(owner, Operation) else None


def _swaps_last_two(op: Operation | None) -> bool:
    """transpose(-2, -1) / permute(..., -1, -2) of a rank >= 2 tensor."""
    if isinstance(op, tt.AtenTransposeIntOp):
        r = len(_shape(op.input))
        if r < 2:
            return False
        dims = {_dim(_int(op.dim0, "dim0"), r), _dim(_int(op.dim1, "dim1"), r)}
        return dims == {r - 2, r - 1}
    if isinstance(op, tt.AtenPermuteOp):
        r = len(_shape(op.input))
        dims = [_dim(d, r) for d in _ints(op.dims, "dims")]
        return r >= 2 and dims == [*range(r - 2), r - 1, r - 2]
    return False


def _swaps_1_2(op: Operation | None) -> bool:
    """transpose(1, 2) / permute(0, 2, 1, ...) (swap dims 1 and 2, rank >= 3)."""
    if isinstance(op, tt.AtenTransposeIntOp):
        r = len(_shape(op.input))
        if r < 3:
            return False
        return {_dim(_int(op.dim0, "dim0"), r), _dim(_int(op.dim1, "dim1"), r)} == {1, 2}
    if isinstance(op, tt.AtenPermuteOp):
        r = len(_shape(op.input))
        dims = [_dim(d, r) for d in _ints(op.dims, "dims")]
        return r >= 3 and dims == [0, 2, 1, *range(3, r)]
    return False


# ------------------------------------------------------------------------------ checks


def _check(op: Operation) -> None:
    """Raise _Reject(reason) when a single convertible torch op cannot be raised."""
    _verified(op)
    if isinstance(op, tt.AtenLinearOp):
        x, w = _shape(op.input), _shape(op.weight)
        if len(x) < 1 or len(w) != 2:
            raise _Reject(f"expected input [..., K] and weight [N, K], got {list(x)} and {list(w)}")
        if not isinstance(op.bias.type, tt.NoneType):
            _shape(op.bias)
    elif isinstance(op, tt.AtenLayerNormOp):
        x = _shape(op.input)
        normalized = _const(op.normalized_shape, "normalized_shape")
        if not x or normalized != [x[-1]]:
            raise _Reject(
                f"normalized_shape must be the last dim [{x[-1] if x else '?'}], "
                f"got {normalized}"
            )
        for label, v in (("weight", op.weight), ("bias", op.bias)):
            if isinstance(v.type, tt.NoneType):
                raise _Reject(
                    f"layer_norm without {label} (elementwise_affine=False) is not supported"
                )
            _shape(v)
        eps = _const(op.eps, "eps")
        if not isinstance(eps, (int, float)):
            raise _Reject(f"eps must be a float constant, got {eps!r}")
    elif isinstance(op, tt.AtenGeluOp):
        _shape(op.input)
        approximate = _const(op.approximate, "approximate")
        if approximate not in nm.GELU_APPROXIMATIONS:
            raise _Reject(f"approximate must be 'none' or 'tanh', got {approximate!r}")
    elif isinstance(op, tt.AtenAddTensorOp):
        a, b = _shape(op.input), _shape(op.other)
        alpha = _const(op.alpha, "alpha")
        if alpha != 1:
            raise _Reject(f"alpha must be 1, got {alpha!r}")
        if not (nm.broadcasts_to(b, a) or nm.broadcasts_to(a, b)):
            raise _Reject(
                f"operands {list(a)} and {list(b)}: one must have the other's shape or "
                f"broadcast to it over leading dims (its shape without leading 1s a suffix "
                f"of the other's); other broadcasts are not supported"
            )


def _build(op: Operation, v: Callable[[SSAValue], SSAValue], layer: str) -> Operation:
    if isinstance(op, tt.AtenLinearOp):
        bias = None if isinstance(op.bias.type, tt.NoneType) else v(op.bias)
        return nm.LinearOp(v(op.input), v(op.weight), bias, layer)
    if isinstance(op, tt.AtenLayerNormOp):
        eps = float(tt.constant_value(op.eps))  # type: ignore[arg-type]
        return nm.LayerNormOp(v(op.input), v(op.weight), v(op.bias), eps, layer)
    if isinstance(op, tt.AtenGeluOp):
        return nm.GeluOp(v(op.input), layer, str(tt.constant_value(op.approximate)))
    if isinstance(op, tt.AtenAddTensorOp):
        a, b = _shape(op.input), _shape(op.other)
        if nm.broadcasts_to(b, a):
            return nm.AddOp(v(op.input), v(op.other), layer)
        return nm.AddOp(v(op.other), v(op.input), layer)  # add commutes: broadcast the rhs
    raise AssertionError(f"not convertible: {op.name}")


# ---------------------------------------------------------------------------- patterns


Mapper = Callable[[SSAValue], SSAValue]


@dataclass(eq=False)
class _Group:
    """Torch ops replaced by one nm compute op, built where `root` is (its last op)."""

    kind: str  # the layer-name kind ("": no compute op, no layer name)
    ops: tuple[Operation, ...]
    root: Operation  # its result is replaced by the (last) nm op's result
    build: Callable[[Mapper, str], Operation | list[Operation]]
    loc_op: Operation  # the nm op takes its location

    @property
    def path(self) -> str:
        return _common_path([_path(o) for o in self.ops])


def _single(op: Operation) -> _Group:
    _check(op)
    return _Group(_KIND[type(op)], (op,), op, lambda v, layer: _build(op, v, layer), op)


def _match_patch_embed(conv: tt.AtenConv2dOp) -> _Group:
    _verified(conv)
    x, w = _shape(conv.input), _shape(conv.weight)
    if len(x) != 4 or len(w) != 4:
        raise _Reject(f"expected input [B, Cin, H, W] and weight [D, Cin, p, p], got "
                      f"{list(x)} and {list(w)}")
    stride = _ints(conv.stride, "stride")
    padding = _ints(conv.padding, "padding")
    dilation = _ints(conv.dilation, "dilation")
    groups = _int(conv.groups, "groups")
    p = w[2]
    if not (
        w[2] == w[3]
        and stride in ([p, p], [p])
        and all(d == 0 for d in padding)
        and all(d == 1 for d in dilation)
        and groups == 1
    ):
        raise _Reject(
            f"only the patch-embedding convolution is supported (a square p x p kernel, "
            f"stride p, no padding, dilation 1, groups 1); got kernel {w[2]}x{w[3]}, "
            f"stride {stride}, padding {padding}, dilation {dilation}, groups {groups}"
        )
    if x[2] % p or x[3] % p:
        path, source = location_info(conv.location)
        where = path or "<top level>"
        raise _ModelError(
            f"input {x[2]}x{x[3]} is not divisible by patch {p} at {where}"
            + (f" ({source})" if source else "")
            + ": the image size must be a multiple of the patch size"
        )
    if isinstance(conv.bias.type, tt.NoneType):
        raise _Reject("a patch-embedding convolution without bias is not supported")
    b, d, tokens = x[0], w[0], (x[2] // p) * (x[3] // p)
    flat = _only_user(conv.result)
    if isinstance(flat, tt.AtenPermuteOp) and [
            _dim(i, 4) for i in _ints(flat.dims, "dims")] == [0, 2, 3, 1]:
        # NHWC tokens (Swin): [B, H/p, W/p, D], the same data as [B, (H/p)(W/p), D]
        nhwc = flat
        return _Group(
            nm.PatchEmbedOp.KIND,
            (conv, nhwc),
            nhwc,
            lambda v, layer: [
                pe := nm.PatchEmbedOp(v(conv.input), v(conv.weight), v(conv.bias), p, layer),
                nm.ReshapeOp(pe.result, _shape(nhwc.result)),
            ],
            conv,
        )
    tr = _only_user(flat.results[0]) if isinstance(flat, tt.RESHAPE_OPS) else None
    if not (
        isinstance(flat, tt.RESHAPE_OPS)
        and _shape(flat.results[0]) == (b, d, tokens)
        and _swaps_1_2(tr)
        and _shape(tr.results[0]) == (b, tokens, d)  # type: ignore[union-attr]
    ):
        raise _Reject(
            "the patch-embedding convolution's output must go only through "
            "flatten(2).transpose(1, 2) (timm's PatchEmbed) or permute(0, 2, 3, 1) (NHWC)"
        )
    assert tr is not None
    return _Group(
        nm.PatchEmbedOp.KIND,
        (conv, flat, tr),
        tr,
        lambda v, layer: nm.PatchEmbedOp(v(conv.input), v(conv.weight), v(conv.bias), p, layer),
        conv,
    )


def _scalar_factor(op: Operation | None) -> float | None:
    """The factor of a mul.Scalar / div.Scalar by a constant, else None."""
    if isinstance(op, (tt.AtenMulScalarOp, tt.AtenDivScalarOp)):
        _verified(op)
        c = _const(op.other, "the scale")
        if not isinstance(c, (int, float)) or isinstance(c, bool):
            raise _Reject(f"the attention scale must be a number, got {c!r}")
        if isinstance(op, tt.AtenMulScalarOp):
            return float(c)
        if c == 0:
            raise _Reject("division of the attention scores by 0")
        return 1.0 / float(c)
    return None


_HEAD_SPLIT = (
    "the q, k, v head split must be timm's: qkv [B, N, 3C] -> reshape [B, N, 3, heads, "
    "C/heads] -> permute(2, 0, 3, 1, 4) -> q, k, v = [0], [1], [2] (unbind)"
)


def _match_attention(core: Operation) -> _Group:
    """`core` is an sdpa, or the `attn @ v` matmul of the explicit form."""
    _verified(core)
    inner: list[Operation] = [core]
    bias: SSAValue | None = None
    if isinstance(core, tt.AtenScaledDotProductAttentionOp):
        what = "scaled_dot_product_attention"
        if _const(core.attn_mask, "attn_mask") is not None:
            raise _Reject(f"{what} with an attention mask is not supported")
        if _const(core.dropout_p, "dropout_p") not in (0, 0.0):
            raise _Reject(f"{what} with dropout is not supported (export in eval mode)")
        if _const(core.is_causal, "is_causal") not in (False, 0):
            raise _Reject(f"causal {what} is not supported")
        if _const(core.enable_gqa, "enable_gqa") not in (False, 0, None):
            raise _Reject(f"{what} with enable_gqa is not supported")
        scale_c = _const(core.scale, "scale")
        if scale_c is not None and (
            not isinstance(scale_c, (int, float)) or isinstance(scale_c, bool)
        ):
            raise _Reject(f"{what}: scale must be a number or None, got {scale_c!r}")
        q, k, v = core.query, core.key, core.value
        hd = _shape(q)[-1]
        scale = float(scale_c) if scale_c is not None else 1.0 / math.sqrt(hd)
    else:
        assert isinstance(core, tt.AtenMatmulOp)
        sm = _owner(core.input)
        if not isinstance(sm, tt.AtenSoftmaxIntOp):
            raise _Reject("not an attention pattern (softmax(q @ k^T * scale) @ v)")
        _verified(sm)
        rank = len(_shape(sm.input))
        if _dim(_int(sm.dim, "softmax dim"), rank) != rank - 1:
            raise _Reject("attention softmax must be over the last dim")
        if _const(sm.dtype, "softmax dtype") is not None:
            raise _Reject("attention softmax with a dtype is not supported")
        inner.append(sm)
        scale = 1.0
        scores = _owner(sm.input)
        if isinstance(scores, tt.AtenAddTensorOp):
            # an additive term of the scores (Swin: relative position bias + window mask)
            _verified(scores)
            if _const(scores.alpha, "alpha") != 1:
                raise _Reject("the attention bias add must have alpha 1")
            add = scores
            lhs, rhs = _owner(add.input), _owner(add.other)
            if isinstance(rhs, (tt.AtenMatmulOp, tt.AtenMulScalarOp, tt.AtenDivScalarOp)) \
                    and not isinstance(lhs, (tt.AtenMatmulOp, tt.AtenMulScalarOp,
                                             tt.AtenDivScalarOp)):
                score_value, bias = add.other, add.input
            else:
                score_value, bias = add.input, add.other
            if _shape(add.result) != _shape(score_value):
                raise _Reject("the attention bias must broadcast to the scores")
            inner.append(add)
            scores = _owner(score_value)
        factor = _scalar_factor(scores)
        if factor is not None:
            assert scores is not None
            scale *= factor
            inner.append(scores)
            scores = _owner(scores.input)  # type: ignore[union-attr]
        if not isinstance(scores, tt.AtenMatmulOp):
            raise _Reject("attention scores must be q @ k.transpose(-2, -1) (times a scale)")
        _verified(scores)
        inner.append(scores)
        q = scores.input
        q_scale = _owner(q)
        factor = _scalar_factor(q_scale)
        if factor is not None:
            assert q_scale is not None
            scale *= factor
            inner.append(q_scale)
            q = q_scale.input  # type: ignore[union-attr]
        kt = _owner(scores.other)
        if not _swaps_last_two(kt):
            raise _Reject("attention scores must be q @ k.transpose(-2, -1)")
        assert kt is not None
        _verified(kt)
        inner.append(kt)
        k = kt.input  # type: ignore[union-attr]
        v = core.other
        if not (math.isfinite(scale) and scale > 0):
            raise _Reject(f"the attention scale must be finite and > 0, got {scale}")

    # The head split: q, k, v = select(permute(reshape(qkv)), 0, 0 / 1 / 2).
    sels: list[tt.AtenSelectIntOp] = []
    for t in (q, k, v):
        sel = _owner(t)
        if not isinstance(sel, tt.AtenSelectIntOp):
            raise _Reject(_HEAD_SPLIT)
        _verified(sel)
        sels.append(sel)
    perm = _owner(sels[0].input)
    if any(s.input is not sels[0].input for s in sels) or not isinstance(perm, tt.AtenPermuteOp):
        raise _Reject(_HEAD_SPLIT)
    _verified(perm)
    pshape = _shape(perm.result)
    if len(pshape) != 5 or [_dim(d, 5) for d in _ints(perm.dims, "dims")] != [2, 0, 3, 1, 4]:
        raise _Reject(_HEAD_SPLIT)
    for i, s in enumerate(sels):
        if (_dim(_int(s.dim, "dim"), 5), _dim(_int(s.index, "index"), 3)) != (0, i):
            raise _Reject(_HEAD_SPLIT)
    split = _owner(perm.input)
    if not isinstance(split, tt.RESHAPE_OPS):
        raise _Reject(_HEAD_SPLIT)
    _verified(split)
    b, n, three, heads, hd = _shape(split.results[0])
    qkv = split.input
    c = heads * hd
    if three != 3 or _shape(qkv) != (b, n, 3 * c):
        raise _Reject(_HEAD_SPLIT + f"; got {list(_shape(qkv))} -> "
                      f"{list(_shape(split.results[0]))}")
    if _shape(v) != (b, heads, n, hd) or _shape(core.results[0]) != (b, heads, n, hd):
        raise _Reject(_HEAD_SPLIT)

    # The head merge: transpose(1, 2) -> reshape [B, N, C].
    merge_t = _only_user(core.results[0])
    merge = None
    if merge_t is not None and _swaps_1_2(merge_t):
        merge = _only_user(merge_t.results[0])
    if not (
        merge_t is not None
        and isinstance(merge, tt.RESHAPE_OPS)
        and _shape(merge.results[0]) == (b, n, c)
    ):
        raise _Reject(
            "the attention output must go only through transpose(1, 2).reshape(B, N, C) "
            "(heads merged back)"
        )
    if bias is not None:
        bshape = _shape(bias)
        if len(bshape) > 4 or len(bshape) < 2:
            raise _Reject(f"the attention bias {list(bshape)} must be [G, heads, N, N]")
        bshape = (1,) * (4 - len(bshape)) + bshape
        if bshape[1:] != (heads, n, n) or b % bshape[0]:
            raise _Reject(
                f"the attention bias must be [G, heads, N, N] = [G, {heads}, {n}, {n}] with "
                f"G dividing {b} (one [N, N] term per head, per window or for all), got "
                f"{list(_shape(bias))}"
            )
    bias_shape = None if bias is None else (1,) * (4 - len(_shape(bias))) + _shape(bias)

    def build(vmap: Mapper, layer: str) -> Operation | list[Operation]:
        if bias is None:
            return nm.AttentionOp(vmap(qkv), heads, scale, layer)
        bv = vmap(bias)
        ops: list[Operation] = []
        if _shape(bias) != bias_shape:
            ops.append(nm.ReshapeOp(bv, bias_shape))
            bv = ops[-1].results[0]
        return [*ops, nm.AttentionOp(vmap(qkv), heads, scale, layer, bv)]

    return _Group(
        nm.AttentionOp.KIND,
        (split, perm, *sels, *inner, merge_t, merge),
        merge,
        build,
        core,
    )


def _match_select(op: Operation) -> _Group:
    """x[:, i] of x [B, N, D]: squeeze(slice(x, 1, i, i+1), 1) or select(x, 1, i)."""
    _verified(op)
    usage = "only x[:, i] of a [B, N, D] tensor (class-token pooling) is supported"
    if isinstance(op, tt.AtenSelectIntOp):
        x = op.input
        ops: tuple[Operation, ...] = (op,)
        shape = _shape(x)
        if len(shape) != 3 or _dim(_int(op.dim, "dim"), 3) != 1:
            raise _Reject(usage)
        index = _dim(_int(op.index, "index"), shape[1])
    else:
        assert isinstance(op, tt.AtenSqueezeDimOp)
        sl = _owner(op.input)
        if not isinstance(sl, tt.AtenSliceTensorOp):
            raise _Reject(usage)
        _verified(sl)
        x = sl.input
        shape = _shape(x)
        if len(shape) != 3 or (
            _dim(_int(sl.dim, "dim"), 3),
            _dim(_int(op.dim, "dim"), 3),
        ) != (1, 1):
            raise _Reject(usage)
        if _shape(sl.result)[1] != 1 or _const(sl.step, "step") != 1:
            raise _Reject(usage)
        start = _const(sl.start, "start")
        start = 0 if start is None else start
        if not isinstance(start, int) or isinstance(start, bool):
            raise _Reject(f"slice start must be an integer constant, got {start!r}")
        index = start + shape[1] if start < 0 else start
        if not 0 <= index < shape[1]:
            raise _Reject(usage)
        ops = (sl, op)
    return _Group(
        nm.SelectOp.KIND,
        ops,
        op,
        lambda v, layer: nm.SelectOp(v(x), 1, index, layer),
        op,
    )


def _match_concat(cat: tt.AtenCatOp) -> _Group:
    _verified(cat)
    lst = _owner(cat.tensors)
    if not isinstance(lst, tt.PrimListConstructOp):
        raise _Reject("the tensors of cat must be a list built in the model")
    elems = list(lst.elements)
    shapes = [_shape(e) for e in elems]
    rank = len(_shape(cat.result))
    axis = _dim(_int(cat.dim, "dim"), rank)
    if not 0 <= axis < rank - 1:
        raise _Reject(f"concatenation along the last dim is not supported (dim {axis} of a "
                      f"rank-{rank} tensor)")
    if any(len(s) != rank for s in shapes):
        raise _Reject(f"cat of tensors of different ranks: {[list(s) for s in shapes]}")
    return _Group(
        nm.ConcatOp.KIND,
        (cat,),
        cat,
        lambda v, layer: nm.ConcatOp([v(e) for e in elems], axis, layer),
        cat,
    )


def _is_identity(op: Operation) -> SSAValue | None:
    """The operand that a no-op's result equals (same shape reshape / slice / expand,
    clone, ...), else None."""
    if isinstance(op, (*tt.RESHAPE_OPS, tt.AtenSliceTensorOp, *tt.EXPAND_OPS)):
        x = op.operands[0]
        if isinstance(x.type, tt.ValueTensorType) and x.type == op.results[0].type:
            if isinstance(op, tt.AtenSliceTensorOp) and _const(op.step, "step") != 1:
                return None
            return x
        return None
    if isinstance(op, UnregisteredOp) and op.op_name.data in _IDENTITY_OP_NAMES:
        if op.operands and len(op.results) == 1 and op.operands[0].type == op.results[0].type:
            return op.operands[0]
    return None


def _match_expand(ex: tt.AtenExpandOp | tt.AtenBroadcastToOp) -> _Group:
    _verified(ex)
    x, y = _shape(ex.input), _shape(ex.result)
    if not (len(x) == len(y) >= 2 and x[0] == 1 and x[1:] == y[1:]):
        raise _Reject(
            f"{_op_name(ex).removeprefix('torch.aten.')} is supported only along a leading "
            f"dim of size 1 (cls_token.expand(B, -1, -1)), got {list(x)} -> {list(y)}"
        )
    return _Group(
        "expand",
        (ex,),
        ex,
        lambda v, layer: nm.ConcatOp([v(ex.input)] * y[0], 0, layer),
        ex,
    )


def _is_attention_core(op: Operation) -> bool:
    return isinstance(op, tt.AtenScaledDotProductAttentionOp) or (
        isinstance(op, tt.AtenMatmulOp) and isinstance(_owner(op.input), tt.AtenSoftmaxIntOp)
    )


def _is_select(op: Operation) -> bool:
    """A select.int of a rank-3 tensor or a squeeze.dim of a slice.Tensor (x[:, i])."""
    if isinstance(op, tt.AtenSelectIntOp):
        t = op.input.type
        return isinstance(t, tt.ValueTensorType) and len(t.get_shape() or ()) == 3
    return isinstance(op, tt.AtenSqueezeDimOp) and isinstance(
        _owner(op.input), tt.AtenSliceTensorOp
    )


def _check_internal_uses(g: _Group) -> None:
    """Every result of a non-root op of the group is used only inside the group."""
    inside = set(g.ops)
    for o in g.ops:
        if o is g.root:
            continue
        for r in o.results:
            for use in r.uses:
                if use.operation not in inside:
                    raise _Reject(
                        f"the {g.kind} pattern's intermediate {_op_name(o)} is also used "
                        f"by {_op_name(use.operation)}"
                    )


def _match_mean(op: tt.AtenMeanDimOp) -> _Group:
    """x.mean(dim=(1, ..., rank-2)) of x [B, tokens..., C] (global average pooling)."""
    _verified(op)
    shape = _shape(op.input)
    r = len(shape)
    dims = sorted({_dim(d, r) for d in _ints(op.dim, "dim")}) if r else []
    if r < 3 or dims != list(range(1, r - 1)):
        raise _Reject(f"only the mean over the token dims 1..{r - 2} of a [B, tokens..., C] "
                      f"tensor is supported (global average pooling), got dims "
                      f"{_const(op.dim, 'dim')} of {list(shape)}")
    if _const(op.keepdim, "keepdim") not in (False, 0):
        raise _Reject("mean with keepdim=True is not supported")
    if _const(op.dtype, "dtype") is not None:
        raise _Reject("mean with a dtype is not supported")
    return _Group(nm.MeanOp.KIND, (op,), op, lambda v, layer: nm.MeanOp(v(op.input), layer), op)


# ------------------------------------------------------------- row permutations

# Data movement that keeps rows (the last dim) whole: folded into nm.permute_rows /
# nm.reshape when no other pattern has claimed it.
_MOVEMENT = (*tt.RESHAPE_OPS, tt.AtenPermuteOp, tt.AtenTransposeIntOp, tt.AtenRollOp)


def movement_rows(op: Operation, units: np.ndarray, unit: int) -> np.ndarray:
    """The rows of `op`'s result, given those of its input: `units` has the input's shape
    with its last dim counted in rows of `unit` words (entry = row of the chain's base
    tensor); the result is the same for the output. _Reject when the op splits rows."""
    x, y = _shape(op.operands[0]), _shape(op.results[0])
    r = len(x)
    if isinstance(op, tt.RESHAPE_OPS):
        if not y or y[-1] % unit:
            raise _Reject(f"a reshape {list(x)} -> {list(y)} that splits rows of {unit} is "
                          f"only supported as part of another pattern")
        return units.reshape(*y[:-1], y[-1] // unit)
    if isinstance(op, tt.AtenPermuteOp):
        dims = [_dim(d, r) for d in _ints(op.dims, "dims")]
        if dims[-1] != r - 1:
            raise _Reject(f"a permute {dims} that moves the last dim is only supported as "
                          f"part of another pattern")
        return units.transpose(dims)
    if isinstance(op, tt.AtenTransposeIntOp):
        d0, d1 = _dim(_int(op.dim0, "dim0"), r), _dim(_int(op.dim1, "dim1"), r)
        if r - 1 in (d0, d1) and d0 != d1:
            raise _Reject("a transpose of the last dim is only supported as part of another "
                          "pattern")
        return units.swapaxes(d0, d1)
    assert isinstance(op, tt.AtenRollOp)
    shifts, dims = _ints(op.shifts, "shifts"), _ints(op.dims, "dims")
    dims = [_dim(d, r) for d in dims]
    if len(shifts) != len(dims) or not dims:
        raise _Reject("roll needs one shift per dim (a roll of the flattened tensor is not "
                      "supported)")
    if r - 1 in dims:
        raise _Reject("a roll along the last dim is not supported")
    return np.roll(units, shifts, axis=dims)


def _plan_movements(ops: list[Operation], plan: _Plan, claimed: set[Operation],
                    reasons: dict[Operation, str]) -> None:
    """Compose the unclaimed chains of data-movement ops into one nm op per value that
    something else reads: nm.reshape when the rows stay in place, else nm.permute_rows."""

    def source(value: SSAValue) -> SSAValue:
        while (o := _owner(value)) is not None and o in plan.aliases:
            value = plan.aliases[o]
        return value

    forms: dict[Operation, tuple[SSAValue, np.ndarray, int, tuple[Operation, ...]]] = {}
    for op in ops:
        if op in claimed or not isinstance(op, _MOVEMENT):
            continue
        try:
            _verified(op)
            x = source(op.operands[0])
            owner = _owner(x)
            if owner in forms:
                base, units, unit, chain = forms[owner]
            else:
                shape = _shape(x)
                if not shape:
                    raise _Reject("a scalar cannot be reshaped into rows")
                base, unit, chain = x, shape[-1], ()
                units = np.arange(math.prod(shape[:-1])).reshape(*shape[:-1], 1)
            forms[op] = (base, movement_rows(op, units, unit), unit, (*chain, op))
        except _Reject as e:
            reasons.setdefault(op, str(e))

    def consumers(value: SSAValue):
        for use in value.uses:
            if use.operation in plan.aliases:
                yield from consumers(use.operation.results[0])
            else:
                yield use.operation

    for op, (base, units, unit, chain) in forms.items():
        claimed.add(op)
        if all(c in forms for c in consumers(op.results[0])):
            plan.aliases[op] = op.operands[0]  # read by other movement ops only: erased
            continue
        shape = _shape(op.results[0])
        rows = units.reshape(-1)
        if np.array_equal(rows, np.arange(rows.size)):  # the rows stay in place
            if shape == _shape(base):
                plan.aliases[op] = base
                continue
            plan.groups.append(_Group(
                "", chain, op, lambda v, _layer, b=base, s=shape: nm.ReshapeOp(v(b), s), op))
            continue
        plan.groups.append(_Group(
            nm.PermuteRowsOp.KIND, chain, op,
            lambda v, layer, b=base, r=rows.tolist(), s=shape: nm.PermuteRowsOp(
                v(b), r, s, layer),
            op))


# Matchers, in priority order: (applies to op?, matcher).
_MATCHERS: tuple[tuple[Callable[[Operation], bool], Callable[[Operation], _Group]], ...] = (
    (_is_attention_core, _match_attention),
    (lambda op: isinstance(op, tt.AtenConv2dOp), _match_patch_embed),  # type: ignore[arg-type]
    (_is_select, _match_select),
    (lambda op: isinstance(op, tt.AtenCatOp), _match_concat),  # type: ignore[arg-type]
    (lambda op: isinstance(op, tt.EXPAND_OPS), _match_expand),  # type: ignore[arg-type]
    (lambda op: isinstance(op, tt.AtenMeanDimOp), _match_mean),  # type: ignore[arg-type]
    (lambda op: isinstance(op, _CONVERTIBLE), _single),
)


@dataclass
class _Plan:
    """How one function is raised: the groups, the no-ops, what cannot be raised."""

    groups: list[_Group] = field(default_factory=list)
    aliases: dict[Operation, SSAValue] = field(default_factory=dict)
    problems: list[UnsupportedOp] = field(default_factory=list)
    model_errors: list[str] = field(default_factory=list)


def _problem(op: Operation, reason: str | None = None) -> UnsupportedOp:
    path, source = location_info(op.location)
    return UnsupportedOp(_op_name(op), path, source, reason)


def _plan(func: FuncOp) -> _Plan:
    plan = _Plan()
    ops = list(func.body.block.ops)
    claimed: set[Operation] = set()
    reasons: dict[Operation, str] = {}

    for op in ops:
        if op in claimed:
            continue
        try:
            alias = _is_identity(op)
        except _Reject:
            alias = None
        if alias is not None:
            plan.aliases[op] = alias
            claimed.add(op)

    for applies, matcher in _MATCHERS:
        for op in ops:
            if op in claimed or not applies(op):
                continue
            try:
                group = matcher(op)
                if any(o in claimed for o in group.ops):
                    raise _Reject("overlaps another recognised pattern")
                _check_internal_uses(group)
            except _Reject as e:
                reasons.setdefault(op, str(e))
                continue
            except _ModelError as e:
                plan.model_errors.append(str(e))
                claimed.add(op)
                continue
            plan.groups.append(group)
            claimed.update(group.ops)

    _plan_movements(ops, plan, claimed, reasons)
    plan.problems = _argument_problems(func)
    for op in ops:
        if op in claimed or isinstance(op, (ReturnOp, *_PASSIVE, *nm.COMPUTE_OPS, nm.ParamOp)):
            continue
        plan.problems.append(_problem(op, reasons.get(op)))
    return plan


def _argument_problems(func: FuncOp) -> list[UnsupportedOp]:
    problems: list[UnsupportedOp] = []
    params = _param_keys(func)
    names = _input_names(func)
    user_index = 0
    for i, arg in enumerate(func.body.block.args):
        if i in params:
            # Checked only when something could read it (an unused one is dropped).
            if arg.uses and not isinstance(arg.type, TensorType):
                try:
                    convert_type(arg.type)
                except _Reject as e:
                    problems.append(UnsupportedOp(f"parameter {params[i]!r}", "", None, str(e)))
            continue
        name = names[user_index] if user_index < len(names) else f"#{i}"
        user_index += 1
        if isinstance(arg.type, TensorType):  # already raised
            continue
        try:
            convert_type(arg.type)
        except _Reject as e:
            problems.append(UnsupportedOp(f"input {name!r}", "", None, str(e)))
    return problems


def collect_unsupported(func: FuncOp) -> list[UnsupportedOp]:
    """Every op of `func` that raise-torch-to-nm cannot convert, in program order."""
    return _plan(func).problems


# ------------------------------------------------------------------------- layer names


def assign_layer_names(entries: Sequence[tuple[str, str]]) -> list[str]:
    """Unique layer names for compute ops given (module path, kind) in program order.

    A path holding exactly one compute op names it (`fc1`); otherwise each gets
    `path.kind` (`blocks.0.add`), with `_1`, `_2`... on repeats (`blocks.0.add_1`). Ops at
    the top level (empty path) get the kind itself (`add`, `add_1`).
    """
    per_path = Counter(path for path, _ in entries)
    used: set[str] = {path for path, _ in entries if path and per_path[path] == 1}
    names: list[str] = []
    for path, kind in entries:
        if path and per_path[path] == 1:
            names.append(path)
            continue
        base = f"{path}.{kind}" if path else kind
        k = 0
        name = base
        while name in used:
            k += 1
            name = f"{base}_{k}"
        used.add(name)
        names.append(name)
    return names


# ----------------------------------------------------------------------------- rewrite


def _param_keys(func: FuncOp) -> dict[int, str]:
    keys: dict[int, str] = {}
    if func.arg_attrs is None:
        return keys
    for i, attrs in enumerate(func.arg_attrs.data):
        if isinstance(attrs, DictionaryAttr):
            key = attrs.data.get(PARAM_ARG_ATTR)
            if isinstance(key, StringAttr):
                keys[i] = key.data
    return keys


def _input_names(func: FuncOp) -> list[str]:
    names = func.attributes.get(nm.INPUT_NAMES_ATTR)
    if isinstance(names, ArrayAttr):
        return [n.data for n in names.data if isinstance(n, StringAttr)]
    return []


def _raise_func(func: FuncOp, plan: _Plan) -> None:
    block = func.body.block
    params = _param_keys(func)
    m: dict[SSAValue, SSAValue] = {}

    def v(x: SSAValue) -> SSAValue:
        return m.get(x, x)

    # Arguments: parameters -> nm.param ops, user inputs -> builtin tensor arguments.
    names = _input_names(func)
    user_index = 0
    old_args = list(block.args)
    first_op = block.first_op
    for i, arg in enumerate(old_args):
        if i in params:
            if not arg.uses:
                continue
            param = nm.ParamOp(params[i], tuple(convert_type(arg.type).get_shape()))
            if first_op is not None:
                block.insert_op_before(param, first_op)
            else:
                block.add_op(param)
            param.result.name_hint = params[i]
            m[arg] = param.result
        else:
            new_type = arg.type if isinstance(arg.type, TensorType) else convert_type(arg.type)
            new_arg = block.insert_arg(new_type, len(block.args), arg.location)
            new_arg.name_hint = arg.name_hint
            if user_index < len(names):
                new_arg.name_hint = names[user_index]
            user_index += 1
            m[arg] = new_arg

    # Compute ops, in program order (each where the last op of its group is).
    ops = list(block.ops)
    position = {op: i for i, op in enumerate(ops)}
    groups = sorted(plan.groups, key=lambda g: position[g.root])
    named = [g for g in groups if g.kind]  # nm.reshape groups (kind "") need no layer
    layers = dict(zip(named, assign_layer_names([(g.path, g.kind) for g in named])))
    by_root = {g.root: (g, layers.get(g, "")) for g in groups}
    for op in ops:
        if op in plan.aliases:
            m[op.results[0]] = v(plan.aliases[op])
            continue
        entry = by_root.get(op)
        if entry is None:
            continue
        group, layer = entry
        built = group.build(v, layer)
        news = built if isinstance(built, list) else [built]
        for new in news:
            new.location = group.loc_op.location
            block.insert_op_before(new, op)
            if "layer" in new.properties:
                new.results[0].name_hint = layer
        m[op.results[0]] = news[-1].results[0]

    ret = block.last_op
    assert isinstance(ret, ReturnOp)
    ret.operands = [v(x) for x in ret.operands]

    # Erase the torch ops, users before producers.
    converted = set(plan.aliases)
    for g in groups:
        converted.update(g.ops)
    for op in reversed(list(block.ops)):
        if op in converted or (
            isinstance(op, _PASSIVE) and not any(r.uses for r in op.results)
        ):
            block.erase_op(op)
    for arg in old_args:
        block.erase_arg(arg)

    func.function_type = FunctionType.from_lists(
        [a.type for a in block.args], [v.type for v in ret.operands]
    )
    func.arg_attrs = None


@dataclass(frozen=True)
class RaiseTorchToNm(ModulePass):
    """Raise the torch-mlir import to the nm dialect (see the module docstring)."""

    name: ClassVar[str] = "raise-torch-to-nm"

    def apply(self, ctx: Context, op: ModuleOp) -> None:
        funcs = [f for f in op.ops if isinstance(f, FuncOp)]
        plans = [_plan(func) for func in funcs]
        model_errors = [e for p in plans for e in p.model_errors]
        if model_errors:
            raise FrontendError("; ".join(model_errors))
        problems = [pr for p in plans for pr in p.problems]
        problems.extend(_problem(o) for o in op.ops if not isinstance(o, FuncOp))
        if problems:
            raise UnsupportedOpsError(problems)
        for func, plan in zip(funcs, plans):
            _raise_func(func, plan)
        op.verify()

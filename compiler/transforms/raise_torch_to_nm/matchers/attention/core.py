"""The attention core: softmax(q . k^T * scale [+ bias]) . v, in either form torch gives.

    scaled_dot_product_attention(q, k, v) (no mask, no dropout, not causal, scale default
      or constant)
    matmul(softmax(matmul(q * s, k.transpose(-2, -1)) [+ bias], -1), v) (timm's explicit
      form; the scale as mul.Scalar / div.Scalar on q or on the scores, or none; the bias
      an additive term before the softmax, Swin's relative position bias + window mask)

The anchor is the sdpa or the `attn @ v` matmul.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from xdsl.ir import Operation, SSAValue

from nmc.compiler.dialects import torch as tt
from nmc.compiler.transforms.raise_torch_to_nm.reading import (
    Reject, const, int_const, norm_dim, owner, shape, swaps_last_two, verified,
)

_SCALED = (tt.AtenMulScalarOp, tt.AtenDivScalarOp)


@dataclass
class AttentionCore:
    q: SSAValue
    k: SSAValue
    v: SSAValue
    scale: float
    bias: SSAValue | None  # the additive term of the scores
    ops: list[Operation]  # the anchor first


def anchors_attention(op: Operation) -> bool:
    return isinstance(op, tt.AtenScaledDotProductAttentionOp) or (
        isinstance(op, tt.AtenMatmulOp) and isinstance(owner(op.input), tt.AtenSoftmaxIntOp)
    )


def match_core(core: Operation) -> AttentionCore:
    verified(core)
    if isinstance(core, tt.AtenScaledDotProductAttentionOp):
        return _match_sdpa(core)
    assert isinstance(core, tt.AtenMatmulOp)
    return _match_explicit(core)


def _match_sdpa(core: tt.AtenScaledDotProductAttentionOp) -> AttentionCore:
    what = "scaled_dot_product_attention"
    if const(core.attn_mask, "attn_mask") is not None:
        raise Reject(f"{what} with an attention mask is not supported")
    if const(core.dropout_p, "dropout_p") not in (0, 0.0):
        raise Reject(f"{what} with dropout is not supported (export in eval mode)")
    if const(core.is_causal, "is_causal") not in (False, 0):
        raise Reject(f"causal {what} is not supported")
    if const(core.enable_gqa, "enable_gqa") not in (False, 0, None):
        raise Reject(f"{what} with enable_gqa is not supported")
    scale_c = const(core.scale, "scale")
    if scale_c is not None and (
        not isinstance(scale_c, (int, float)) or isinstance(scale_c, bool)
    ):
        raise Reject(f"{what}: scale must be a number or None, got {scale_c!r}")
    hd = shape(core.query)[-1]
    scale = float(scale_c) if scale_c is not None else 1.0 / math.sqrt(hd)
    return AttentionCore(core.query, core.key, core.value, scale, None, [core])


def _match_explicit(core: tt.AtenMatmulOp) -> AttentionCore:
    sm = owner(core.input)
    if not isinstance(sm, tt.AtenSoftmaxIntOp):
        raise Reject("not an attention pattern (softmax(q @ k^T * scale) @ v)")
    verified(sm)
    rank = len(shape(sm.input))
    if norm_dim(int_const(sm.dim, "softmax dim"), rank) != rank - 1:
        raise Reject("attention softmax must be over the last dim")
    if const(sm.dtype, "softmax dtype") is not None:
        raise Reject("attention softmax with a dtype is not supported")
    ops: list[Operation] = [core, sm]
    score_value, bias = _split_bias(sm.input, ops)
    score_value, scale = _peel_scale(score_value, ops)
    scores = owner(score_value)
    if not isinstance(scores, tt.AtenMatmulOp):
        raise Reject("attention scores must be q @ k.transpose(-2, -1) (times a scale)")
    verified(scores)
    ops.append(scores)
    q, q_factor = _peel_scale(scores.input, ops)
    scale *= q_factor
    kt = owner(scores.other)
    if not swaps_last_two(kt):
        raise Reject("attention scores must be q @ k.transpose(-2, -1)")
    assert kt is not None
    verified(kt)
    ops.append(kt)
    if not (math.isfinite(scale) and scale > 0):
        raise Reject(f"the attention scale must be finite and > 0, got {scale}")
    return AttentionCore(q, kt.input, core.other, scale, bias, ops)  # type: ignore[attr-defined]


def _split_bias(value: SSAValue, ops: list[Operation]) -> tuple[SSAValue, SSAValue | None]:
    """(scores, bias) of scores + bias (Swin: relative position bias + window mask), the
    add appended to `ops`; (value, None) when `value` is not such an add."""
    add = owner(value)
    if not isinstance(add, tt.AtenAddTensorOp):
        return value, None
    verified(add)
    if const(add.alpha, "alpha") != 1:
        raise Reject("the attention bias add must have alpha 1")
    lhs, rhs = owner(add.input), owner(add.other)
    scored = (tt.AtenMatmulOp, *_SCALED)  # what computes the scores
    if isinstance(rhs, scored) and not isinstance(lhs, scored):
        score_value, bias = add.other, add.input
    else:
        score_value, bias = add.input, add.other
    if shape(add.result) != shape(score_value):
        raise Reject("the attention bias must broadcast to the scores")
    ops.append(add)
    return score_value, bias


def _peel_scale(value: SSAValue, ops: list[Operation]) -> tuple[SSAValue, float]:
    """(x, s) when `value` is x * s or x / (1/s) by a constant (the op appended to `ops`),
    else (value, 1.0)."""
    op = owner(value)
    if not isinstance(op, _SCALED):
        return value, 1.0
    verified(op)
    c = const(op.other, "the scale")
    if not isinstance(c, (int, float)) or isinstance(c, bool):
        raise Reject(f"the attention scale must be a number, got {c!r}")
    if isinstance(op, tt.AtenDivScalarOp) and c == 0:
        raise Reject("division of the attention scores by 0")
    ops.append(op)
    return op.input, float(c) if isinstance(op, tt.AtenMulScalarOp) else 1.0 / float(c)


def check_bias(bias: SSAValue, batch: int, heads: int, n: int) -> tuple[int, int, int, int]:
    """The bias's shape padded to [G, heads, N, N]; Reject unless G divides the batch."""
    return check_bias_dims(shape(bias), batch, heads, n)


def check_bias_dims(bshape: tuple[int, ...], batch: int, heads: int, n: int
                    ) -> tuple[int, int, int, int]:
    """`check_bias` of a bias of shape `bshape`."""
    if len(bshape) > 4 or len(bshape) < 2:
        raise Reject(f"the attention bias {list(bshape)} must be [G, heads, N, N]")
    padded = (1,) * (4 - len(bshape)) + bshape
    if padded[1:] != (heads, n, n) or batch % padded[0]:
        raise Reject(
            f"the attention bias must be [G, heads, N, N] = [G, {heads}, {n}, {n}] with "
            f"G dividing {batch} (one [N, N] term per head, per window or for all), got "
            f"{list(bshape)}"
        )
    return padded  # type: ignore[return-value]

"""Attention in any spelling of its views: softmax(q . k^T * s [+ bias]) . v, where q, k
and v are views of one qkv tensor [B, N, 3C] (rows B*N of 3C) -> nm.attention.

The anchor is the `probs . v` product (matmul or bmm) or an sdpa. q, k^T and v are traced
back (`views.trace`) through any view ops and constant scalings to their common source;
their element maps must be those of timm's split, `qkv.reshape(B, N, 3, H, hd).permute(2,
0, 3, 1, 4)`, whatever ops computed them (ONNX: three transposes, slice + squeeze, k^T as
reshape/transpose/reshape; torch.export's decomposition: views around bmm; PyTorch's
MultiheadAttention at batch 1: unflatten/transpose/squeeze/view). The scale is the
product of every constant factor on q, on k^T and on the scores (so sqrt(s) on each of q
and k^T, as torch's ONNX export writes sdpa, is s). After the product, the views up to
the merged [B, N, C] (heads back in place, any ops) are part of the group too.
"""

from __future__ import annotations

import math

import numpy as np
from xdsl.ir import Operation, SSAValue

from nmc.compiler.dialects import nm
from nmc.compiler.dialects import torch as tt
from nmc.compiler.transforms.raise_torch_to_nm.framework import Group, Mapper, Matcher
from nmc.compiler.transforms.raise_torch_to_nm.matchers.attention.core import (
    check_bias_dims, match_core,
)
from nmc.compiler.transforms.raise_torch_to_nm.matchers.decomposed.softmax import softmax_input
from nmc.compiler.transforms.raise_torch_to_nm.matchers.decomposed.views import (
    apply_view, forward_views, trace,
)
from nmc.compiler.transforms.raise_torch_to_nm.reading import (
    Reject, const, owner, shape, verified,
)

_PRODUCTS = (tt.AtenMatmulOp, tt.AtenBmmOp)
USAGE = ("q, k and v must be views of one qkv tensor [B, N, 3C] split as "
         "qkv.reshape(B, N, 3, heads, C/heads).permute(2, 0, 3, 1, 4)")


def anchors(op: Operation) -> bool:
    if isinstance(op, tt.AtenScaledDotProductAttentionOp):
        return True
    if not isinstance(op, _PRODUCTS):
        return False
    try:
        return softmax_input(trace(op.operands[0], scales=False).source) is not None
    except Reject:
        return True  # a softmax in a form it refuses: let match say why


def _explicit(anchor: Operation, ops: list[Operation]
              ) -> tuple[SSAValue, SSAValue, SSAValue, float, SSAValue | None]:
    probs = trace(anchor.operands[0], scales=False)
    soft = softmax_input(probs.source)
    if soft is None:
        raise Reject("not an attention pattern (softmax(q @ k^T * scale) @ v)")
    x, soft_ops = soft
    ops += [anchor, *probs.ops, *soft_ops]
    scores_t = trace(x)
    ops += scores_t.ops
    scale = scores_t.scale
    bias = None
    add = owner(scores_t.source)
    if isinstance(add, tt.AtenAddTensorOp):
        if scale != 1.0:
            raise Reject("a scale after the attention bias add is not supported (nm.attention "
                         "adds the bias to the scaled scores)")
        if const(add.alpha, "alpha") != 1:
            raise Reject("the attention bias add must have alpha 1")
        lhs, rhs = trace(add.input), trace(add.other)
        first = owner(lhs.source)
        product, bias = (lhs, add.other) if isinstance(first, _PRODUCTS) else (rhs, add.input)
        for t in (scores_t, product):  # the bias is read in the scores' element order
            m = t.element_map().reshape(-1)
            if not np.array_equal(m, np.arange(m.size)):
                raise Reject("the views around the attention bias add must keep the "
                             "scores' element order (reshapes only)")
        ops += [add, *product.ops]
        scale *= product.scale
        scores = owner(product.source)
    else:
        scores = add
    if not isinstance(scores, _PRODUCTS):
        raise Reject("attention scores must be q @ k^T (times a scale)")
    verified(scores)
    ops.append(scores)
    return scores.operands[0], scores.operands[1], anchor.operands[1], scale, bias


def match(anchor: Operation) -> Group:
    verified(anchor)
    ops: list[Operation] = []
    if isinstance(anchor, tt.AtenScaledDotProductAttentionOp):
        core = match_core(anchor)  # the sdpa's own checks
        q, k, v, scale, bias = core.q, core.k, core.v, core.scale, None
        ops += core.ops
        k_transposed = False
    else:
        q, k, v, scale, bias = _explicit(anchor, ops)
        k_transposed = True
    tq, tk, tv = trace(q), trace(k), trace(v)
    scale *= tq.scale * tk.scale * tv.scale
    qkv = tq.source
    if tk.source is not qkv or tv.source is not qkv:
        raise Reject(USAGE + " (they come from different tensors)")
    qkv_shape = shape(qkv)
    out_shape = shape(anchor.results[0])
    n, hd = out_shape[-2], out_shape[-1]
    three_c = qkv_shape[-1] if qkv_shape else 0
    rows = math.prod(qkv_shape[:-1]) if qkv_shape else 0
    if three_c % 3 or (three_c // 3) % hd or n == 0 or rows % n:
        raise Reject(USAGE + f"; got qkv {list(qkv_shape)}, head output {list(out_shape)}")
    c = three_c // 3
    heads, b = c // hd, rows // n
    if math.prod(out_shape[:-2]) != b * heads:
        raise Reject(USAGE + f"; got qkv {list(qkv_shape)}, head output {list(out_shape)}")
    maps = [t.element_map().reshape(-1) for t in (tq, tk, tv)]
    seq_first = False
    if not _split_matches(maps, b, n, heads, hd, k_transposed, seq_first):
        seq_first = b > 1 and _split_matches(maps, b, n, heads, hd, k_transposed, True)
        if not seq_first:
            raise Reject(USAGE + " (q, k or v is another view of it)")
    if abs(scale * math.sqrt(hd) - 1.0) < 1e-6:
        scale = 1.0 / math.sqrt(hd)  # sqrt(s) on q and k rounded in f32: s is meant
    if not (math.isfinite(scale) and scale > 0):
        raise Reject(f"the attention scale must be finite and > 0, got {scale}")
    bias_shape = None if bias is None else _bias_shape(bias, b, heads, n)
    merge, root = _merge(anchor, b, heads, n, hd, seq_first)
    group_ops = list(dict.fromkeys([*tq.ops, *tk.ops, *tv.ops, *ops, *merge]))
    root_shape = shape(root.results[0])

    def build(vmap: Mapper, layer: str) -> Operation | list[Operation]:
        built: list[Operation] = []
        bv = None
        if bias is not None:
            bv = vmap(bias)
            if shape(bias) != bias_shape:
                built.append(nm.ReshapeOp(bv, bias_shape))
                bv = built[-1].results[0]
        src = vmap(qkv)
        if seq_first:  # rows (token, image) -> (image, token), and back after
            built.append(nm.PermuteRowsOp(src, _transposed_rows(b, n), (b, n, three_c),
                                          f"{layer}.qkv_rows"))
            src = built[-1].results[0]
        elif qkv_shape != (b, n, three_c):
            built.append(nm.ReshapeOp(src, (b, n, three_c)))
            src = built[-1].results[0]
        built.append(nm.AttentionOp(src, heads, scale, layer, bv))
        if seq_first:
            built.append(nm.PermuteRowsOp(built[-1].results[0], _transposed_rows(n, b),
                                          root_shape, f"{layer}.out_rows"))
        elif root_shape != (b, n, c):
            built.append(nm.ReshapeOp(built[-1].results[0], root_shape))
        return built

    return Group(nm.AttentionOp.KIND, tuple(group_ops), root, build, anchor)


def _split_matches(maps: list[np.ndarray], b: int, n: int, heads: int, hd: int,
                   k_transposed: bool, seq_first: bool) -> bool:
    """q, k, v (element maps into qkv) are timm's split of qkv, whose rows are (image,
    token), or (token, image) when `seq_first` (PyTorch's MultiheadAttention without
    batch_first runs its in-projection on [N, B, E])."""
    idx = np.arange(b * n * 3 * heads * hd)
    split = (idx.reshape(n, b, 3, heads, hd).transpose(2, 1, 3, 0, 4) if seq_first
             else idx.reshape(b, n, 3, heads, hd).transpose(2, 0, 3, 1, 4))
    wants = (split[0], split[1].transpose(0, 1, 3, 2) if k_transposed else split[1], split[2])
    return all(m.size == w.size and np.array_equal(m, w.reshape(-1))
               for m, w in zip(maps, wants))


def _transposed_rows(outer: int, inner: int) -> list[int]:
    """Rows of an [inner, outer] row grid read as [outer, inner]: result row (o, i) is
    input row i * outer + o."""
    return [i * outer + o for o in range(outer) for i in range(inner)]


def _bias_shape(bias: SSAValue, b: int, heads: int, n: int) -> tuple[int, int, int, int]:
    """The bias as nm.attention takes it, [G, heads, N, N]. A bias added in a view of the
    scores with more leading dims ([1, windows, heads, N, N], Swin's shifted windows) is
    the same data: the views around the add only reshape (`_explicit` checks)."""
    dims = shape(bias)
    while len(dims) > 4 and dims[0] == 1:
        dims = dims[1:]
    if len(dims) > 4:
        raise Reject(f"the attention bias {list(shape(bias))} must be [G, heads, N, N]")
    return check_bias_dims(dims, b, heads, n)


def _merge(anchor: Operation, b: int, heads: int, n: int, hd: int, seq_first: bool
           ) -> tuple[list[Operation], Operation]:
    """The views after the product up to the heads merged back ([B, N, C] data, or
    [N, B, C] when `seq_first`), and the op whose result that is."""
    out = np.arange(b * heads * n * hd).reshape(b, heads, n, hd)
    want = (out.transpose(2, 0, 1, 3) if seq_first else out.transpose(0, 2, 1, 3)).reshape(-1)
    m = np.arange(b * heads * n * hd).reshape(shape(anchor.results[0]))
    chain: list[Operation] = []
    for op in forward_views(anchor.results[0]):
        m = apply_view(op, m)
        chain.append(op)
        if m.shape[-1] == heads * hd and np.array_equal(m.reshape(-1), want):
            return chain, op
    raise Reject("the attention output must be merged back to [B, N, heads * head_dim] "
                 "(transpose(1, 2).reshape(B, N, C), in any views)")


MATCHER = Matcher("attention (decomposed)", anchors, match)

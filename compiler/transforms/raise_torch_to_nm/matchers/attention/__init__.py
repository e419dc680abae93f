"""Attention: the core (core.py), with the head split before it (head_split.py) and the
head merge after it (head_merge.py) folded in -> nm.attention(qkv[, bias]).

`nm.attention` reads q, k and v of a head as 2-D strided blocks of qkv and writes the
merged [B, N, C] result (the input of `proj`), so the split and the merge cost nothing.
"""

from __future__ import annotations

from xdsl.ir import Operation

from nmc.compiler.dialects import nm
from nmc.compiler.transforms.raise_torch_to_nm.framework import Group, Mapper, Matcher
from nmc.compiler.transforms.raise_torch_to_nm.matchers.attention.core import (
    anchors_attention, check_bias, match_core,
)
from nmc.compiler.transforms.raise_torch_to_nm.matchers.attention.head_merge import match_head_merge
from nmc.compiler.transforms.raise_torch_to_nm.matchers.attention.head_split import match_head_split
from nmc.compiler.transforms.raise_torch_to_nm.reading import shape


def match_attention(anchor: Operation) -> Group:
    core = match_core(anchor)
    out = anchor.results[0]
    split = match_head_split(core.q, core.k, core.v, out)
    merge_t, merge = match_head_merge(out, (split.batch, split.tokens, split.channels))
    bias = core.bias
    bias_shape = None if bias is None else check_bias(bias, split.batch, split.heads,
                                                      split.tokens)
    reshape_bias = bias is not None and shape(bias) != bias_shape  # to [G, heads, N, N]

    def build(v: Mapper, layer: str) -> Operation | list[Operation]:
        if bias is None:
            return nm.AttentionOp(v(split.qkv), split.heads, core.scale, layer)
        ops: list[Operation] = []
        bv = v(bias)
        if reshape_bias:
            ops.append(nm.ReshapeOp(bv, bias_shape))
            bv = ops[-1].results[0]
        return [*ops, nm.AttentionOp(v(split.qkv), split.heads, core.scale, layer, bv)]

    return Group(
        nm.AttentionOp.KIND,
        (*split.ops, *core.ops, merge_t, merge),
        merge,
        build,
        anchor,
    )


MATCHER = Matcher("attention", anchors_attention, match_attention)

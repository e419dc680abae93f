"""The pattern families raise-torch-to-nm recognises, one module each, in priority order.

An op claimed by an earlier family is not offered to a later one: attention first (its
head split holds selects and reshapes that the select family and the row movement would
otherwise take), the one-to-one ops last (an add inside an attention's scores belongs to
the attention). Data movement not claimed by any family is composed afterwards
(`movement.py`).

Adding a family: write a module with a `MATCHER = Matcher(name, anchors, match)` whose
`match(anchor)` returns a `Group` (the torch ops it claims and how to build the nm op) or
raises `Reject(reason)`, and put it in `MATCHERS` below. A new op converted one to one is a
row of `single.ONE_TO_ONE` instead.
"""

from __future__ import annotations

from nmc.compiler.transforms.raise_torch_to_nm.framework import Matcher
from nmc.compiler.transforms.raise_torch_to_nm.matchers import (
    attention, concat, expand, mean, patch_embed, select, single,
)
from nmc.compiler.transforms.raise_torch_to_nm.matchers.decomposed import (
    attention as decomposed_attention, gelu as decomposed_gelu,
    layer_norm as decomposed_layer_norm, layer_norm_arith, linear as decomposed_linear,
    patch_conv, select as decomposed_select,
)

MATCHERS: tuple[Matcher, ...] = (
    attention.MATCHER,
    decomposed_attention.MATCHER,  # after the exact forms: it would take them too
    patch_embed.MATCHER,
    patch_conv.MATCHER,
    decomposed_linear.MATCHER,
    decomposed_layer_norm.MATCHER,
    layer_norm_arith.MATCHER,  # before mean: it reads mean.dim over the last dim
    decomposed_gelu.MATCHER,
    decomposed_select.MATCHER,
    select.MATCHER,
    concat.MATCHER,
    expand.MATCHER,
    mean.MATCHER,
    single.MATCHER,
)

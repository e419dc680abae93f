"""The patch embedding when its convolution is `aten.convolution` (ONNX Conv, or conv2d
after decomposition), with the token layout reached by any views.

    convolution(x, w, b, stride = kernel = p, no padding, not transposed)
      -> views whose result holds the tokens in order, D features each ([B, HW/p^2, D]:
         flatten(2).transpose(1, 2), or NHWC [B, H/p, W/p, D]: permute(0, 2, 3, 1) or the
         two transposes ONNX's Transpose becomes)          -> nm.patch_embed (+ nm.reshape)

The views are read by their element map (`views.py`), like the attention's.
"""

from __future__ import annotations

import numpy as np
from xdsl.ir import Operation

from nmc.compiler.dialects import nm
from nmc.compiler.dialects import torch as tt
from nmc.compiler.transforms.raise_torch_to_nm.framework import Group, Mapper, Matcher, anchored_by
from nmc.compiler.transforms.raise_torch_to_nm.matchers.decomposed.views import (
    apply_view, forward_views,
)
from nmc.compiler.transforms.raise_torch_to_nm.matchers.patch_embed import _check_patch_conv
from nmc.compiler.transforms.raise_torch_to_nm.reading import Reject, const, shape, verified
from nmc.compiler.refusals import REFUSALS


def _token_views(conv: tt.AtenConvolutionOp) -> list[Operation]:
    """The views after the convolution up to the first value that holds its tokens in
    order ([B, T, D] data, D last)."""
    b, d, h, w = shape(conv.result)
    m = np.arange(b * d * h * w).reshape(b, d, h, w)
    want = m.reshape(b, d, h * w).transpose(0, 2, 1).reshape(-1)
    chain: list[Operation] = []
    for op in forward_views(conv.result):
        m = apply_view(op, m)
        chain.append(op)
        if m.shape[-1] == d and np.array_equal(m.reshape(-1), want):
            return chain
    raise Reject("the patch-embedding convolution's output must be viewed as tokens "
                 "(flatten(2).transpose(1, 2), or permuted to NHWC)")


def match(conv: tt.AtenConvolutionOp) -> Group:
    verified(conv)
    if len(shape(conv.input)) != 4:
        raise Reject(REFUSALS["torch.aten.convolution"])
    if const(conv.transposed, "transposed") not in (False, 0):
        raise Reject("a transposed convolution is not supported")
    if any(const(conv.output_padding, "output_padding") or []):
        raise Reject("a convolution with output padding is not supported")
    p = _check_patch_conv(conv)  # type: ignore[arg-type] - the same operand names
    chain = _token_views(conv)
    root = chain[-1]
    b, d, h, w = shape(conv.result)
    root_shape = shape(root.results[0])
    x, weight, bias = conv.input, conv.weight, conv.bias

    def build(v: Mapper, layer: str) -> list[Operation]:
        pe = nm.PatchEmbedOp(v(x), v(weight), v(bias), p, layer)
        if root_shape == (b, h * w, d):
            return [pe]
        return [pe, nm.ReshapeOp(pe.result, root_shape)]

    return Group(nm.PatchEmbedOp.KIND, (conv, *chain), root, build, conv)


MATCHER = Matcher("patch_embed (convolution)", anchored_by(tt.AtenConvolutionOp), match)

"""The patch embedding when its convolution is `aten.convolution` (ONNX Conv, or conv2d
after decomposition): the same pattern as `patch_embed`, once the convolution is checked
to be a plain (not transposed) 2-D one."""

from __future__ import annotations

from nmc.compiler.dialects import torch as tt
from nmc.compiler.transforms.raise_torch_to_nm.framework import Group, Matcher, anchored_by
from nmc.compiler.transforms.raise_torch_to_nm.matchers.patch_embed import match_patch_embed
from nmc.compiler.transforms.raise_torch_to_nm.reading import Reject, const, verified


def match(conv: tt.AtenConvolutionOp) -> Group:
    verified(conv)
    if const(conv.transposed, "transposed") not in (False, 0):
        raise Reject("a transposed convolution is not supported")
    output_padding = const(conv.output_padding, "output_padding")
    if any(output_padding or []):
        raise Reject("a convolution with output padding is not supported")
    return match_patch_embed(conv)  # type: ignore[arg-type] - the same operand names


MATCHER = Matcher("patch_embed (convolution)", anchored_by(tt.AtenConvolutionOp), match)

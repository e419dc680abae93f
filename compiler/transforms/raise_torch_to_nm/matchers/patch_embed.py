"""The patch embedding: a conv2d with stride = kernel = p, and the flatten that follows.

    conv2d(x, w, b, stride = kernel = p, padding 0, dilation 1, groups 1)
      -> view [B, D, HW/p^2] -> transpose(1, 2)        -> nm.patch_embed (timm's PatchEmbed)
    conv2d -> permute(0, 2, 3, 1) (NHWC tokens, Swin)   -> nm.patch_embed + nm.reshape

An image size the patch does not divide is a `ModelError` ("input 225x225 is not divisible
by patch 16 at patch_embed.proj").
"""

from __future__ import annotations

from nmc.compiler.dialects import nm
from nmc.compiler.dialects import torch as tt
from nmc.compiler.frontend.locations import location_info
from nmc.compiler.transforms.raise_torch_to_nm.framework import Group, Mapper, Matcher, anchored_by
from nmc.compiler.transforms.raise_torch_to_nm.reading import (
    ModelError, Reject, int_const, ints, norm_dim, only_user, shape, swaps_1_2, verified,
)


def _check_patch_conv(conv: tt.AtenConv2dOp) -> int:
    """The patch size p of a patch-embedding conv2d."""
    x, w = shape(conv.input), shape(conv.weight)
    if len(x) != 4 or len(w) != 4:
        raise Reject(f"expected input [B, Cin, H, W] and weight [D, Cin, p, p], got "
                     f"{list(x)} and {list(w)}")
    stride = ints(conv.stride, "stride")
    padding = ints(conv.padding, "padding")
    dilation = ints(conv.dilation, "dilation")
    groups = int_const(conv.groups, "groups")
    p = w[2]
    if not (
        w[2] == w[3]
        and stride in ([p, p], [p])
        and all(d == 0 for d in padding)
        and all(d == 1 for d in dilation)
        and groups == 1
    ):
        raise Reject(
            f"only the patch-embedding convolution is supported (a square p x p kernel, "
            f"stride p, no padding, dilation 1, groups 1); got kernel {w[2]}x{w[3]}, "
            f"stride {stride}, padding {padding}, dilation {dilation}, groups {groups}"
        )
    if x[2] % p or x[3] % p:
        path, source = location_info(conv.location)
        where = path or "<top level>"
        raise ModelError(
            f"input {x[2]}x{x[3]} is not divisible by patch {p} at {where}"
            + (f" ({source})" if source else "")
            + ": the image size must be a multiple of the patch size"
        )
    if isinstance(conv.bias.type, tt.NoneType):
        raise Reject("a patch-embedding convolution without bias is not supported")
    return p


def match_patch_embed(conv: tt.AtenConv2dOp) -> Group:
    verified(conv)
    p = _check_patch_conv(conv)

    x_value, weight, bias = conv.input, conv.weight, conv.bias

    def patch_embed(v: Mapper, layer: str) -> nm.PatchEmbedOp:
        return nm.PatchEmbedOp(v(x_value), v(weight), v(bias), p, layer)

    x, w = shape(conv.input), shape(conv.weight)
    b, d, tokens = x[0], w[0], (x[2] // p) * (x[3] // p)
    flat = only_user(conv.result)
    if isinstance(flat, tt.AtenPermuteOp) and [
            norm_dim(i, 4) for i in ints(flat.dims, "dims")] == [0, 2, 3, 1]:
        # NHWC tokens (Swin): [B, H/p, W/p, D], the same data as [B, (H/p)(W/p), D]
        nhwc_shape = shape(flat.result)
        return Group(
            nm.PatchEmbedOp.KIND,
            (conv, flat),
            flat,
            lambda v, layer: [
                pe := patch_embed(v, layer),
                nm.ReshapeOp(pe.result, nhwc_shape),
            ],
            conv,
        )
    tr = only_user(flat.results[0]) if isinstance(flat, tt.RESHAPE_OPS) else None
    if not (
        isinstance(flat, tt.RESHAPE_OPS)
        and shape(flat.results[0]) == (b, d, tokens)
        and swaps_1_2(tr)
        and shape(tr.results[0]) == (b, tokens, d)  # type: ignore[union-attr]
    ):
        raise Reject(
            "the patch-embedding convolution's output must go only through "
            "flatten(2).transpose(1, 2) (timm's PatchEmbed) or permute(0, 2, 3, 1) (NHWC)"
        )
    assert tr is not None
    return Group(nm.PatchEmbedOp.KIND, (conv, flat, tr), tr, patch_embed, conv)


MATCHER = Matcher("patch_embed", anchored_by(tt.AtenConv2dOp), match_patch_embed)

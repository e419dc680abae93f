"""The head merge after the attention core: transpose(1, 2) -> reshape [B, N, C]."""

from __future__ import annotations

from xdsl.ir import Operation, SSAValue

from nmc.compiler.dialects import torch as tt
from nmc.compiler.transforms.raise_torch_to_nm.reading import Reject, only_user, shape, swaps_1_2


def match_head_merge(out: SSAValue, merged_shape: tuple[int, int, int]
                     ) -> tuple[Operation, Operation]:
    """(the transpose, the reshape) that merge the heads of `out` into `merged_shape`; the
    reshape's result is the attention's."""
    merge_t = only_user(out)
    merge = None
    if merge_t is not None and swaps_1_2(merge_t):
        merge = only_user(merge_t.results[0])
    if not (
        merge_t is not None
        and isinstance(merge, tt.RESHAPE_OPS)
        and shape(merge.results[0]) == merged_shape
    ):
        raise Reject(
            "the attention output must go only through transpose(1, 2).reshape(B, N, C) "
            "(heads merged back)"
        )
    return merge_t, merge

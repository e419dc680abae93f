"""SparseViT window activation pruning (Chen et al., arXiv 2303.17605), the PyTorch reference.

What a block with keep ratio r < 1 computes (models/swin.py wires it into the Swin blocks):

1. Token magnitude: mean of |x| over channels, [B, H, W], taken from the *input of the first
   pruned block of the stage* (`token_magnitude`). Scores are computed once per stage
   (../shared/METHODS.md); later blocks of the stage reuse these magnitudes.
2. Window score: the L2 norm of the token magnitudes inside a window, on the window grid of
   the block, i.e. after the cyclic shift for shifted blocks (`rank_windows`). A stage has at
   most two grids (plain and shifted), so it has at most two rankings, each computed the
   first time a pruned block needs it; later blocks with the same grid keep a *prefix* of
   that ranking, so kept sets are nested. This is what SparseViT's public code does
   (mit-han-lab/sparsevit, mmdet/models/backbones/sparsevit.py: one `act_mag` per stage,
   `w_index` / `shift_w_index` cut to a prefix by later blocks).
3. Keep the best `num_kept(r, windows) = max(1, ceil(r * windows))` windows. METHODS.md says
   int(windows * (1 - sparsity)); nmc follows the issue (ceil: a ratio never keeps fewer
   windows than asked for). Keep ratios must not increase within a stage ("sparsity never
   decreases within a stage"), which `resolve_keep` checks.
4. Ties: windows are ranked by a stable descending sort of the scores, so equal scores keep
   the lower window index first (row-major window order of the grid). The prefix of length k
   is torch.topk(scores, k) with that tie rule made explicit (topk leaves it unspecified).
5. The kept windows are gathered (`gather_windows`, with their slices of the shift mask,
   `gather_mask`; the relative position bias is the same for every window), LN1 -> window
   attention -> residual -> LN2 -> MLP -> residual run on them only, and the results are
   scattered back (`scatter_windows`) so pruned windows pass their input through unchanged.
   Window reverse, roll back and patch merging stay dense.

A keep ratio of 1.0 is the dense block itself (bit-identical: the dense code path runs).
"""

from __future__ import annotations

import math
from typing import Mapping, Sequence, Union

import torch

from nmc.models.errors import ModelError

# a ratio for every block, one per block in order, or block name -> ratio (others keep 1.0)
KeepSpec = Union[float, Sequence[float], Mapping[str, float], None]


def num_kept(keep: float, num_windows: int) -> int:
    """Windows a block with keep ratio `keep` runs on: ceil(keep * windows), at least 1.

    The product is rounded to 9 decimals first, so 0.3 * 10 (3.0000000000000004 in binary
    floating point) keeps 3 windows, not 4.
    """
    return max(1, math.ceil(round(keep * num_windows, 9)))


def token_magnitude(x: torch.Tensor) -> torch.Tensor:
    """[B, H, W, C] -> [B, H, W]: mean |x| over channels (SparseViT's activation magnitude)."""
    return x.abs().mean(dim=-1)


def rank_windows(mag_windows: torch.Tensor) -> torch.Tensor:
    """Token magnitudes per window [B, nW, N] -> window indices [B, nW], best first.

    Score = L2 norm of the window's magnitudes; a stable descending sort breaks ties towards
    the lower window index, so every prefix is a deterministic top-k.
    """
    scores = torch.linalg.vector_norm(mag_windows, ord=2, dim=-1)
    return torch.sort(scores, dim=1, descending=True, stable=True).indices


def gather_windows(windows: torch.Tensor, kept: torch.Tensor) -> torch.Tensor:
    """windows [B, nW, N, C], kept [B, k] -> the kept windows [B, k, N, C], in `kept` order."""
    _, _, n, c = windows.shape
    return torch.gather(windows, 1, kept[:, :, None, None].expand(-1, -1, n, c))


def scatter_windows(windows: torch.Tensor, kept: torch.Tensor,
                    values: torch.Tensor) -> torch.Tensor:
    """`windows` [B, nW, N, C] with window kept[b, i] replaced by values[b, i] (out of place);
    the other windows are returned unchanged."""
    _, _, n, c = windows.shape
    return torch.scatter(windows, 1, kept[:, :, None, None].expand(-1, -1, n, c), values)


def gather_mask(mask: torch.Tensor, kept: torch.Tensor) -> torch.Tensor:
    """The shift mask [nW, N, N] of each kept window: [B, k, N, N]."""
    return mask[kept]


def resolve_keep(stages: Sequence[Sequence[str]], ratios: KeepSpec) -> dict[str, float]:
    """Keep ratio of every block (names grouped by stage, in order) from a `KeepSpec`.

    Raises ModelError for an unknown block name, a list of the wrong length, a ratio outside
    (0, 1], or ratios that increase within a stage (the kept sets must be nested).
    """
    names = [n for stage in stages for n in stage]
    if ratios is None:
        per_block = {n: 1.0 for n in names}
    elif isinstance(ratios, Mapping):
        unknown = sorted(set(ratios) - set(names))
        if unknown:
            raise ModelError(f"window keep ratios name unknown blocks {', '.join(unknown)} "
                             f"(blocks: {names[0]} ... {names[-1]})")
        per_block = {n: ratios.get(n, 1.0) for n in names}
    elif isinstance(ratios, (int, float)):
        per_block = {n: ratios for n in names}
    else:
        ratios = list(ratios)
        if len(ratios) != len(names):
            raise ModelError(f"{len(ratios)} window keep ratios for {len(names)} blocks "
                             f"(give one per block, a single float, or a dict by block name)")
        per_block = dict(zip(names, ratios))
    for name, r in per_block.items():
        _check_ratio(name, r)
    for stage in stages:
        _check_nested([(n, per_block[n]) for n in stage])
    return {n: float(r) for n, r in per_block.items()}


def _check_ratio(name: str, r: object) -> None:
    # bool is an int: True would silently mean "keep everything"
    if isinstance(r, bool) or not isinstance(r, (int, float)) or not 0.0 < r <= 1.0:
        raise ModelError(f"{name}: window keep ratio {r!r} must be a number in (0, 1]")


def _check_nested(stage: list[tuple[str, float]]) -> None:
    """Within a stage a later block keeps a prefix of an earlier ranking: ratios must not grow."""
    for (prev, rp), (name, r) in zip(stage, stage[1:]):
        if r > rp:
            raise ModelError(
                f"{name}: window keep ratio {r} is larger than {rp} of {prev}; within a stage "
                f"keep ratios must not increase (SparseViT keeps nested window sets)"
            )

"""SparseViT's window keep rule, shared by the compiler and the PyTorch reference
(models/window_prune.py): how many windows a keep ratio keeps, and which ratios are valid.

- `num_kept(r, windows) = max(1, ceil(r * windows))`. METHODS.md says
  int(windows * (1 - sparsity)); nmc follows the issue (ceil: a ratio never keeps fewer
  windows than asked for).
- Keep ratios lie in (0, 1] and must not increase within a stage ("sparsity never
  decreases within a stage": a later block keeps a prefix of an earlier block's ranking,
  so the kept window sets are nested), which `resolve_keep` checks.

Torch-free, so the compiler (window-prune, the SparseViT search) uses it without the
reference models.
"""

from __future__ import annotations

import math
from typing import Mapping, Sequence, Union

from nmc.common.errors import NmcError

KeepSpec = Union[float, Sequence[float], Mapping[str, float], None]
"""A ratio for every block, one per block in order, or block name -> ratio (others keep 1.0)."""


class KeepRatioError(NmcError):
    """Window keep ratios that name unknown blocks, miscount them, lie outside (0, 1] or
    increase within a stage."""


def num_kept(keep: float, num_windows: int) -> int:
    """Windows a block with keep ratio `keep` runs on: ceil(keep * windows), at least 1.

    The product is rounded to 9 decimals first, so 0.3 * 10 (3.0000000000000004 in binary
    floating point) keeps 3 windows, not 4.
    """
    return max(1, math.ceil(round(keep * num_windows, 9)))


def resolve_keep(stages: Sequence[Sequence[str]], ratios: KeepSpec) -> dict[str, float]:
    """Keep ratio of every block (names grouped by stage, in order) from a `KeepSpec`.

    Raises KeepRatioError for an unknown block name, a list of the wrong length, a ratio
    outside (0, 1], or ratios that increase within a stage (the kept sets must be nested).
    """
    names = [n for stage in stages for n in stage]
    if ratios is None:
        per_block = {n: 1.0 for n in names}
    elif isinstance(ratios, Mapping):
        unknown = sorted(set(ratios) - set(names))
        if unknown:
            raise KeepRatioError(f"window keep ratios name unknown blocks "
                                 f"{', '.join(unknown)} (blocks: {names[0]} ... {names[-1]})")
        per_block = {n: ratios.get(n, 1.0) for n in names}
    elif isinstance(ratios, (int, float)):
        per_block = {n: ratios for n in names}
    else:
        ratios = list(ratios)
        if len(ratios) != len(names):
            raise KeepRatioError(f"{len(ratios)} window keep ratios for {len(names)} blocks "
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
        raise KeepRatioError(f"{name}: window keep ratio {r!r} must be a number in (0, 1]")


def _check_nested(stage: list[tuple[str, float]]) -> None:
    """Within a stage a later block keeps a prefix of an earlier ranking: ratios must not grow."""
    for (prev, rp), (name, r) in zip(stage, stage[1:]):
        if r > rp:
            raise KeepRatioError(
                f"{name}: window keep ratio {r} is larger than {rp} of {prev}; within a stage "
                f"keep ratios must not increase (SparseViT keeps nested window sets)"
            )

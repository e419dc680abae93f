"""SparseViT's window keep rule, shared by the compiler and the PyTorch reference
(models/window_prune.py): how many windows a keep ratio keeps, and which ratios are valid.

The rule is SparseViT's own (mit-han-lab/sparsevit, mmdet/models/backbones/sparsevit.py,
`BasicLayer.forward`):

- `num_kept(r, windows) = floor(r * windows)`: SparseViT's `int(nW * (1 - p))` with the
  pruning ratio p = 1 - r. Keep 0.3 of 16 windows keeps 4; 0.9 of 4 keeps 3.
- A block that keeps 0 windows is skipped: its output is its input (SparseViT gathers no
  window, so the residual passes everything through). The reference returns the input,
  the compiler removes the block, the search's latency model counts nothing for it.
- Keep ratios lie in (0, 1] and must not increase among the blocks of a stage that share a
  grid parity: the even (plain-window) blocks, and the odd (shifted-window) blocks.
  SparseViT keeps one ranking per parity (`w_index`, `shift_w_index`), cut by every later
  block of that parity to a prefix (`assert res_nW <= w_index.shape[1]`), so each parity's
  kept window sets are nested; across parities ratios may rise (0.75/0.5/0.75/0.5 is
  valid). `resolve_keep` checks it, on ratios (SparseViT's assert compares window counts:
  ratios that rise but floor to the same count pass there, not here).

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
    increase within a stage's grid parity."""


def num_kept(keep: float, num_windows: int) -> int:
    """Windows a block with keep ratio `keep` runs on: floor(keep * windows), SparseViT's
    rule; 0 means the block is skipped.

    The product is rounded to 9 decimals first, so 0.29 * 100 (28.999999999999996 in
    binary floating point) keeps 29 windows, as the decimal ratio means, not 28.
    """
    return math.floor(round(keep * num_windows, 9))


def resolve_keep(stages: Sequence[Sequence[str]], ratios: KeepSpec) -> dict[str, float]:
    """Keep ratio of every block (names grouped by stage, in order) from a `KeepSpec`.

    Raises KeepRatioError for an unknown block name, a list of the wrong length, a ratio
    outside (0, 1], or ratios that increase among a stage's even or odd blocks (each
    parity's kept sets must be nested).
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
        for parity in parities(stage):
            _check_nested([(n, per_block[n]) for n in parity])
    return {n: float(r) for n, r in per_block.items()}


def parities(stage: Sequence[str]) -> tuple[Sequence[str], Sequence[str]]:
    """A stage's blocks by grid parity: the even (plain-window) blocks and the odd
    (shifted-window) ones, each in order. SparseViT ranks and nests each separately."""
    return stage[0::2], stage[1::2]


def _check_ratio(name: str, r: object) -> None:
    # bool is an int: True would silently mean "keep everything"
    if isinstance(r, bool) or not isinstance(r, (int, float)) or not 0.0 < r <= 1.0:
        raise KeepRatioError(f"{name}: window keep ratio {r!r} must be a number in (0, 1]")


def _check_nested(parity: list[tuple[str, float]]) -> None:
    """A later block of a parity keeps a prefix of an earlier one's ranking: ratios must
    not grow."""
    for (prev, rp), (name, r) in zip(parity, parity[1:]):
        if r > rp:
            raise KeepRatioError(
                f"{name}: window keep ratio {r} is larger than {rp} of {prev}; within a stage "
                f"keep ratios must not increase among the plain-window (even) blocks nor "
                f"among the shifted-window (odd) blocks (SparseViT keeps nested window sets "
                f"per grid)"
            )

"""window-prune: SparseViT window pruning of Swin blocks (issue 6).

    nmc compile swin.pt --window-keep 0.5            # every block keeps half its windows
    nmc compile swin.pt --window-keep keep.json      # {"layers.1.blocks.0": 0.6, ...}
    nmc compile swin.pt --window-keep sparsevit:latency=0.6   # searched ratios

The pass finds the Swin blocks and rewrites each to run on its kept windows
(compiler/sparsity/window_rewrite.py, shared with the search, describes the rewrite).
Ratios come from `nmc.common.window_keep.resolve_keep` (per block, non-increasing among a
stage's even blocks and among its odd ones: SparseViT's rule, which the PyTorch reference,
models/window_prune.py, shares), so the compiled program and the reference prune the same
windows, or from the search of `sparsevit:latency=L` (compiler/sparsity/window_search.py).
A block keeps floor(r * windows) windows; one that keeps none is removed.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from xdsl.context import Context
from xdsl.dialects.builtin import ModuleOp

from nmc.common.json_strict import parse_json
from nmc.common.window_keep import KeepRatioError, resolve_keep
from nmc.compiler.dialects.nm_attrs import set_window_keep
from nmc.compiler.sparsity.window_rewrite import (
    SwinBlock, WindowPruneError, apply_ratios, padded_blocks, stages_of, swin_blocks,
)
from nmc.compiler.sparsity.window_search import searched_ratios
from nmc.compiler.transforms.target_option import TargetedPass


SEARCH_PREFIX = "sparsevit:latency="


def parse_keep(spec: str):
    """A --window-keep value: a ratio, a JSON file {block: ratio} (or a list), or
    ("search", L) for sparsevit:latency=L."""
    if not spec.strip():
        raise WindowPruneError(f"--window-keep {spec!r}: empty; expected a keep ratio in "
                               "(0, 1], FILE.json or sparsevit:latency=L")
    if spec.startswith("sparsevit:"):
        try:
            fraction = float(spec.removeprefix(SEARCH_PREFIX))
        except ValueError:
            fraction = -1.0
        if not spec.startswith(SEARCH_PREFIX) or not 0.0 < fraction <= 1.0:
            raise WindowPruneError(
                f"--window-keep {spec!r}: expected sparsevit:latency=L with L in (0, 1], the "
                f"modelled latency budget as a fraction of the dense model's")
        return ("search", fraction)
    try:
        ratio = float(spec)
    except ValueError:
        ratio = None
    if ratio is not None:
        if not 0.0 < ratio <= 1.0:
            raise WindowPruneError(f"--window-keep {spec}: a keep ratio must be in (0, 1]")
        return ratio
    path = Path(spec)
    if path.is_dir():
        raise WindowPruneError(f"--window-keep {spec!r}: a directory, not a ratio in (0, 1] "
                               "or a JSON file")
    if not path.exists():
        raise WindowPruneError(
            f"--window-keep {spec!r}: not a ratio in (0, 1] and no such file (give a number "
            f"like 0.5, or a JSON file mapping block names such as \"layers.0.blocks.1\" "
            f"to ratios)")
    try:
        value = parse_json(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise WindowPruneError(f"--window-keep {spec}: cannot read it as JSON ({e})") from None
    if not isinstance(value, (dict, list)):
        raise WindowPruneError(f"--window-keep {spec}: expected an object {{block: ratio}} "
                               f"or a list of ratios, got {type(value).__name__}")
    return value


def keep_ratios(blocks: list[SwinBlock], spec) -> dict[str, float]:
    try:
        return resolve_keep(stages_of(blocks), spec)
    except KeepRatioError as e:
        raise WindowPruneError(f"--window-keep: {e}") from None


@dataclass(frozen=True)
class WindowPrune(TargetedPass):
    """Prune the windows of Swin blocks (SparseViT); `keep`: a ratio or a JSON file of
    ratios per block (empty: no pruning)."""

    name = "window-prune"

    keep: str = ""
    out: str = ""
    calib: str = ""

    def apply(self, ctx: Context, op: ModuleOp) -> None:
        self.check_target(op)  # a uniform keep uses no target
        if not self.keep:
            return
        padded = padded_blocks(op)
        if padded:
            raise WindowPruneError(
                f"--window-keep: {', '.join(padded[:3])}{' ...' if len(padded) > 3 else ''} "
                f"({len(padded)} blocks) pad their feature map to a multiple of "
                "the window (an image size the window does not divide); window pruning of "
                "padded Swin blocks is not supported: use a size the window divides (e.g. "
                "224 for window 7)")
        blocks = swin_blocks(op)
        if not blocks:
            raise WindowPruneError(
                "--window-keep: the model has no Swin blocks (layer_norm 'norm1' -> window "
                "partition -> attention -> window reverse -> residual -> MLP -> residual)")
        spec = parse_keep(self.keep)
        if isinstance(spec, tuple):
            ratios = searched_ratios(op, blocks, spec[1], self.calib,
                                     self.target_for(op))
        else:
            ratios = keep_ratios(blocks, spec)
        apply_ratios(blocks, ratios)
        op.verify()  # the rewritten blocks' shapes (e.g. an attention bias per window)
        set_window_keep(op, ratios)
        if self.out:
            from nmc.common.fileio import atomic_write_bytes

            atomic_write_bytes(Path(self.out), (json.dumps(ratios, indent=2) + "\n").encode())

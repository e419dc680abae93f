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
3. Keep the best `num_kept(r, windows)` = floor(r * windows) windows (SparseViT's
   int(nW * (1 - p))) and check the ratios with `resolve_keep` (nmc.common.window_keep: the
   rule the compiler shares; ratios must not increase among a stage's even blocks, nor
   among its odd ones). A block that keeps 0 windows is skipped: its output is its input.
4. Ties: windows are ranked by a stable descending sort of the scores, so equal scores keep
   the lower window index first (row-major window order of the grid); the emulator's
   `topk` instruction sorts the same way, so the compiled program keeps the same windows.
   SparseViT calls torch.topk(scores, k), whose order among equal scores is unspecified
   (it depends on the device and the implementation): on ties the two may keep different
   windows. Real activations rarely tie exactly; N:M masks follow the same stable rule
   (models/nm_sparsity.py).
5. The kept windows are gathered (`gather_windows`, with their slices of the shift mask,
   `gather_mask`; the relative position bias is the same for every window), LN1 -> window
   attention -> residual -> LN2 -> MLP -> residual run on them only, and the results are
   scattered back (`scatter_windows`) so pruned windows pass their input through unchanged.
   Window reverse, roll back and patch merging stay dense.

A keep ratio of 1.0 is the dense block itself (bit-identical: the dense code path runs).
"""

from __future__ import annotations

import torch

# The keep rule (how many windows a ratio keeps, which ratios are valid) is shared with
# the compiler, which must not import this torch module: its home is nmc.common.window_keep.
from nmc.common.window_keep import KeepSpec, num_kept, resolve_keep  # noqa: F401


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

"""Swin Transformer (Liu et al. 2021): timm's `swin_transformer.SwinTransformer` in plain
PyTorch, with SparseViT window pruning (models/window_prune.py) as an option per block.

Layout and names are those of timm >= 0.9 (NHWC activations, patch merging at the *start* of
stages 1..), so a timm `state_dict` loads with strict=True:

    patch_embed.proj.{weight [D, Cin, p, p], bias [D]}     patch_embed.norm.{weight, bias} [D]
    layers.{i}.downsample.norm.{weight, bias} [4 D_{i-1}]   (i >= 1)
    layers.{i}.downsample.reduction.weight [D_i, 4 D_{i-1}] (no bias)
    layers.{i}.blocks.{j}.norm1 / norm2 .{weight, bias} [D_i]
    layers.{i}.blocks.{j}.attn.relative_position_bias_table [(2w-1)^2, heads_i]
    layers.{i}.blocks.{j}.attn.qkv.{weight [3 D_i, D_i], bias}   .attn.proj.{weight, bias}
    layers.{i}.blocks.{j}.mlp.fc1.{weight [4 D_i, D_i], bias}   .mlp.fc2.{weight, bias}
    norm.{weight, bias} [D_last]        head.fc.{weight [classes, D_last], bias}

with D_i = embed_dim * 2^i. As in timm, the buffers `relative_position_index` and `attn_mask`
are non-persistent (not in the state_dict) and are computed once in __init__. LayerNorm eps
is PyTorch's 1e-5 (timm passes nn.LayerNorm), GELU is exact, attention is timm's explicit
form (`q * scale @ k^T + bias (+ mask) -> softmax -> @ v`, timm's default: its fused path is
experimental) with the shift mask's -100 for token pairs from different regions.

Where a stage's resolution is not larger than the window, the window shrinks to the
resolution and the blocks do not shift (timm's rule; Swin-T's last stage at 224 is such a
stage). timm pads resolutions that are not a multiple of the window and odd resolutions
before patch merging; nmc rejects them with a ModelError instead (`stage_geometry`).

The model is its own numerics reference: `SwinTransformer(...)(x)` is what a compiled Swin
must return; with window keep ratios set, it is the SparseViT-pruned model.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from nmc.common.window_keep import KeepRatioError
from nmc.models import window_prune as wp
from nmc.models.deit import Mlp  # timm's Mlp (fc1 -> exact GELU -> fc2), shared with DeiT
from nmc.models.errors import ModelError

# name -> (embed_dim, depths, num_heads); patch 4, window 7, image 224, 1000 classes
SWIN_CONFIGS: dict[str, tuple[int, tuple[int, ...], tuple[int, ...]]] = {
    "swin_tiny": (96, (2, 2, 6, 2), (3, 6, 12, 24)),
    "swin_small": (96, (2, 2, 18, 2), (3, 6, 12, 24)),
    "swin_base": (128, (2, 2, 18, 2), (4, 8, 16, 32)),
    # fast tests: 64x64 image, 16x16 then 8x8 tokens, window 4 (16 then 4 windows, both
    # stages shifted), 10 classes
    "swin_micro": (32, (2, 2), (2, 4)),
    # small data sets (`nmc sparsify`): 32x32 images in 2x2 patches, window 4: 16 windows
    # in the first stage, 4 in the second, so window pruning has room to choose
    "swin_digits": (48, (2, 4), (2, 4)),
}
# the hyper-parameters that are not in SWIN_CONFIGS, per model
SWIN_DEFAULTS: dict[str, dict[str, int]] = {
    **{n: {"img_size": 224, "patch": 4, "window": 7, "num_classes": 1000}
       for n in ("swin_tiny", "swin_small", "swin_base")},
    "swin_micro": {"img_size": 64, "patch": 4, "window": 4, "num_classes": 10},
    "swin_digits": {"img_size": 32, "patch": 2, "window": 4, "num_classes": 10},
}


# ------------------------------------------------------------------------- geometry


@dataclass(frozen=True)
class StageGeometry:
    resolution: int  # tokens per side inside the stage (after its patch merging)
    window: int  # window side (the configured one, or the resolution if that is smaller)
    shift: int  # cyclic shift of the odd blocks (0: no block of the stage shifts)

    @property
    def num_windows(self) -> int:
        return (self.resolution // self.window) ** 2


def stage_geometry(img_size: int, patch: int, window: int, num_stages: int,
                   name: str = "swin") -> list[StageGeometry]:
    """Resolution, window and shift of every stage; ModelError where nmc cannot follow timm
    without padding (image not a multiple of the patch, odd resolution before a patch merging,
    resolution larger than the window but not a multiple of it)."""
    if img_size % patch:
        raise ModelError(f"{name}: image size {img_size} is not divisible by patch {patch} "
                         f"(choose an image size that is a multiple of the patch size)")
    res = img_size // patch
    out = []
    for i in range(num_stages):
        if i > 0:
            if res % 2:
                raise ModelError(f"{name}: stage {i} would merge patches of an odd "
                                 f"{res}x{res} grid (timm pads, nmc does not): choose an "
                                 f"image size whose grid halves evenly")
            res //= 2
        if res <= window:  # timm: the window shrinks to the resolution, no shift
            out.append(StageGeometry(res, res, 0))
        elif res % window:
            raise ModelError(f"{name}: stage {i} resolution {res} is not a multiple of the "
                             f"window {window} (timm pads, nmc does not)")
        else:
            out.append(StageGeometry(res, window, window // 2))
    return out


def check_config(*, img_size: int, patch: int, window: int, embed_dim: int,
                 depths: tuple[int, ...], num_heads: tuple[int, ...],
                 name: str = "swin") -> list[StageGeometry]:
    """ModelError for inconsistent hyper-parameters; the stage geometry otherwise."""
    if len(depths) != len(num_heads) or not depths:
        raise ModelError(f"{name}: {len(depths)} stage depths but {len(num_heads)} head counts")
    values = {"img_size": img_size, "patch": patch, "window": window, "embed_dim": embed_dim}
    bad = [k for k, v in values.items() if v < 1] + (["depths"] if min(depths) < 1 else [])
    if bad or min(num_heads) < 1:
        raise ModelError(f"{name}: {', '.join(bad or ['num_heads'])} must be positive")
    for i, heads in enumerate(num_heads):
        dim = embed_dim * 2**i
        if dim % heads:
            raise ModelError(f"{name}: stage {i} dim {dim} (embed_dim {embed_dim} * 2^{i}) "
                             f"is not divisible by {heads} heads")
    return stage_geometry(img_size, patch, window, len(depths), name)


# ------------------------------------------------------------------------- windows


def window_partition(x: torch.Tensor, window: int) -> torch.Tensor:
    """[B, H, W, C] -> [B, nW, window*window, C]; windows row-major over the grid, tokens
    row-major inside a window (timm's order, with the batch kept as its own dimension)."""
    b, h, w, c = x.shape
    x = x.view(b, h // window, window, w // window, window, c).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(b, (h // window) * (w // window), window * window, c)


def window_reverse(windows: torch.Tensor, window: int, h: int, w: int) -> torch.Tensor:
    """The inverse of window_partition: [B, nW, window*window, C] -> [B, H, W, C]."""
    b, _, _, c = windows.shape
    x = windows.view(b, h // window, w // window, window, window, c).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(b, h, w, c)


def relative_position_index(window: int) -> torch.Tensor:
    """[N, N] (N = window^2): the row of relative_position_bias_table for each token pair,
    (dy + w - 1) * (2w - 1) + (dx + w - 1) with (dy, dx) = position(i) - position(j)."""
    coords = torch.stack(torch.meshgrid(torch.arange(window), torch.arange(window), indexing="ij"))
    flat = coords.flatten(1)  # [2, N]
    rel = (flat[:, :, None] - flat[:, None, :]).permute(1, 2, 0) + (window - 1)  # [N, N, 2]
    return rel[..., 0] * (2 * window - 1) + rel[..., 1]


def shift_attention_mask(resolution: int, window: int, shift: int) -> torch.Tensor:
    """[nW, N, N] additive mask of the shifted windows: 0 between tokens of the same region
    of the rolled map, -100 (timm's value) across regions (tokens that only became
    neighbours through the cyclic roll)."""
    labels = torch.zeros(1, resolution, resolution, 1)
    bounds = ((0, -window), (-window, -shift), (-shift, None))  # timm's three bands per axis
    for i, (h0, h1) in enumerate(bounds):
        for j, (w0, w1) in enumerate(bounds):
            labels[:, h0:h1, w0:w1, :] = 3 * i + j
    windows = window_partition(labels, window)[0, :, :, 0]  # [nW, N]
    diff = windows[:, None, :] - windows[:, :, None]
    return torch.where(diff != 0, torch.tensor(-100.0), torch.tensor(0.0))


# ------------------------------------------------------------------------- modules


class PatchEmbed(nn.Module):
    """Image [B, Cin, H, W] -> tokens [B, H/p, W/p, D] (NHWC): stride-p conv, then LayerNorm."""

    def __init__(self, patch: int, in_chans: int, dim: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(in_chans, dim, kernel_size=patch, stride=patch)
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.proj(x).permute(0, 2, 3, 1))


class WindowAttention(nn.Module):
    """Multi-head self-attention inside windows with a learned relative position bias."""

    def __init__(self, dim: int, heads: int, window: int) -> None:
        super().__init__()
        self.num_heads = heads
        self.window_area = window * window
        self.scale = (dim // heads) ** -0.5
        self.relative_position_bias_table = nn.Parameter(torch.zeros((2 * window - 1) ** 2, heads))
        self.register_buffer("relative_position_index", relative_position_index(window),
                             persistent=False)
        self.qkv = nn.Linear(dim, dim * 3, bias=True)
        self.proj = nn.Linear(dim, dim)
        nn.init.trunc_normal_(self.relative_position_bias_table, std=0.02)

    def _rel_pos_bias(self) -> torch.Tensor:
        """[1, heads, N, N], the same for every window (so pruning needs no gather of it)."""
        n = self.window_area
        bias = self.relative_position_bias_table[self.relative_position_index.view(-1)]
        return bias.view(n, n, -1).permute(2, 0, 1).unsqueeze(0)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """x [G * nW, N, C] (G groups of nW windows); mask None or [1 or G, nW, N, N]."""
        bw, n, c = x.shape
        qkv = self.qkv(x).reshape(bw, n, 3, self.num_heads, -1).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        attn = (q * self.scale) @ k.transpose(-2, -1)
        attn = attn + self._rel_pos_bias()
        if mask is not None:
            nw = mask.shape[1]
            attn = attn.view(-1, nw, self.num_heads, n, n) + mask.unsqueeze(2)
            attn = attn.view(-1, self.num_heads, n, n)
        attn = attn.softmax(dim=-1)
        return self.proj((attn @ v).transpose(1, 2).reshape(bw, n, -1))


class SwinTransformerBlock(nn.Module):
    """(Shifted-)window attention block on NHWC tokens; with a keep ratio < 1 it runs on the
    kept windows only (window_prune.py describes the semantics)."""

    def __init__(self, dim: int, heads: int, geometry: StageGeometry, shifted: bool,
                 mlp_ratio: float) -> None:
        super().__init__()
        self.resolution = geometry.resolution
        self.window_size = geometry.window
        self.shift_size = geometry.shift if shifted else 0
        self.num_windows = geometry.num_windows
        self.norm1 = nn.LayerNorm(dim)
        self.attn = WindowAttention(dim, heads, geometry.window)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        mask = (shift_attention_mask(self.resolution, self.window_size, self.shift_size)
                if self.shift_size else None)
        self.register_buffer("attn_mask", mask, persistent=False)
        self.set_keep(1.0)

    def set_keep(self, keep: float) -> None:
        """Window keep ratio; num_kept None means the dense path (exactly the dense block),
        0 that the block is skipped (SparseViT: no window kept, the input passes through)."""
        self.keep = keep
        self.num_kept = None if keep >= 1.0 else wp.num_kept(keep, self.num_windows)

    def _shift(self, x: torch.Tensor) -> torch.Tensor:
        if not self.shift_size:
            return x
        return torch.roll(x, shifts=(-self.shift_size, -self.shift_size), dims=(1, 2))

    def _unshift(self, x: torch.Tensor) -> torch.Tensor:
        if not self.shift_size:
            return x
        return torch.roll(x, shifts=(self.shift_size, self.shift_size), dims=(1, 2))

    def window_magnitudes(self, mag: torch.Tensor) -> torch.Tensor:
        """Token magnitudes [B, H, W] on this block's window grid: [B, nW, N]."""
        return window_partition(self._shift(mag).unsqueeze(-1), self.window_size).squeeze(-1)

    def _attn(self, x: torch.Tensor) -> torch.Tensor:
        """timm's _attn: shift, partition, attention (+ mask), reverse, shift back."""
        b, h, w, c = x.shape
        windows = window_partition(self._shift(x), self.window_size)
        mask = None if self.attn_mask is None else self.attn_mask.unsqueeze(0)
        out = self.attn(windows.reshape(-1, self.window_size**2, c), mask)
        return self._unshift(window_reverse(out.view(windows.shape), self.window_size, h, w))

    def forward(self, x: torch.Tensor, kept: torch.Tensor | None = None) -> torch.Tensor:
        """x [B, H, W, C]; `kept` [B, k]: indices of the windows to run on (None: all, dense)."""
        if kept is None:
            b, h, w, c = x.shape
            x = x + self._attn(self.norm1(x))
            x = x.reshape(b, -1, c)
            x = x + self.mlp(self.norm2(x))
            return x.reshape(b, h, w, c)
        return self._forward_pruned(x, kept)

    def _forward_pruned(self, x: torch.Tensor, kept: torch.Tensor) -> torch.Tensor:
        """SparseViT: the block on the kept windows, the others passed through unchanged.
        LayerNorm, MLP and the residuals are per token, so running them per window (after
        the shift) is the dense block restricted to the kept tokens."""
        b, h, w, c = x.shape
        windows = window_partition(self._shift(x), self.window_size)  # [B, nW, N, C]
        sel = wp.gather_windows(windows, kept)  # [B, k, N, C]
        mask = None if self.attn_mask is None else wp.gather_mask(self.attn_mask, kept)
        y = sel + self.attn(self.norm1(sel).reshape(-1, sel.shape[2], c), mask).view(sel.shape)
        y = y + self.mlp(self.norm2(y))
        windows = wp.scatter_windows(windows, kept, y)
        return self._unshift(window_reverse(windows, self.window_size, h, w))


class PatchMerging(nn.Module):
    """2x2 neighbourhoods -> one token: [B, H, W, C] -> [B, H/2, W/2, out]; the 4C features
    in timm's order (0,0), (1,0), (0,1), (1,1) as (row, column) offsets."""

    def __init__(self, dim: int, out_dim: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(4 * dim)
        self.reduction = nn.Linear(4 * dim, out_dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, h, w, c = x.shape
        x = x.reshape(b, h // 2, 2, w // 2, 2, c).permute(0, 1, 3, 4, 2, 5).flatten(3)
        return self.reduction(self.norm(x))


class SwinTransformerStage(nn.Module):
    """Optional patch merging, then blocks alternating plain and shifted windows."""

    def __init__(self, dim: int, out_dim: int, depth: int, heads: int,
                 geometry: StageGeometry, mlp_ratio: float, downsample: bool) -> None:
        super().__init__()
        self.downsample = PatchMerging(dim, out_dim) if downsample else nn.Identity()
        self.blocks = nn.Sequential(*[
            SwinTransformerBlock(out_dim, heads, geometry, shifted=j % 2 == 1, mlp_ratio=mlp_ratio)
            for j in range(depth)
        ])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.downsample(x)
        # SparseViT: magnitudes from the first pruned block's input, one ranking per window
        # grid (keyed by shift), later blocks keep a prefix; a block keeping 0 windows is
        # skipped (its output is its input). The magnitudes are computed only once a block
        # runs on a subset of windows (a skipped block leaves its input as it is, so they
        # are the same). All branching is on static attributes, so torch.export traces one
        # straight-line graph.
        scored_input = None
        mag = None
        rankings: dict[int, torch.Tensor] = {}
        for blk in self.blocks:
            if blk.num_kept is None:
                x = blk(x)
                continue
            if scored_input is None:
                scored_input = x
            if blk.num_kept == 0:
                continue
            if mag is None:
                mag = wp.token_magnitude(scored_input)
            if blk.shift_size not in rankings:
                rankings[blk.shift_size] = wp.rank_windows(blk.window_magnitudes(mag))
            x = blk(x, rankings[blk.shift_size][:, :blk.num_kept])
        return x


class ClassifierHead(nn.Module):
    """Global average pool over H, W (NHWC) then the classifier (timm's head.fc)."""

    def __init__(self, dim: int, num_classes: int) -> None:
        super().__init__()
        self.fc = nn.Linear(dim, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x.mean(dim=(1, 2)))


class SwinTransformer(nn.Module):
    """timm's SwinTransformer (global average pooling): image [B, in_chans, img, img] ->
    logits [B, num_classes]. `window_keep` sets SparseViT keep ratios (see set_window_keep)."""

    def __init__(
        self,
        img_size: int = 224,
        patch_size: int = 4,
        in_chans: int = 3,
        num_classes: int = 1000,
        embed_dim: int = 96,
        depths: tuple[int, ...] = (2, 2, 6, 2),
        num_heads: tuple[int, ...] = (3, 6, 12, 24),
        window_size: int = 7,
        mlp_ratio: float = 4.0,
        window_keep: wp.KeepSpec = None,
    ) -> None:
        super().__init__()
        geometry = check_config(img_size=img_size, patch=patch_size, window=window_size,
                                embed_dim=embed_dim, depths=tuple(depths),
                                num_heads=tuple(num_heads))
        if in_chans < 1 or num_classes < 1:
            raise ModelError("swin: in_chans and num_classes must be positive")
        self.img_size = img_size
        self.in_chans = in_chans
        self.geometry = geometry
        dims = [embed_dim * 2**i for i in range(len(depths))]
        self.patch_embed = PatchEmbed(patch_size, in_chans, dims[0])
        self.layers = nn.Sequential(*[
            SwinTransformerStage(dims[max(i - 1, 0)], dims[i], depths[i], num_heads[i],
                                 geometry[i], mlp_ratio, downsample=i > 0)
            for i in range(len(depths))
        ])
        self.norm = nn.LayerNorm(dims[-1])
        self.head = ClassifierHead(dims[-1], num_classes)
        self.set_window_keep(window_keep)

    def input_shape(self, batch: int = 1) -> tuple[int, int, int, int]:
        return (batch, self.in_chans, self.img_size, self.img_size)

    def block_names(self) -> list[list[str]]:
        """Block module paths ("layers.0.blocks.1"), grouped by stage."""
        return [[f"layers.{i}.blocks.{j}" for j in range(len(stage.blocks))]
                for i, stage in enumerate(self.layers)]

    @property
    def window_keep(self) -> dict[str, float]:
        return {n: self.get_submodule(n).keep for stage in self.block_names() for n in stage}

    def set_window_keep(self, ratios: wp.KeepSpec) -> SwinTransformer:
        """Set SparseViT window keep ratios: one float for every block, a list with one per
        block in order, or {block path: ratio} (unlisted blocks keep 1.0); None makes the
        model dense again. Ratios lie in (0, 1] and must not increase among a stage's even
        blocks nor among its odd ones (ModelError otherwise; nmc.common.window_keep). 1.0
        runs the dense block, bit-identical to no pruning; a ratio that keeps 0 windows
        (floor(r * windows), SparseViT's rule) skips the block."""
        try:
            resolved = wp.resolve_keep(self.block_names(), ratios)
        except KeepRatioError as e:  # the models' own error, as for every bad hyper-parameter
            raise ModelError(str(e)) from None
        for name, keep in resolved.items():
            self.get_submodule(name).set_keep(keep)
        return self

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.layers(self.patch_embed(x)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.forward_features(x))


def swin(name: str = "swin_tiny", **overrides) -> SwinTransformer:  # noqa: ANN003
    """A Swin of a named size (a key of SWIN_CONFIGS), any constructor argument
    overridden."""
    try:
        embed_dim, depths, heads = SWIN_CONFIGS[name]
    except KeyError:
        raise ModelError(f"unknown Swin {name!r} (known: {', '.join(SWIN_CONFIGS)})") from None
    d = SWIN_DEFAULTS[name]
    base = {"img_size": d["img_size"], "patch_size": d["patch"], "window_size": d["window"],
            "num_classes": d["num_classes"], "embed_dim": embed_dim, "depths": depths,
            "num_heads": heads}
    return SwinTransformer(**{**base, **overrides})

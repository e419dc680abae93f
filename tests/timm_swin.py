"""A Swin Transformer written as timm 1.0 writes it (timm/models/swin_transformer.py,
timm 1.0.x; timm itself is not a dependency), for tests/test_timm_swin.py.

What matters here and differs from nmc's own reference (models/swin.py):
- `SwinTransformerBlock._attn` rolls, then pads the feature map unconditionally with
  `F.pad(x, (0, 0, 0, pad_w, 0, pad_h))` to a multiple of the window, partitions, runs the
  window attention on every window (padded tokens included: they are zero rows after
  `norm1`, so their keys and values are the qkv bias), reverses, crops `[:, :H, :W]`, and
  rolls back. The shift mask (`get_attn_mask`) is computed on the padded size; without a
  shift there is no mask at all, so real tokens attend to padded ones.
- `PatchMerging.forward` pads unconditionally with `(0, 0, 0, W % 2, 0, H % 2)`.
- A block whose resolution is not larger than the window uses one window of that size and
  no shift (`_calc_window_shift`); WindowAttention takes the non-fused path (timm's
  `use_fused_attn(experimental=True)` is off by default).
So at a size the window divides, every pad is zero-wide (the graph holds
`constant_pad_nd` with zero widths); at another, they pad.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from nmc.models import swin
from nmc.models.deit import Mlp  # timm's Mlp: fc1, GELU, fc2


def window_partition(x: torch.Tensor, window_size: tuple[int, int]) -> torch.Tensor:
    B, H, W, C = x.shape
    x = x.view(B, H // window_size[0], window_size[0], W // window_size[1], window_size[1], C)
    return x.permute(0, 1, 3, 2, 4, 5).contiguous().view(-1, window_size[0], window_size[1], C)


def window_reverse(windows: torch.Tensor, window_size: tuple[int, int], H: int, W: int
                   ) -> torch.Tensor:
    C = windows.shape[-1]
    x = windows.view(-1, H // window_size[0], W // window_size[1], window_size[0],
                     window_size[1], C)
    return x.permute(0, 1, 3, 2, 4, 5).contiguous().view(-1, H, W, C)


def get_relative_position_index(win_h: int, win_w: int) -> torch.Tensor:
    coords = torch.stack(torch.meshgrid(torch.arange(win_h), torch.arange(win_w),
                                        indexing="ij"))
    coords_flatten = torch.flatten(coords, 1)
    relative_coords = coords_flatten[:, :, None] - coords_flatten[:, None, :]
    relative_coords = relative_coords.permute(1, 2, 0).contiguous()
    relative_coords[:, :, 0] += win_h - 1
    relative_coords[:, :, 1] += win_w - 1
    relative_coords[:, :, 0] *= 2 * win_w - 1
    return relative_coords.sum(-1)


class WindowAttention(nn.Module):
    def __init__(self, dim: int, num_heads: int, window_size: tuple[int, int]) -> None:
        super().__init__()
        self.window_size = window_size
        win_h, win_w = window_size
        self.window_area = win_h * win_w
        self.num_heads = num_heads
        head_dim = dim // num_heads
        self.scale = head_dim ** -0.5
        self.relative_position_bias_table = nn.Parameter(
            torch.randn((2 * win_h - 1) * (2 * win_w - 1), num_heads) * 0.5)
        self.register_buffer("relative_position_index",
                             get_relative_position_index(win_h, win_w), persistent=False)
        self.qkv = nn.Linear(dim, dim * 3)
        self.proj = nn.Linear(dim, dim)
        self.softmax = nn.Softmax(dim=-1)

    def _get_rel_pos_bias(self) -> torch.Tensor:
        bias = self.relative_position_bias_table[self.relative_position_index.view(-1)].view(
            self.window_area, self.window_area, -1)
        return bias.permute(2, 0, 1).contiguous().unsqueeze(0)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        B_, N, C = x.shape
        qkv = self.qkv(x).reshape(B_, N, 3, self.num_heads, -1).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        q = q * self.scale
        attn = q @ k.transpose(-2, -1)
        attn = attn + self._get_rel_pos_bias()
        if mask is not None:
            num_win = mask.shape[0]
            attn = attn.view(-1, num_win, self.num_heads, N, N) + mask.unsqueeze(1).unsqueeze(0)
            attn = attn.view(-1, self.num_heads, N, N)
        attn = self.softmax(attn)
        x = attn @ v
        x = x.transpose(1, 2).reshape(B_, N, -1)
        return self.proj(x)


class SwinTransformerBlock(nn.Module):
    def __init__(self, dim: int, input_resolution: tuple[int, int], num_heads: int,
                 window_size: int, shift_size: int) -> None:
        super().__init__()
        self.input_resolution = input_resolution
        target_window, target_shift = (window_size, window_size), (shift_size, shift_size)
        self.window_size = tuple(r if r <= w else w
                                 for r, w in zip(input_resolution, target_window))
        self.shift_size = tuple(0 if r <= w else s for r, w, s in
                                zip(input_resolution, self.window_size, target_shift))
        self.window_area = self.window_size[0] * self.window_size[1]
        self.norm1 = nn.LayerNorm(dim)
        self.attn = WindowAttention(dim, num_heads, self.window_size)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, 4 * dim)
        self.register_buffer("attn_mask", self.get_attn_mask(), persistent=False)

    def get_attn_mask(self) -> torch.Tensor | None:
        if not any(self.shift_size):
            return None
        H, W = self.input_resolution
        H = math.ceil(H / self.window_size[0]) * self.window_size[0]
        W = math.ceil(W / self.window_size[1]) * self.window_size[1]
        img_mask = torch.zeros((1, H, W, 1))
        cnt = 0
        for h in ((0, -self.window_size[0]), (-self.window_size[0], -self.shift_size[0]),
                  (-self.shift_size[0], None)):
            for w in ((0, -self.window_size[1]), (-self.window_size[1], -self.shift_size[1]),
                      (-self.shift_size[1], None)):
                img_mask[:, h[0]:h[1], w[0]:w[1], :] = cnt
                cnt += 1
        mask_windows = window_partition(img_mask, self.window_size).view(-1, self.window_area)
        attn_mask = mask_windows.unsqueeze(1) - mask_windows.unsqueeze(2)
        return attn_mask.masked_fill(attn_mask != 0, float(-100.0)).masked_fill(
            attn_mask == 0, float(0.0))

    def _attn(self, x: torch.Tensor) -> torch.Tensor:
        B, H, W, C = x.shape
        has_shift = any(self.shift_size)
        if has_shift:
            shifted_x = torch.roll(x, shifts=(-self.shift_size[0], -self.shift_size[1]),
                                   dims=(1, 2))
        else:
            shifted_x = x
        pad_h = (self.window_size[0] - H % self.window_size[0]) % self.window_size[0]
        pad_w = (self.window_size[1] - W % self.window_size[1]) % self.window_size[1]
        shifted_x = F.pad(shifted_x, (0, 0, 0, pad_w, 0, pad_h))  # BLOCK PAD
        _, Hp, Wp, _ = shifted_x.shape
        x_windows = window_partition(shifted_x, self.window_size)
        x_windows = x_windows.view(-1, self.window_area, C)
        attn_windows = self.attn(x_windows, mask=self.attn_mask)
        attn_windows = attn_windows.view(-1, self.window_size[0], self.window_size[1], C)
        shifted_x = window_reverse(attn_windows, self.window_size, Hp, Wp)
        shifted_x = shifted_x[:, :H, :W, :].contiguous()
        if has_shift:
            return torch.roll(shifted_x, shifts=self.shift_size, dims=(1, 2))
        return shifted_x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, H, W, C = x.shape
        x = x + self._attn(self.norm1(x))  # BLOCK CALL
        x = x.reshape(B, -1, C)
        x = x + self.mlp(self.norm2(x))
        return x.reshape(B, H, W, C)


class PatchMerging(swin.PatchMerging):
    """norm (4 dim) and reduction as nmc's reference; timm 1.0's forward pads odd maps."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, H, W, C = x.shape
        x = F.pad(x, (0, 0, 0, W % 2, 0, H % 2))
        _, H, W, _ = x.shape
        x = x.reshape(B, H // 2, 2, W // 2, 2, C).permute(0, 1, 3, 4, 2, 5).flatten(3)
        return self.reduction(self.norm(x))


class SwinTransformerStage(nn.Module):
    def __init__(self, dim: int, out_dim: int, input_resolution: tuple[int, int], depth: int,
                 downsample: bool, num_heads: int, window_size: int) -> None:
        super().__init__()
        self.output_resolution = (tuple(i // 2 for i in input_resolution) if downsample
                                  else input_resolution)
        self.downsample = PatchMerging(dim, out_dim) if downsample else nn.Identity()
        self.blocks = nn.Sequential(*[
            SwinTransformerBlock(out_dim, self.output_resolution, num_heads, window_size,
                                 0 if i % 2 == 0 else window_size // 2)
            for i in range(depth)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks(self.downsample(x))


class PatchEmbed(nn.Module):
    def __init__(self, patch_size: int, in_chans: int, embed_dim: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(in_chans, embed_dim, patch_size, stride=patch_size)
        self.norm = nn.LayerNorm(embed_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.proj(x).permute(0, 2, 3, 1))  # NHWC


class ClassifierHead(nn.Module):
    def __init__(self, dim: int, num_classes: int) -> None:
        super().__init__()
        self.fc = nn.Linear(dim, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x.mean((1, 2)))


class SwinTransformer(nn.Module):
    def __init__(self, img_size: int = 224, patch_size: int = 4, in_chans: int = 3,
                 num_classes: int = 10, embed_dim: int = 16, depths=(2, 2),
                 num_heads=(2, 2), window_size: int = 7) -> None:
        super().__init__()
        self.patch_embed = PatchEmbed(patch_size, in_chans, embed_dim)
        res = (img_size // patch_size, img_size // patch_size)
        dims = [embed_dim * 2 ** i for i in range(len(depths))]
        in_dim, layers = embed_dim, []
        for i, (depth, heads) in enumerate(zip(depths, num_heads)):
            stage = SwinTransformerStage(in_dim, dims[i], res, depth, i > 0, heads,
                                         window_size)
            layers.append(stage)
            in_dim, res = dims[i], stage.output_resolution
        self.layers = nn.Sequential(*layers)
        self.norm = nn.LayerNorm(in_dim)
        self.head = ClassifierHead(in_dim, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.norm(self.layers(self.patch_embed(x))))

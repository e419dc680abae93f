"""DeiT (Touvron et al. 2021): timm's `VisionTransformer` in plain PyTorch.

Parameter names and shapes are those of timm's `vision_transformer.VisionTransformer`
(class-token pooling, no distillation token), so a timm `state_dict` loads unchanged:

    cls_token [1, 1, D]            pos_embed [1, 1 + (img/patch)^2, D]
    patch_embed.proj.{weight [D, Cin, p, p], bias [D]}
    blocks.{i}.norm1.{weight, bias} [D]
    blocks.{i}.attn.qkv.{weight [3D, D], bias [3D]}
    blocks.{i}.attn.proj.{weight [D, D], bias [D]}
    blocks.{i}.norm2.{weight, bias} [D]
    blocks.{i}.mlp.fc1.{weight [hidden, D], bias}   blocks.{i}.mlp.fc2.{weight [D, hidden], bias}
    norm.{weight, bias} [D]        head.{weight [classes, D], bias [classes]}

LayerNorm eps is 1e-6, GELU is exact, qkv has a bias; dropout and drop-path are left out
(inference only). `fused_attn` picks the attention form, like timm's flag of the same name:
True calls `F.scaled_dot_product_attention`, False spells it out
(`q * scale @ k^T -> softmax -> @ v`). Both compute the same function.

The model is its own numerics reference: `DeiT(...)(x)` is what a compiled DeiT must return.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

LN_EPS = 1e-6

# name -> (dim, depth, heads); patch 16, image 224, 1000 classes, mlp_ratio 4
DEIT_CONFIGS: dict[str, tuple[int, int, int]] = {
    "deit_tiny": (192, 12, 3),
    "deit_small": (384, 12, 6),
    "deit_base": (768, 12, 12),
}


class PatchEmbed(nn.Module):
    """Image [B, Cin, H, W] -> tokens [B, (H/p)(W/p), D]: a stride-p, p x p convolution."""

    def __init__(self, img_size: int, patch: int, in_chans: int, dim: int) -> None:
        super().__init__()
        if img_size % patch:
            raise ValueError(f"image size {img_size} is not divisible by patch {patch}")
        self.img_size = img_size
        self.patch = patch
        self.num_patches = (img_size // patch) ** 2
        self.proj = nn.Conv2d(in_chans, dim, kernel_size=patch, stride=patch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.proj(x)
        return x.flatten(2).transpose(1, 2)


class Attention(nn.Module):
    """Multi-head self-attention, timm's `Attention` (qkv with bias, no q/k norm)."""

    def __init__(self, dim: int, heads: int, *, fused_attn: bool = True) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"dim {dim} is not divisible by heads {heads}")
        self.num_heads = heads
        self.head_dim = dim // heads
        self.scale = self.head_dim**-0.5
        self.fused_attn = fused_attn
        self.qkv = nn.Linear(dim, dim * 3, bias=True)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, N, C = x.shape
        qkv = self.qkv(x).reshape(B, N, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        if self.fused_attn:
            x = F.scaled_dot_product_attention(q, k, v)
        else:
            q = q * self.scale
            attn = q @ k.transpose(-2, -1)
            attn = attn.softmax(dim=-1)
            x = attn @ v
        x = x.transpose(1, 2).reshape(B, N, C)
        return self.proj(x)


class Mlp(nn.Module):
    """fc1 -> GELU (exact) -> fc2."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class LayerScale(nn.Module):
    """timm's LayerScale (CaiT, DINOv2): a learned per-channel factor, x * gamma."""

    def __init__(self, dim: int, init_values: float) -> None:
        super().__init__()
        self.gamma = nn.Parameter(init_values * torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gamma


class Block(nn.Module):
    """Pre-norm transformer block: x + ls1(attn(norm1(x))), then x + ls2(mlp(norm2(x))).

    The layer-scales ls1/ls2 exist only with `init_values` (DINOv2, CaiT); DeiT has none,
    and then the block has no ls1/ls2 parameters at all, as in timm."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float, *, fused_attn: bool,
                 init_values: float | None = None) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=LN_EPS)
        self.attn = Attention(dim, heads, fused_attn=fused_attn)
        self.ls1 = LayerScale(dim, init_values) if init_values else nn.Identity()
        self.norm2 = nn.LayerNorm(dim, eps=LN_EPS)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        self.ls2 = LayerScale(dim, init_values) if init_values else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.ls1(self.attn(self.norm1(x)))
        return x + self.ls2(self.mlp(self.norm2(x)))


class DeiT(nn.Module):
    """timm's VisionTransformer with class-token pooling (DeiT without distillation).

    Image [B, in_chans, img_size, img_size] -> logits [B, num_classes]; with
    num_classes = 0 there is no head (timm's `nn.Identity`), and the output is the class
    token's features [B, dim] (a pretrained backbone such as DINOv2). `init_values` adds
    timm's LayerScale to every block (DINOv2: 1e-5).
    """

    def __init__(
        self,
        img_size: int = 224,
        patch: int = 16,
        dim: int = 192,
        depth: int = 12,
        heads: int = 3,
        mlp_ratio: float = 4.0,
        num_classes: int = 1000,
        in_chans: int = 3,
        *,
        fused_attn: bool = True,
        init_values: float | None = None,
    ) -> None:
        super().__init__()
        self.img_size = img_size
        self.patch = patch
        self.dim = dim
        self.in_chans = in_chans
        self.patch_embed = PatchEmbed(img_size, patch, in_chans, dim)
        n = self.patch_embed.num_patches
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, n + 1, dim))
        self.blocks = nn.Sequential(
            *[Block(dim, heads, mlp_ratio, fused_attn=fused_attn, init_values=init_values)
              for _ in range(depth)]
        )
        self.norm = nn.LayerNorm(dim, eps=LN_EPS)
        self.head = nn.Linear(dim, num_classes) if num_classes else nn.Identity()
        # timm initialises both with trunc_normal(std=.02) / normal(std=1e-6); .02 for both
        # here so that random-weight tests exercise them.
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.trunc_normal_(self.cls_token, std=0.02)

    @property
    def fused_attn(self) -> bool:
        return all(b.attn.fused_attn for b in self.blocks)

    def set_fused_attn(self, fused: bool) -> DeiT:
        """Switch every block between the sdpa and the explicit attention form."""
        for b in self.blocks:
            b.attn.fused_attn = fused
        return self

    def input_shape(self, batch: int = 1) -> tuple[int, int, int, int]:
        return (batch, self.in_chans, self.img_size, self.img_size)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(x)
        x = torch.cat((self.cls_token.expand(x.shape[0], -1, -1), x), dim=1)
        x = x + self.pos_embed
        x = self.blocks(x)
        return self.norm(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.forward_features(x)
        return self.head(x[:, 0])


def resample_pos_embed(pos_embed: torch.Tensor, grid: int, prefix: int = 1) -> torch.Tensor:
    """A position embedding [1, prefix + g*g, D] for another square grid [1, prefix + grid^2,
    D], as timm's `resample_abs_pos_embed` does when a checkpoint is loaded at another image
    size (DINOv2 is trained at 518x518 = 37x37 patches of 14): the grid part is resized
    bicubically (antialiased, corners not aligned), the prefix (class) tokens are kept."""
    n = pos_embed.shape[1] - prefix
    old = int(round(n**0.5))
    if old * old != n:
        raise ValueError(f"position embedding of {n} grid tokens is not a square grid")
    if old == grid:
        return pos_embed
    head, body = pos_embed[:, :prefix], pos_embed[:, prefix:]
    body = body.reshape(1, old, old, -1).permute(0, 3, 1, 2).float()
    body = F.interpolate(body, size=(grid, grid), mode="bicubic", antialias=True,
                         align_corners=False)
    body = body.permute(0, 2, 3, 1).reshape(1, grid * grid, -1).to(pos_embed.dtype)
    return torch.cat((head, body), dim=1)


# A DeiT small enough for fast tests (17 tokens), with every part of the real one.
TINY_TEST_CONFIG: dict[str, int] = {
    "img_size": 32,
    "patch": 8,
    "dim": 32,
    "depth": 2,
    "heads": 2,
    "num_classes": 10,
}


def reference(model: nn.Module, x: torch.Tensor | np.ndarray) -> np.ndarray:
    """The model's output on `x` (eval mode, no grad) as a float32 numpy array: what a
    compiled model must reproduce."""
    t = torch.as_tensor(np.asarray(x, dtype=np.float32)) if isinstance(x, np.ndarray) else x
    with torch.no_grad():
        return model.eval()(t).detach().to(torch.float32).numpy()


def deit(name: str = "deit_tiny", **overrides) -> DeiT:  # noqa: ANN003
    """A DeiT of a named size (deit_tiny / deit_small / deit_base), any field overridden."""
    try:
        dim, depth, heads = DEIT_CONFIGS[name]
    except KeyError:
        raise ValueError(f"unknown DeiT {name!r} (known: {', '.join(DEIT_CONFIGS)})") from None
    return DeiT(**{"dim": dim, "depth": depth, "heads": heads, **overrides})


def deit_tiny(**overrides) -> DeiT:  # noqa: ANN003
    return deit("deit_tiny", **overrides)


def deit_small(**overrides) -> DeiT:  # noqa: ANN003
    return deit("deit_small", **overrides)


def deit_base(**overrides) -> DeiT:  # noqa: ANN003
    return deit("deit_base", **overrides)


def timm_state_dict_shapes(
    img_size: int = 224,
    patch: int = 16,
    dim: int = 192,
    depth: int = 12,
    mlp_ratio: float = 4.0,
    num_classes: int = 1000,
    in_chans: int = 3,
    layer_scale: bool = False,
) -> dict[str, tuple[int, ...]]:
    """The keys and shapes of timm's VisionTransformer state_dict for these sizes (written
    out by hand from timm, which is not a dependency). `layer_scale`: the blocks carry
    `ls1.gamma` / `ls2.gamma` (timm's `init_values`, e.g. DINOv2); num_classes = 0: no
    head keys (timm's `nn.Identity` head)."""
    n = (img_size // patch) ** 2 + 1
    hidden = int(dim * mlp_ratio)
    shapes: dict[str, tuple[int, ...]] = {
        "cls_token": (1, 1, dim),
        "pos_embed": (1, n, dim),
        "patch_embed.proj.weight": (dim, in_chans, patch, patch),
        "patch_embed.proj.bias": (dim,),
    }
    for i in range(depth):
        b = f"blocks.{i}"
        shapes.update({
            f"{b}.norm1.weight": (dim,),
            f"{b}.norm1.bias": (dim,),
            f"{b}.attn.qkv.weight": (3 * dim, dim),
            f"{b}.attn.qkv.bias": (3 * dim,),
            f"{b}.attn.proj.weight": (dim, dim),
            f"{b}.attn.proj.bias": (dim,),
            f"{b}.norm2.weight": (dim,),
            f"{b}.norm2.bias": (dim,),
            f"{b}.mlp.fc1.weight": (hidden, dim),
            f"{b}.mlp.fc1.bias": (hidden,),
            f"{b}.mlp.fc2.weight": (dim, hidden),
            f"{b}.mlp.fc2.bias": (dim,),
        })
        if layer_scale:
            shapes.update({f"{b}.ls1.gamma": (dim,), f"{b}.ls2.gamma": (dim,)})
    shapes.update({"norm.weight": (dim,), "norm.bias": (dim,)})
    if num_classes:
        shapes.update({"head.weight": (num_classes, dim), "head.bias": (num_classes,)})
    return shapes

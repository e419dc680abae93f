"""The MLP half of a ViT block: `x + fc2(gelu(fc1(layer_norm(x))))`.

Attribute names follow timm's `Block` / `Mlp` (norm, fc1, act, fc2), so the nm layer names
of the compiled block are `norm`, `fc1`, `act`, `fc2` and `add` (the residual, top level).
"""

from __future__ import annotations

import torch
from torch import nn


class MLPBlock(nn.Module):
    """Pre-norm residual MLP: `x + fc2(act(fc1(norm(x))))` over the last dim of `x`."""

    def __init__(
        self,
        dim: int,
        hidden: int,
        *,
        eps: float = 1e-6,
        approximate: str = "none",
    ) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim, eps=eps)
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU(approximate=approximate)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.fc2(self.act(self.fc1(self.norm(x))))

"""SparseViT's sparse-aware adaptation (METHODS.md, "SparseViT"): while fine-tuning, every
step runs the Swin with per-block window keep ratios sampled at random, so that one set of
weights works at every ratio the search may later choose.

A step draws one ratio per block from `sparsevit.RATIOS` (1.0, dense, included), uniformly,
and sorts the draws of each stage's even blocks, and of its odd ones, non-increasing
(`sparsevit.nested`: kept window sets are nested per grid, the configurations the search
chooses from). The model is nmc's `SwinTransformer`, whose
`set_window_keep` is the PyTorch reference of a pruned model (models/window_prune.py):
gather and scatter pass gradients to the kept windows, the ranking itself has none.
"""

from __future__ import annotations

import random

import torch

from nmc.compiler.sparsity.sparsevit import RATIOS, nested


class WindowAdaptation:
    def __init__(self, model: torch.nn.Module, stages: list[list[str]]):
        self.model, self.stages = model, stages
        self.config: dict[str, float] = {}

    def sample(self, rng: random.Random) -> dict[str, float]:
        return nested({b: rng.choice(RATIOS) for stage in self.stages for b in stage},
                      self.stages)

    def run(self, images: torch.Tensor, config: dict[str, float] | None) -> torch.Tensor:
        """The model on `images` at keep ratios `config` (None: dense)."""
        self.model.set_window_keep(config)
        return self.model(images)

    # ---------------------------------------------------------------- Regime

    def begin_step(self, rng: random.Random) -> None:
        self.config = self.sample(rng)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.run(images, self.config)

    def end_step(self, logits: torch.Tensor, labels: torch.Tensor) -> None:
        self.model.set_window_keep(None)

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass


class FixedWindows(WindowAdaptation):
    """One configuration of keep ratios (the final fine-tune)."""

    def __init__(self, model: torch.nn.Module, config: dict[str, float]):
        super().__init__(model, [])
        self.fixed = dict(config)

    def begin_step(self, rng: random.Random) -> None:
        self.config = self.fixed

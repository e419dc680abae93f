"""ELSA's supernet (METHODS.md, "ELSA"): one shared dense weight per sparsifiable layer,
masked on the fly to the N:M pattern of the configuration a step samples.

- Masks: `nm_mask` (the N largest |w| of every M along the input dimension, the
  reference that prune-and-pack also uses), recomputed from the current shared weights at
  every forward, so a weight that grows back into the top N is kept again.
- Gradients: straight-through. The forward multiplies by the mask; the backward passes the
  gradient to every shared weight, pruned ones included (w + (w * mask - w).detach()), so
  one weight tensor learns for all patterns and masks can change as training moves it.
- Sampling (`begin_step`): per layer, a choice c among dense and the target's patterns with
  probability proportional to

      exp(beta(t) * sparsity(c) + GAMMA * (acc(l, c) - max_c' acc(l, c')))

  where sparsity(c) = 1 - N/M, t in [0, 1] is the progress through the stage and
  beta(t) = BETA * (2t - 1) moves from favouring dense to favouring sparse choices, and
  acc(l, c) is the running (EMA) batch accuracy of the subnets that used choice c at
  layer l: choices whose subnets do well are sampled more (ELSA's accuracy-driven
  sampling).

The model is run with `torch.func.functional_call`, substituting the masked weights by
parameter name, so it works alike on nmc's own models and on the GraphModule of a
torch.export file.
"""

from __future__ import annotations

import math
import random
from typing import Sequence

import torch
from torch.func import functional_call

from nmc.common.nm_format import Pattern, is_dense
from nmc.models.nm_sparsity import nm_mask

BETA = 2.0
GAMMA = 10.0
EMA = 0.05


def sparsity_of(pattern: Pattern) -> float:
    return 0.0 if is_dense(pattern) else 1.0 - pattern[0] / pattern[1]


class NMSupernet:
    """A model whose `layers` (name, weight parameter, choices) switch N:M patterns."""

    def __init__(self, model: torch.nn.Module, params: Sequence[str],
                 patterns: Sequence[Sequence[Pattern]], total_steps: int):
        self.model = model
        named = dict(model.named_parameters())
        missing = [p for p in params if p not in named]
        if missing:
            raise KeyError(f"the model has no parameter {', '.join(missing)}")
        self.weights = [named[p] for p in params]
        self.params = list(params)
        self.patterns = [list(p) for p in patterns]
        self.total_steps = max(1, total_steps)
        self.step = 0
        self.acc = [[0.5] * len(p) for p in self.patterns]
        self.choice = [0] * len(self.params)

    # ---------------------------------------------------------------- forward

    def masked(self, choice: Sequence[int], straight_through: bool) -> dict[str, torch.Tensor]:
        """The masked weight of every non-dense layer of `choice`, by parameter name."""
        out = {}
        for name, w, pats, c in zip(self.params, self.weights, self.patterns, choice):
            p = pats[c]
            if is_dense(p):
                continue
            mask = nm_mask(w.detach(), p[0], p[1]).to(w.dtype)
            out[name] = w + (w * mask - w).detach() if straight_through else w * mask
        return out

    def run(self, images: torch.Tensor, choice: Sequence[int]) -> torch.Tensor:
        """The model on `images` with the layers at `choice` (no straight-through)."""
        return functional_call(self.model, self.masked(choice, False), (images,))

    def bake(self, choice: Sequence[int]) -> None:
        """Multiply the shared weights by their masks, in place (the final model)."""
        weights = dict(zip(self.params, self.weights))
        with torch.no_grad():
            for name, masked in self.masked(choice, False).items():
                weights[name].copy_(masked)

    # ---------------------------------------------------------------- Regime

    def probabilities(self) -> list[list[float]]:
        t = min(1.0, self.step / self.total_steps)
        beta = BETA * (2 * t - 1)
        out = []
        for pats, acc in zip(self.patterns, self.acc):
            best = max(acc)
            logits = [beta * sparsity_of(p) + GAMMA * (a - best) for p, a in zip(pats, acc)]
            top = max(logits)
            w = [math.exp(x - top) for x in logits]
            out.append([x / sum(w) for x in w])
        return out

    def begin_step(self, rng: random.Random) -> None:
        self.choice = [rng.choices(range(len(p)), weights=p)[0] for p in self.probabilities()]

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return functional_call(self.model, self.masked(self.choice, True), (images,))

    def end_step(self, logits: torch.Tensor, labels: torch.Tensor) -> None:
        acc = float((logits.argmax(-1) == labels).float().mean())
        for layer, c in enumerate(self.choice):
            self.acc[layer][c] += EMA * (acc - self.acc[layer][c])
        self.step += 1

    def state_dict(self) -> dict:
        return {"step": self.step, "acc": self.acc}

    def load_state_dict(self, state: dict) -> None:
        self.step, self.acc = int(state["step"]), [list(a) for a in state["acc"]]


class FixedNM(NMSupernet):
    """One configuration, masks still recomputed every step (the final fine-tune)."""

    def __init__(self, model: torch.nn.Module, params: Sequence[str],
                 patterns: Sequence[Pattern]):
        super().__init__(model, params, [[p] for p in patterns], 1)

    def begin_step(self, rng: random.Random) -> None:
        self.choice = [0] * len(self.params)

"""SparseViT-style search of per-block window keep ratios (METHODS.md, "SparseViT"; issue 6):

    nmc compile swin.pt --window-keep sparsevit:latency=0.6 --window-keep-out keep.json

finds keep ratios in RATIOS (0.2 .. 1.0), one per Swin block and non-increasing among
a stage's even blocks and among its odd ones (SparseViT's rule, nmc.common.window_keep),
whose modelled latency is at most L x the dense model's, with the least output error on
calibration inputs.

- Latency: the sum of the kernels' modelled cycles (`kernels.registry.op_cycles`, the
  cost the tile search ranks tilings with) over the ops of the module: per block and
  ratio from the module pruned uniformly at that ratio (a block's cost depends only on its
  own windows; 0 for a block that keeps no window, which the compiler removes), plus the
  scoring overhead per stage (token magnitudes) and per window grid (window scores and
  ranking) where a block runs on a subset of windows, plus everything outside the blocks.
  The compiled program's
  cycles, which the emulator reports, differ from this sum by the overlap between kernels.
- Error: ||y - y_dense|| / ||y_dense|| over the calibration inputs' outputs, y computed by
  interpreting the pruned nm IR itself (`compiler/interpret.py`): the computation that is
  compiled, not a proxy.
- Search: evolutionary, as SparseViT's: a population of POPULATION feasible configurations
  (the uniform ones within the budget, then random ones), each generation keeps the PARENTS
  best, and makes children by mutation (each block's ratio resampled with probability
  MUTATION), by a step (one block's ratio one notch up, another's one down: the moves
  that trade latency between blocks, which random mutation rarely makes together) and by
  crossover (each block's ratio from either of two parents); a child is
  repaired to be non-increasing within each grid parity of a stage (the ratios of its even
  blocks sorted, and those of its odd blocks) and rejected when over budget. Fixed seed.
  The best configuration seen is the result. The configurations of a population not yet
  scored are scored in one batch (`errors_of`), which a Dask cluster may spread (--workers):
  no random choice depends on the scores of the generation being made.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np

from nmc.common.progress import progress
from nmc.common.window_keep import num_kept, parities

RATIOS = (0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)
POPULATION = 16
PARENTS = 4
GENERATIONS = 12
MUTATION = 0.2
SEED = 0
TRIES = 2000  # random draws to fill a population before giving up on more


@dataclass
class LatencyModel:
    """Estimated cycles of a configuration: `fixed` + per block cost at its ratio + the
    scoring overhead of the stages and window grids where a block runs on a subset of its
    windows (a block that keeps all or none needs no ranking)."""

    blocks: list[str]
    stage_of: dict[str, str]
    grid_of: dict[str, tuple]
    cost: dict[str, dict[float, float]]  # block -> ratio -> cycles
    windows: dict[str, int]  # block -> windows per image
    stage_overhead: dict[str, float] = field(default_factory=dict)
    grid_overhead: dict[tuple, float] = field(default_factory=dict)
    fixed: float = 0.0

    def cycles(self, config: dict[str, float]) -> float:
        total = self.fixed + sum(self.cost[b][config[b]] for b in self.blocks)
        ranked = [b for b in self.blocks
                  if 0 < num_kept(config[b], self.windows[b]) < self.windows[b]]
        total += sum(self.stage_overhead.get(s, 0.0) for s in {self.stage_of[b] for b in ranked})
        total += sum(self.grid_overhead.get(g, 0.0) for g in {self.grid_of[b] for b in ranked})
        return total

    def dense(self) -> float:
        return self.cycles({b: 1.0 for b in self.blocks})

    def lowest_fraction(self) -> float:
        """The least latency any configuration reaches (every block at the smallest
        ratio), as a fraction of dense: a budget below it cannot be met."""
        return self.cycles({b: RATIOS[0] for b in self.blocks}) / self.dense()


@dataclass
class SearchResult:
    config: dict[str, float]
    error: float
    cycles: float
    dense_cycles: float
    evaluated: int


def nested(config: dict[str, float], stages: list[list[str]]) -> dict[str, float]:
    """Ratios sorted non-increasing within each grid parity of a stage (SparseViT's nested
    window sets per grid)."""
    out = dict(config)
    for stage in stages:
        for parity in parities(stage):
            for name, r in zip(parity, sorted((config[b] for b in parity), reverse=True)):
                out[name] = r
    return out


def search(model: LatencyModel, stages: list[list[str]], budget: float,
           errors_of: Callable[[Sequence[dict[str, float]]], list[float]], seed: int = SEED
           ) -> SearchResult | None:
    """The least-error configuration with model.cycles <= budget; None if none exists
    (the caller words the error). `errors_of(configs)`: the error of each."""
    rng = random.Random(seed)
    names = model.blocks
    key = lambda c: tuple(c[b] for b in names)  # noqa: E731
    errors: dict[tuple, float] = {}

    def feasible(c) -> bool:
        return model.cycles(c) <= budget * (1 + 1e-9)

    def score(c) -> float:
        return errors[key(c)]

    def score_all(configs: list[dict[str, float]]) -> None:
        """Score those of `configs` not yet scored, in one batch."""
        new = {key(c): c for c in configs if key(c) not in errors}
        if new:
            errors.update(zip(new, errors_of(list(new.values()))))

    population = [c for c in ({b: r for b in names} for r in RATIOS) if feasible(c)]
    for _ in range(TRIES):
        if len(population) >= POPULATION:
            break
        c = nested({b: rng.choice(RATIOS) for b in names}, stages)
        if feasible(c) and key(c) not in {key(p) for p in population}:
            population.append(c)
    if not population:
        return None
    for _ in progress(range(GENERATIONS), desc="SparseViT search", unit="gen"):
        score_all(population)
        parents = sorted(population, key=score)[:PARENTS]
        children = []
        for i in range(TRIES):
            if len(children) >= POPULATION - PARENTS:
                break
            if i % 3 == 0:
                p = rng.choice(parents)
                c = {b: rng.choice(RATIOS) if rng.random() < MUTATION else p[b] for b in names}
            elif i % 3 == 1:  # a step: one block one ratio up, another one down
                p = parents[0] if rng.random() < 0.5 else rng.choice(parents)
                c = dict(p)
                for b, step in ((rng.choice(names), 1), (rng.choice(names), -1)):
                    j = RATIOS.index(c[b]) + step
                    c[b] = RATIOS[min(max(j, 0), len(RATIOS) - 1)]
            else:
                p, q = rng.sample(parents, 2) if len(parents) > 1 else (parents[0], parents[0])
                c = {b: (p if rng.random() < 0.5 else q)[b] for b in names}
            c = nested(c, stages)
            if feasible(c):
                children.append(c)
        population = parents + children
    score_all(population)
    best = min(population, key=score)
    return SearchResult(best, score(best), model.cycles(best), model.dense(), len(errors))


def relative_error(y: list[np.ndarray], y_dense: list[np.ndarray]) -> float:
    num = sum(float(np.sum((a.astype(np.float64) - b) ** 2)) for a, b in zip(y, y_dense))
    den = sum(float(np.sum(b.astype(np.float64) ** 2)) for b in y_dense)
    return (num / den) ** 0.5 if den else float(num > 0)


def format_rows(config: dict[str, float], model: LatencyModel) -> list[str]:
    """One line per block: its keep ratio, kept windows and estimated cycles."""
    rows = [("block", "keep", "windows", "est. cycles")]
    for b in model.blocks:
        r = config[b]
        windows = model.windows[b]
        rows.append((b, f"{r:.1f}", f"{num_kept(r, windows)}/{windows}",
                     f"{model.cost[b][r]:.0f}"))
    width = [max(len(row[i]) for row in rows) for i in range(4)]
    return ["  ".join(cell.ljust(w) if i == 0 else cell.rjust(w)
                      for i, (cell, w) in enumerate(zip(row, width))) for row in rows]


def format_table(result: SearchResult, model: LatencyModel, budget_fraction: float) -> str:
    lines = format_rows(result.config, model)
    lines.append(
        f"latency {result.cycles:.0f} of {result.dense_cycles:.0f} estimated cycles "
        f"({result.cycles / result.dense_cycles:.2f} of dense, budget {budget_fraction:.2f}); "
        f"output error {result.error:.3g}; {result.evaluated} configurations evaluated")
    return "\n".join(lines)

"""ELSA-style layer-wise N:M search (METHODS.md, "ELSA"; arXiv 2409.09708).

Every sparsifiable layer takes one choice among dense and the target's N:M patterns (those
whose M divides the layer's input dimension K). A configuration's predicted accuracy loss is
the sum of its layers' sensitivities (`sensitivity.py`), or a score of the whole
configuration (`scores_of`: `nmc compile --sparsity elsa:...,rank=joint` its output error
on the calibration inputs, `nmc sparsify` its held-out error in the supernet); its cost is
either

- speedup: the predicted cycles of all the model's `nm.linear` layers (the head and other
  dense ones included, at their dense cost; `cost.linear_cycles`), which must be at most
  dense / S;
- flops: the MACs of those layers, a sparse one counting dense MACs x N/M, at most dense / F.

The search: a greedy allocation (from all-dense, repeatedly the move with the least added
error per cost saved, until the budget is met) seeds an evolutionary search as in ELSA
(population 50, the best 10 kept, 25 mutations + 25 crossovers per generation, 20
generations, fixed seed); a configuration over budget is repaired with greedy moves. The
best feasible configuration found is the result, so it is never worse than the greedy one.
A generation's new configurations are scored in one batch (`scores_of`), which a Dask
cluster may spread (nmc sparsify --workers): no random choice depends on the scores of the
generation being made, so batching changes nothing in the result.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Callable, Sequence

from nmc.common.nm_format import Pattern, pattern_text
from nmc.compiler.sparsity.spec import SparsityError
from nmc.common.progress import progress

POPULATION = 50
KEEP = 10
MUTATIONS = 25
CROSSOVERS = 25
GENERATIONS = 20
SEED = 0


@dataclass
class LayerChoices:
    """One sparsifiable layer: its choices (index 0 is dense) and their error and cost."""

    name: str
    patterns: list[Pattern]
    errors: list[float]
    costs: list[float]


@dataclass
class SearchResult:
    choice: list[int]  # index into each layer's patterns
    error: float
    cost: float
    dense_cost: float

    def patterns(self, layers: list[LayerChoices]) -> dict[str, Pattern]:
        return {l.name: l.patterns[c] for l, c in zip(layers, self.choice)}


@dataclass(frozen=True)
class SearchSize:
    """The evolutionary search's sizes (ELSA's by default)."""

    population: int = POPULATION
    keep: int = KEEP
    mutations: int = MUTATIONS
    crossovers: int = CROSSOVERS
    generations: int = GENERATIONS


SMALL_SEARCH = SearchSize(population=24, keep=6, mutations=10, crossovers=8, generations=8)
"""Smaller than ELSA's (50 / 10 / 25 / 25 / 20): for the searches whose every configuration
costs runs of a model (`scores_of`: a pass over the val split in `nmc sparsify`, one run
per calibration input with rank=joint); ~170 configurations, where ELSA's sizes score
~1,000."""


def search(layers: list[LayerChoices], fixed_cost: float, budget: float, what: str,
           factor: float,
           scores_of: Callable[[Sequence[list[int]]], list[float]] | None = None,
           size: SearchSize = SearchSize(), seed: int = SEED) -> SearchResult:
    """The configuration of least total error with fixed_cost + sum(costs) <= budget.
    `what` and `factor` word the error when no configuration meets the budget.

    With `scores_of`, the evolutionary search ranks configurations by their scores
    (scores_of(choices): one per choice, lower is better; `nmc sparsify` passes the
    held-out error of each whole configuration, rank=joint its output error on the
    calibration inputs) instead of the sum of the layers' errors,
    which then only order the greedy seed and the repair moves. `SearchResult.error` is
    the best score."""
    dense_total = fixed_cost + sum(l.costs[0] for l in layers)
    eps = 1e-9 * max(dense_total, 1.0)

    def cost(choice):
        return fixed_cost + sum(l.costs[c] for l, c in zip(layers, choice))

    def error(choice):
        return sum(l.errors[c] for l, c in zip(layers, choice))

    cheapest = [min(range(len(l.costs)), key=lambda c, l=l: (l.costs[c], l.errors[c]))
                for l in layers]
    best_cost = cost(cheapest)
    if best_cost > budget + eps:
        reach = dense_total / best_cost if best_cost > 0 else float("inf")
        raise SparsityError(
            f"--sparsity elsa:{what}={factor:g}: no configuration of the target's patterns "
            f"meets the budget; the best reachable {what} is {reach:.3f}x (every "
            f"sparsifiable layer at its cheapest pattern)")

    rng = random.Random(seed)

    def repair(choice, explore=False):
        """Greedy moves (least added error per cost saved) until within budget. With
        `explore` (a whole-configuration score), every other move is a random saving one
        instead: the layers' errors are then only a proxy, and always following them
        would confine the search to what the proxy favours."""
        choice = list(choice)
        total = cost(choice)
        while total > budget + eps:
            moves = []
            for i, l in enumerate(layers):
                cur = choice[i]
                for c in range(len(l.costs)):
                    saved = l.costs[cur] - l.costs[c]
                    if saved <= 0:
                        continue
                    ratio = (l.errors[c] - l.errors[cur]) / saved
                    moves.append(((ratio, -saved, i, c), i, c, saved))
            if not moves:  # cannot happen: the cheapest configuration is feasible
                break
            _, i, c, saved = rng.choice(moves) if explore and rng.random() < 0.5 \
                else min(moves)
            choice[i] = c
            total -= saved
        return choice

    greedy = repair([0] * len(layers))
    n_layers = len(layers)

    def mutate(choice):
        out = list(choice)
        for _ in range(max(1, rng.randint(1, max(1, n_layers // 8)))):
            i = rng.randrange(n_layers)
            out[i] = rng.randrange(len(layers[i].costs))
        return repair(out, explore=scores_of is not None)

    def crossover(a, b):
        return repair([x if rng.random() < 0.5 else y for x, y in zip(a, b)],
                      explore=scores_of is not None)

    seen: dict[tuple, tuple | None] = {}  # configuration -> (score, cost); None: to score

    def add(pop, choice):
        key = tuple(choice)
        if key not in seen:
            seen[key] = None
            pop.append(key)

    def score_new():
        """Score the configurations added since the last call, in one batch."""
        new = [k for k, v in seen.items() if v is None]
        scores = scores_of([list(k) for k in new]) if scores_of is not None \
            else [error(k) for k in new]
        for key, value in zip(new, scores):
            seen[key] = (value, cost(key))

    population: list[tuple] = []
    if n_layers:
        add(population, greedy)
        for _ in range(10 * size.population):  # small models have fewer configurations
            if len(population) >= size.population:
                break
            add(population, mutate(greedy) if rng.random() < 0.5
                else mutate([rng.randrange(len(l.costs)) for l in layers]))
        score_new()
        for _ in progress(range(size.generations), desc="ELSA search", unit="gen"):
            parents = sorted(population, key=lambda k: seen[k])[:size.keep]
            population = list(parents)
            for _ in range(size.mutations):
                add(population, mutate(rng.choice(parents)))
            for _ in range(size.crossovers):
                add(population, crossover(rng.choice(parents), rng.choice(parents)))
            score_new()
        best = list(min(population + [tuple(greedy)], key=lambda k: seen[k]))
    else:
        best = []
    best_score = seen[tuple(best)][0] if best and scores_of is not None else error(best)
    return SearchResult(best, best_score, cost(best), dense_total)


def format_table(rows: list[tuple[str, Pattern, float, float | None]], total_line: str,
                 cost_header: str = "cycles", error_header: str = "error") -> str:
    """(layer, pattern, cycles, error) rows as a text table."""
    width = max([len("layer")] + [len(r[0]) for r in rows])
    lines = [f"{'layer':{width}s}  {'pattern':>7s}  {cost_header:>10s}  {error_header:>9s}"]
    for name, pattern, cycles, err in rows:
        e = "-" if err is None else f"{err:.3e}"
        lines.append(f"{name:{width}s}  {pattern_text(pattern):>7s}  {int(cycles):>10d}  "
                     f"{e:>9s}")
    lines.append(total_line)
    return "\n".join(lines)

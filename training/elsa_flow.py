"""`nmc sparsify --budget speedup=S|flops=F`: ELSA on real data (METHODS.md, "ELSA").

Stages (each resumable, see run.py):

1. pretrain / dense: dense training when the model starts from random weights; the dense
   model's held-out accuracy is recorded.
2. supernet: ELSA's supernet fine-tuning (nm_supernet.py): shared weights, one sampled
   per-layer N:M configuration per step among dense and the target's patterns.
3. search: ELSA's evolutionary search (`sparsity.elsa.search`) over the supernet's
   configurations whose linear layers meet the budget, by their accuracy on the held-out
   `val` split (ties: val loss). Costs are the timing model's cycles of every linear layer
   (`sparsity.cost.linear_cycles`, what `nmc compile --sparsity elsa:speedup=S` budgets),
   or ELSA's MACs for flops=F. Each layer's val-loss increase alone at each pattern (the
   others dense) orders the greedy seed and the repair moves. Both score configurations
   in batches, here or over a Dask cluster (`nmc sparsify --workers N`: each worker builds
   the supernet once, `ChoiceScores`), with the same results.
4. finetune: the chosen configuration alone, masks still recomputed every step; then the
   masks are baked into the weights.

`nmc sparsify --sparsity N:M|FILE.json` (`given`) skips stages 2 and 3: the configuration
is the user's (a uniform pattern, or a file such as `nmc compile --sparsity elsa:...
--sparsity-out` writes), and only its fine-tune runs.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Callable, Iterator, Sequence

import torch
from xdsl.dialects.builtin import ModuleOp

from nmc.training.nm_supernet import FixedNM, NMSupernet
from nmc.training.errors import SparsifyError
from nmc.training.run import (
    Epochs, Run, TrainSettings, evaluate, held_out_error, pretrain,
    worker_threads,
)
from nmc.training.subject import PortableModule, Subject
from nmc.compiler.sparsity.elsa import SMALL_SEARCH, LayerChoices, search
from nmc.common.cluster import Remote, batch_scorer
from nmc.common.nm_format import Pattern
from nmc.compiler.transforms.assign_sparsity import Candidate, candidates
from nmc.isa.target import Target
from nmc.models.datasets import Dataset, Split

SEARCH_SIZE = SMALL_SEARCH
"""Every configuration costs a pass over the val split (elsa.SMALL_SEARCH)."""


@dataclass
class ElsaOutcome:
    config: dict[str, Pattern]  # every sparsifiable layer's pattern (None: dense)
    dense_accuracy: dict[str, float]  # val / test, before any sparsity
    accuracy: dict[str, float]  # val / test of the fine-tuned configuration
    cost: float  # of all linear layers (cycles, or MACs for flops)
    dense_cost: float
    layers: list[Candidate]
    sensitivity: list[list[float]] | None  # None: a given configuration, nothing measured

    @property
    def factor(self) -> float:
        return self.dense_cost / self.cost


Scores = Callable[[Sequence[list[int]]], list[tuple[float, float]]]
"""(val accuracy, val loss) of each of a batch of configurations (`choice_scorer`)."""


def layer_sensitivity(net: NMSupernet, scores: Scores) -> list[list[float]]:
    """Per layer and choice: the val-loss increase with that layer alone at that choice."""
    dense = [0] * len(net.params)
    alone = [(layer, c) for layer in range(len(net.params))
             for c in range(1, len(net.patterns[layer]))]
    choices = [dense]
    for layer, c in alone:
        choices.append(list(dense))
        choices[-1][layer] = c
    (_, base), *losses = scores(choices)
    out: list[list[float]] = [[0.0] for _ in net.params]
    for (layer, _), (_, loss) in zip(alone, losses):
        out[layer].append(max(0.0, loss - base))
    return out


class ChoiceScores:
    """(val accuracy, val loss) of a supernet at one configuration: the scorer of
    `choice_scorer`, here and on a Dask worker (`threads`: see `evaluate`)."""

    def __init__(self, net: NMSupernet, split: Split, threads: int | None = None):
        self.net, self.split, self.threads = net, split, threads

    def __call__(self, choice: list[int]) -> tuple[float, float]:
        return evaluate(lambda x: self.net.run(x, choice), self.split, threads=self.threads)


def _choice_scores_on_worker(payload) -> ChoiceScores:
    portable, params, patterns, split = payload
    return ChoiceScores(NMSupernet(portable.module(), params, patterns, 1), split,
                        threads=worker_threads())


@dataclass
class Supernet:
    """A trained supernet: the module (shared weights) and its sparsifiable layers."""

    module: torch.nn.Module
    layers: list[Candidate]
    fixed_cost: float  # the other linear layers (the head), dense
    dense_accuracy: dict[str, float]
    sensitivity: list[list[float]] | None = None  # layer_sensitivity, once measured
    origin: tuple = field(default=(), repr=False)  # the Subject's (PortableModule)

    def net(self) -> NMSupernet:
        return NMSupernet(self.module, [c.param for c in self.layers],
                          [c.patterns for c in self.layers], 1)

    @property
    def dense_cost(self) -> float:
        return self.fixed_cost + sum(c.costs[0] for c in self.layers)


@contextmanager
def choice_scorer(supernet: Supernet, split: Split) -> Iterator[Scores]:
    """The scores of batches of the supernet's configurations on `split` (its weights as
    they are now), here or over the Dask cluster offered to the command."""
    net = supernet.net()

    def remote() -> Remote:
        return Remote(_choice_scores_on_worker,
                      (PortableModule.of(supernet.origin, supernet.module), net.params,
                       net.patterns, split))

    with batch_scorer(lambda: ChoiceScores(net, split), remote, desc="val scores",
                      unit="configuration") as scores:
        yield scores


def train_supernet(run: Run, subject: Subject, data: Dataset, budget: str, target: Target,
                   epochs: Epochs) -> Supernet:
    """Stages 1 and 2: (pre-training and) ELSA's supernet fine-tuning."""
    module = subject.module
    dense = pretrain(run, module, data.splits, epochs.pretrain, epochs.batch_size,
                     teacher=epochs.distill)
    layers, fixed = candidates(subject.nm_view(), budget, target)
    steps = -(-len(data["train"]) // epochs.batch_size) * epochs.supernet
    net = NMSupernet(module, [c.param for c in layers], [c.patterns for c in layers], steps)
    run.train("supernet", net, data["train"], epochs.supernet_settings())
    return Supernet(module, layers, fixed, dense, origin=subject.origin)


def search_and_finetune(run: Run, supernet: Supernet, data: Dataset, budget: str,
                        factor: float, epochs: Epochs, log=print) -> ElsaOutcome:
    """Stages 3 and 4 on a trained supernet; its module ends with the masks baked in."""
    layers, fixed = supernet.layers, supernet.fixed_cost
    if not run.done("search"):
        scores: dict[tuple, tuple[float, float]] = {}
        with choice_scorer(supernet, data["val"]) as scores_of:
            if supernet.sensitivity is None:
                supernet.sensitivity = layer_sensitivity(supernet.net(), scores_of)
            sens = supernet.sensitivity

            def held_out(choices: Sequence[list[int]]) -> list[float]:
                results = scores_of(choices)
                scores.update(zip(map(tuple, choices), results))
                return [held_out_error(acc, loss) for acc, loss in results]

            choices = [LayerChoices(c.name, c.patterns, s, c.costs)
                       for c, s in zip(layers, sens)]
            found = search(choices, fixed, supernet.dense_cost / factor, budget, factor,
                           held_out, SEARCH_SIZE, seed=run.seed)
            if tuple(found.choice) not in scores:
                held_out([found.choice])
        run.finish("search", {"choice": found.choice, "val": scores[tuple(found.choice)][0],
                              "sensitivity": sens, "evaluated": len(scores)})
    searched = run.result("search")
    choice = searched["choice"]
    patterns = [c.patterns[i] for c, i in zip(layers, choice)]
    log(f"search: {searched['evaluated']} configurations evaluated on val; the chosen one "
        f"scores {searched['val']:.2%} in the supernet")
    accuracy = finetune(run, supernet.module, [c.param for c in layers], patterns, data,
                        epochs.finetune_settings())
    return outcome(layers, fixed, patterns, supernet.dense_accuracy, accuracy,
                   searched["sensitivity"])


def finetune(run: Run, module: torch.nn.Module, params: list[str], patterns: list[Pattern],
             data: Dataset, settings: TrainSettings) -> dict[str, float]:
    """Stage 4: fine-tune one configuration (masks recomputed every step), bake its masks
    into the weights; the val and test accuracy of the result."""
    fixed_net = FixedNM(module, params, patterns)
    run.train("finetune", fixed_net, data["train"], settings)
    fixed_net.bake([0] * len(params))
    return {s: evaluate(module, data[s])[0] for s in ("val", "test")}


def elsa(run: Run, subject: Subject, data: Dataset, budget: str, factor: float,
         target: Target, epochs: Epochs, log=print) -> ElsaOutcome:
    """The whole flow (module docstring)."""
    supernet = train_supernet(run, subject, data, budget, target, epochs)
    return search_and_finetune(run, supernet, data, budget, factor, epochs, log)


def given(run: Run, subject: Subject, data: Dataset, config: dict[str, Pattern],
          nm_view: ModuleOp, target: Target, epochs: Epochs) -> ElsaOutcome:
    """(Pre-training and) the fine-tune of a configuration the user gave (`config`: layer
    -> pattern, a subset of the sparsifiable layers; the others stay dense, checked on
    `nm_view`, the subject's nm IR); its cost is the timing model's linear cycles, as
    `--budget speedup=S` counts them."""
    module = subject.module
    dense = pretrain(run, module, data.splits, epochs.pretrain, epochs.batch_size,
                     teacher=epochs.distill)
    layers, fixed = candidates(nm_view, "speedup", target)
    names = {c.name for c in layers}
    # a layer it does not train sparse may be named dense: a file nmc compile takes (any
    # linear layer, the head too) is a file nmc sparsify takes
    other = [name for name, pattern in config.items()
             if name not in names and pattern is not None]
    if other:
        raise SparsifyError(f"--sparsity: {', '.join(other)} is not a layer nmc sparsify "
                            f"trains sparse (the linears of the transformer blocks: "
                            f"{', '.join(c.name for c in layers[:4])}, ...)")
    patterns = [config.get(c.name) for c in layers]
    accuracy = finetune(run, module, [c.param for c in layers], patterns, data,
                        epochs.finetune_settings(after_supernet=False))
    return outcome(layers, fixed, patterns, dense, accuracy, None)


def outcome(layers: list[Candidate], fixed: float, patterns: list[Pattern],
            dense_accuracy: dict[str, float], accuracy: dict[str, float],
            sensitivity: list[list[float]] | None) -> ElsaOutcome:
    """A fine-tuned configuration (`patterns`, one per layer) with its cost and the dense
    cost (`fixed`: the other linear layers')."""
    cost = fixed + sum(c.costs[c.patterns.index(p)] for c, p in zip(layers, patterns))
    return ElsaOutcome({c.name: p for c, p in zip(layers, patterns)}, dense_accuracy,
                       accuracy, cost, fixed + sum(c.costs[0] for c in layers), layers,
                       sensitivity)


def format_outcome(o: ElsaOutcome, budget: str) -> str:
    from nmc.compiler.sparsity.elsa import format_table

    sensitivity = o.sensitivity or [None] * len(o.layers)
    by_name = {c.name: (c, s) for c, s in zip(o.layers, sensitivity)}
    rows = []
    for name, pattern in o.config.items():
        c, sens = by_name[name]
        i = c.patterns.index(pattern)
        rows.append((name, pattern, c.costs[i], None if sens is None else sens[i]))
    unit = "cycles" if budget == "speedup" else "MACs"
    what = "faster" if budget == "speedup" else "fewer MACs"
    total = (f"linear layers: {o.cost:.0f} {unit}, {o.factor:.3f}x {what} than dense; "
             f"top-1 val {o.accuracy['val']:.2%} test {o.accuracy['test']:.2%} (dense "
             f"{o.dense_accuracy['val']:.2%} / {o.dense_accuracy['test']:.2%})")
    # the last column: the layer's val-loss increase alone at its pattern ("-": given)
    return format_table(rows, total, cost_header=unit, error_header="dval loss")

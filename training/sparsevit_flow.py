"""`nmc sparsify --budget latency=L`: SparseViT on real data (METHODS.md, "SparseViT").

Stages (each resumable, see run.py):

1. pretrain / dense: as for ELSA.
2. adapt: sparse-aware adaptation (window_supernet.py): random per-block window keep
   ratios every step.
3. search: SparseViT's evolutionary search (`sparsity.sparsevit.search`) over per-block
   keep ratios whose modelled latency is at most L x dense, by their accuracy on the
   held-out `val` split (ties: val loss). The latency model is the one of `nmc compile
   --window-keep sparsevit:latency=L` (`sparsity.window_search.latency_model`: kernel
   estimates of the window-pruned nm IR, per block and ratio). Configurations are scored
   in batches, here or over a Dask cluster (`nmc sparsify --workers N`: each worker builds
   the model once, `WindowScores`), with the same results.
4. finetune: the chosen ratios alone.

The model keeps its dense form (the compiler prunes windows at run time); the ratios are
the output beside it, the JSON `nmc compile --window-keep FILE.json` reads.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import torch

from nmc.training.run import (
    Epochs, Run, SparsifyError, evaluate, held_out_error, pretrain,
    worker_threads,
)
from nmc.training.subject import PortableModule, Subject
from nmc.training.window_supernet import FixedWindows, WindowAdaptation
from nmc.common.cluster import Remote, batch_scorer
from nmc.compiler.sparsity import sparsevit
from nmc.isa.target import Target
from nmc.models.datasets import Dataset, Split


@dataclass
class WindowOutcome:
    config: dict[str, float]
    dense_accuracy: dict[str, float]
    accuracy: dict[str, float]
    cycles: float  # modelled (estimated) cycles of the whole model at `config`
    dense_cycles: float
    latency: sparsevit.LatencyModel

    @property
    def fraction(self) -> float:
        return self.cycles / self.dense_cycles


def window_latency(subject: Subject, target: Target):
    """(the latency model, block names by stage) of a Swin."""
    from nmc.compiler.sparsity.window_search import latency_model
    from nmc.compiler.sparsity.window_rewrite import stages_of, swin_blocks

    module = subject.nm_view(passes=())
    blocks = swin_blocks(module)
    if not blocks:
        raise SparsifyError(f"{subject.name}: no Swin blocks found; --budget latency=L "
                            f"(SparseViT window pruning) needs a Swin model")
    return latency_model(module, blocks, target), stages_of(blocks)


@dataclass
class Adapted:
    """A Swin after sparse-aware adaptation, with its latency model."""

    module: torch.nn.Module
    latency: sparsevit.LatencyModel
    stages: list[list[str]]
    dense_accuracy: dict[str, float]
    origin: tuple = field(default=(), repr=False)  # the Subject's (PortableModule)


class WindowScores:
    """(val accuracy, val loss) of an adapted Swin at one configuration of keep ratios:
    the scorer of the search, here and on a Dask worker (`threads`: see `evaluate`)."""

    def __init__(self, runner: WindowAdaptation, split: Split, threads: int | None = None):
        self.runner, self.split, self.threads = runner, split, threads

    def __call__(self, config: dict[str, float]) -> tuple[float, float]:
        return evaluate(lambda x: self.runner.run(x, config), self.split,
                        threads=self.threads)


def _window_scores_on_worker(payload) -> WindowScores:
    portable, stages, split = payload
    return WindowScores(WindowAdaptation(portable.module(), stages), split,
                        threads=worker_threads())


def adapt(run: Run, subject: Subject, data: Dataset, target: Target,
          epochs: Epochs) -> Adapted:
    """Stages 1 and 2: (pre-training and) sparse-aware adaptation."""
    module = subject.module
    if not hasattr(module, "set_window_keep"):
        if subject.from_arch:
            raise SparsifyError(f"{subject.name} is not a Swin: --budget latency=L (SparseViT "
                                f"window pruning) needs a Swin model, e.g. swin_digits")
        raise SparsifyError(f"{subject.name}: window adaptation needs nmc's own Swin (give "
                            f"the architecture name, e.g. swin_digits, not a torch.export "
                            f"file: its graph cannot switch keep ratios)")
    latency, stages = window_latency(subject, target)
    dense = pretrain(run, module, data.splits, epochs.pretrain, epochs.batch_size,
                     teacher=epochs.distill)
    run.train("adapt", WindowAdaptation(module, stages), data["train"],
              epochs.supernet_settings())
    return Adapted(module, latency, stages, dense, origin=subject.origin)


def search_and_finetune(run: Run, adapted: Adapted, data: Dataset, fraction: float,
                        epochs: Epochs, log=print) -> WindowOutcome:
    """Stages 3 and 4 on an adapted Swin (its module is left dense in form)."""
    latency, module = adapted.latency, adapted.module
    if not run.done("search"):
        scores: dict[tuple, float] = {}

        def remote() -> Remote:
            return Remote(_window_scores_on_worker,
                          (PortableModule.of(adapted.origin, module), adapted.stages,
                           data["val"]))

        with batch_scorer(lambda: WindowScores(WindowAdaptation(module, adapted.stages),
                                               data["val"]),
                          remote, desc="val scores", unit="configuration") as scores_of:

            def errors_of(configs: Sequence[dict[str, float]]) -> list[float]:
                results = scores_of(configs)
                scores.update((tuple(sorted(c.items())), acc)
                              for c, (acc, _) in zip(configs, results))
                return [held_out_error(acc, loss) for acc, loss in results]

            found = sparsevit.search(latency, adapted.stages, fraction * latency.dense(),
                                     errors_of, seed=run.seed)
        module.set_window_keep(None)
        if found is None:
            raise SparsifyError(f"--budget latency={fraction:g}: no keep ratios meet it "
                                f"(keep {sparsevit.RATIOS[0]} everywhere gives "
                                f"{latency.lowest_fraction():.2f} of the dense latency)")
        run.finish("search", {"config": found.config,
                              "val": scores[tuple(sorted(found.config.items()))],
                              "evaluated": len(scores)})
    searched = run.result("search")
    config = {b: float(r) for b, r in searched["config"].items()}
    log(f"search: {searched['evaluated']} keep-ratio configurations evaluated on val; the "
        f"chosen one scores {searched['val']:.2%} after adaptation")
    accuracy = finetune(run, module, config, data, epochs)
    return WindowOutcome(config, adapted.dense_accuracy, accuracy, latency.cycles(config),
                         latency.dense(), latency)


def finetune(run: Run, module: torch.nn.Module, config: dict[str, float], data: Dataset,
             epochs: Epochs) -> dict[str, float]:
    """Stage 4: fine-tune at one configuration of keep ratios; the val and test accuracy
    of the pruned model (the module is left dense in form)."""
    fixed = FixedWindows(module, config)
    run.train("finetune", fixed, data["train"], epochs.finetune_settings())
    accuracy = {s: evaluate(lambda x: fixed.run(x, config), data[s])[0]
                for s in ("val", "test")}
    module.set_window_keep(None)
    return accuracy


def sparsevit_flow(run: Run, subject: Subject, data: Dataset, fraction: float,
                   target: Target, epochs: Epochs, log=print) -> WindowOutcome:
    """The whole flow (module docstring)."""
    adapted = adapt(run, subject, data, target, epochs)
    return search_and_finetune(run, adapted, data, fraction, epochs, log)


def format_outcome(o: WindowOutcome) -> str:
    lines = sparsevit.format_rows(o.config, o.latency)
    lines.append(f"modelled latency {o.cycles:.0f} of {o.dense_cycles:.0f} cycles "
                 f"({o.fraction:.2f} of dense, {1 / o.fraction:.2f}x faster); top-1 val "
                 f"{o.accuracy['val']:.2%} test {o.accuracy['test']:.2%} (dense "
                 f"{o.dense_accuracy['val']:.2%} / {o.dense_accuracy['test']:.2%})")
    return "\n".join(lines)

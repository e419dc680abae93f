"""A resumable training run: stages of epochs, a checkpoint after every epoch.

`nmc sparsify` is a sequence of stages (dense pre-training, supernet training or window
adaptation, search, fine-tune of the chosen configuration). `Run` keeps, in one checkpoint
file, which stages are done and their results, the model's weights, and for the stage in
progress its epoch, optimiser and regime state. Killed at any point, the same command
resumes after the last finished epoch and ends with the same weights, bit for bit, as an
uninterrupted run: every random choice of an epoch (data order, sampled configurations)
comes from a generator seeded by (seed, stage, epoch), not from state carried across
epochs, and torch runs on a fixed number of threads (THREADS), so the reduction order
never varies between runs on one machine.

The checkpoint records the options that shape the result (`key`); resuming with other
options is refused, `restart=True` starts over. Options that only the search and the
fine-tune use (the budget) are keyed apart: a run with another budget on the same
checkpoint keeps its SHARED_STAGES (pre-training, supernet or adaptation: the expensive,
budget-independent part, as ELSA trains one supernet for every budget) and redoes the
rest from the weights those stages ended with.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import os
import random
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Protocol

import torch
import torch.nn.functional as F

from nmc.common.fileio import atomic_write_bytes
from nmc.common.progress import progress
from nmc.common.threads import torch_threads
from nmc.models.datasets import Split
from nmc.models.registry import set_training
from nmc.training import data_parallel
from nmc.training.distill import distillation_loss, teacher_logits
from nmc.training.errors import SparsifyError


@dataclass(frozen=True)
class TrainSettings:
    """AdamW with a cosine learning-rate schedule (one warm-up epoch when training from
    scratch), cross-entropy with label smoothing, fixed batch size; with `distill`, the
    loss of distill.py against the logits the run recorded as stage "teacher"."""

    epochs: int
    lr: float = 1e-3
    weight_decay: float = 0.05
    batch_size: int = 64
    label_smoothing: float = 0.1
    warmup_epochs: int = 0
    distill: bool = False


FINETUNE_LR = 5e-4
"""The sparse stages' default peak learning rate: right for the models nmc trains from
scratch on small data sets; a pretrained model fine-tunes at about 1e-5 to 5e-5 (`nmc
sparsify --lr`), or its features are overwritten within the first epoch."""


@dataclass(frozen=True)
class Epochs:
    """The epochs of each stage of `nmc sparsify`, its batch size, and the peak learning
    rate of the sparse stages (the supernet or adaptation at `lr`, the chosen
    configuration's fine-tune at half of it; dense pre-training has its own, PRETRAIN_LR)."""

    pretrain: int  # dense, from scratch
    supernet: int  # ELSA's supernet, or SparseViT's adaptation
    finetune: int  # the chosen configuration
    batch_size: int = 64
    lr: float = FINETUNE_LR
    distill: bool = False  # the sparse stages learn the dense model's logits (distill.py)

    def supernet_settings(self) -> TrainSettings:
        """ELSA's supernet or SparseViT's adaptation."""
        return TrainSettings(epochs=self.supernet, lr=self.lr, batch_size=self.batch_size,
                             distill=self.distill)

    def finetune_settings(self, after_supernet: bool = True) -> TrainSettings:
        """The chosen configuration's fine-tune: after a supernet or adaptation at half the
        learning rate (it starts from weights already trained for sparsity); a given
        configuration (`nmc sparsify --sparsity`) at the whole."""
        lr = self.lr / 2 if after_supernet else self.lr
        return TrainSettings(epochs=self.finetune, lr=lr, batch_size=self.batch_size,
                             distill=self.distill)


class Regime(Protocol):
    """How a stage runs the model: dense, one sampled N:M configuration per step (ELSA's
    supernet), sampled window keep ratios per step (SparseViT's adaptation), ..."""

    def begin_step(self, rng: random.Random) -> None: ...

    def forward(self, images: torch.Tensor) -> torch.Tensor: ...

    def end_step(self, logits: torch.Tensor, labels: torch.Tensor) -> None: ...

    def state_dict(self) -> dict: ...

    def load_state_dict(self, state: dict) -> None: ...


def derived_seed(*parts: object) -> int:
    """A 63-bit seed from (seed, stage, epoch, ...): independent streams per epoch."""
    digest = hashlib.sha256(json.dumps([str(p) for p in parts]).encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def options_key(options: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(options, sort_keys=True, default=str).encode()).hexdigest()


SHARED_STAGES = ("pretrain", "dense", "teacher", "supernet", "adapt")


class Run:
    """The checkpointed state of one `nmc sparsify` run (module docstring). `options`
    shape every stage; `budget_options` only those after SHARED_STAGES."""

    def __init__(self, model: torch.nn.Module, path: Path | None, options: dict[str, Any],
                 seed: int, *, budget_options: dict[str, Any] | None = None,
                 restart: bool = False, log: Callable[[str], None] = print,
                 stop_after_epochs: int | None = None):
        self.model, self.path, self.seed, self.log = model, path, seed, log
        self.shared_key = options_key({**options, "seed": seed})
        self.key = options_key({**options, **(budget_options or {}), "seed": seed})
        # tests: raise KeyboardInterrupt after this many epochs (an interrupted run)
        self._stop_after = stop_after_epochs
        self._epochs_run = 0
        self.state: dict[str, Any] = {"key": self.key, "shared_key": self.shared_key,
                                      "completed": [], "results": {}, "stage": None,
                                      "epoch": 0}
        if path is not None and path.exists() and not restart:
            self._resume(path)

    def _resume(self, path: Path) -> None:
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:  # unpickling errors come in many types
            raise SparsifyError(f"checkpoint {path} cannot be read ({type(e).__name__}); "
                                f"delete it or pass --restart") from None
        if not isinstance(state, dict) or state.get("shared_key") != self.shared_key:
            raise SparsifyError(f"checkpoint {path} was made with other options or another "
                                f"seed; pass --restart to start over (or -o another file)")
        reuse = state["key"] != self.key
        if reuse:  # another budget: keep the shared stages, from the weights they ended with
            in_shared = state["stage"] in SHARED_STAGES
            state["completed"] = [s for s in state["completed"] if s in SHARED_STAGES]
            state["results"] = {s: r for s, r in state["results"].items()
                                if s in SHARED_STAGES}
            if not in_shared:
                state.update(stage=None, epoch=0)
                state.pop("optimizer", None)
                state.pop("regime", None)
                state["model"] = state.get("shared_model", state["model"])
            state["key"] = self.key
        self.state = state
        self.model.load_state_dict(state["model"])
        done = ", ".join(state["completed"]) or "nothing"
        where = f"; {state['stage']} at epoch {state['epoch']}" if state["stage"] else ""
        what = "reusing (made for another budget)" if reuse else "resuming from"
        self.log(f"{what} {path}: done {done}{where}")

    def save(self) -> None:
        if self.path is None or not data_parallel.is_main():  # rank 0 writes for all
            return
        self.state["model"] = self.model.state_dict()
        buf = io.BytesIO()
        torch.save(self.state, buf)
        atomic_write_bytes(self.path, buf.getvalue())

    # ---------------------------------------------------------------- stages

    def done(self, stage: str) -> bool:
        return stage in self.state["completed"]

    def result(self, stage: str) -> Any:
        return self.state["results"].get(stage)

    def finish(self, stage: str, result: Any = None) -> None:
        """Mark `stage` done with its result (JSON-like) and save."""
        self.state["completed"].append(stage)
        self.state["results"][stage] = result
        if stage in SHARED_STAGES:  # what a run with another budget starts from
            self.state["shared_model"] = {k: v.detach().clone()
                                          for k, v in self.model.state_dict().items()}
        self.state["stage"], self.state["epoch"] = None, 0
        self.state.pop("optimizer", None)
        self.state.pop("regime", None)
        self.save()

    def train(self, stage: str, regime: Regime, split: Split, settings: TrainSettings) -> None:
        """Train for settings.epochs (resuming inside the stage), then mark it done."""
        if self.done(stage):
            return
        opt = torch.optim.AdamW(self.model.parameters(), lr=settings.lr,
                                weight_decay=settings.weight_decay)
        start = 0
        if self.state["stage"] == stage:
            start = int(self.state["epoch"])
            opt.load_state_dict(self.state["optimizer"])
            regime.load_state_dict(self.state["regime"])
        n = len(split)
        steps_per_epoch = max(1, math.ceil(n / settings.batch_size))
        total = steps_per_epoch * settings.epochs
        warm = steps_per_epoch * settings.warmup_epochs

        def lr_at(step: int) -> float:
            if step < warm:
                return settings.lr * (step + 1) / warm
            t = (step - warm) / max(1, total - warm)
            return settings.lr * 0.5 * (1 + math.cos(math.pi * t))

        teacher = None
        if settings.distill:
            teacher = self.result("teacher")
            if teacher is None:
                raise RuntimeError(f"stage {stage} distils, but no teacher was recorded "
                                   f"(pretrain(..., teacher=True))")
        set_training(self.model, True)
        parallel = data_parallel.size() > 1
        began, epochs_here = time.perf_counter(), settings.epochs - start
        with torch_threads(data_parallel.threads(THREADS)):
            bar = progress(range(start, settings.epochs), desc=stage, unit="epoch")
            mean_loss = None
            for epoch in bar:
                losses = []
                gen = torch.Generator().manual_seed(derived_seed(self.seed, stage, epoch, "data"))
                rng = random.Random(derived_seed(self.seed, stage, epoch, "regime"))
                order = torch.randperm(n, generator=gen)
                for i in range(steps_per_epoch):
                    idx = order[i * settings.batch_size:(i + 1) * settings.batch_size]
                    for group in opt.param_groups:
                        group["lr"] = lr_at(epoch * steps_per_epoch + i)
                    regime.begin_step(rng)
                    if parallel:  # this rank's shard of the batch (data_parallel.py)
                        losses.append(self._parallel_step(regime, split, idx, opt, settings,
                                                          teacher))
                        continue
                    logits = regime.forward(split.images[idx])
                    loss = _loss(logits, split.labels[idx], teacher, idx, settings, "mean")
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    opt.step()
                    regime.end_step(logits.detach(), split.labels[idx])
                    losses.append(float(loss.detach()))
                mean_loss = sum(losses) / len(losses)
                bar.set_postfix_str(f"loss {mean_loss:.3f}")
                self.state.update(stage=stage, epoch=epoch + 1, optimizer=opt.state_dict(),
                                  regime=regime.state_dict())
                self.save()
                self._epochs_run += 1
                if self._stop_after is not None and self._epochs_run >= self._stop_after:
                    raise KeyboardInterrupt
        set_training(self.model, False)
        if mean_loss is not None:
            per_epoch = (time.perf_counter() - began) / epochs_here
            self.log(f"{stage}: {settings.epochs} epochs done (last epoch's training loss "
                     f"{mean_loss:.3f}; {per_epoch:.2f} s per epoch)")
        self.finish(stage, asdict(settings))

    def _parallel_step(self, regime: Regime, split: Split, idx: torch.Tensor, opt,
                       settings: TrainSettings, teacher: torch.Tensor | None) -> float:
        """One step of data-parallel training: forward and backward of this rank's shard
        of the batch `idx`, with its loss summed and divided by the whole batch's size, so
        that the gradients summed over the ranks are those of the batch's mean loss; the
        regime sees the whole batch's logits. Returns the batch's mean loss."""
        mine = idx[data_parallel.shard(len(idx))]
        logits = regime.forward(split.images[mine])
        loss = _loss(logits, split.labels[mine], teacher, mine, settings, "sum") / len(idx)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        mean_loss = data_parallel.sync_gradients(self.model.parameters(), loss)
        opt.step()
        regime.end_step(data_parallel.gather_rows(logits.detach(), len(idx)),
                        split.labels[idx])
        return mean_loss


def _loss(logits: torch.Tensor, labels: torch.Tensor, teacher: torch.Tensor | None,
          idx: torch.Tensor, settings: TrainSettings, reduction: str) -> torch.Tensor:
    """A training step's loss on the images `idx` of the split (their `logits`):
    cross-entropy with label smoothing, or with a teacher's logits the distillation loss."""
    if teacher is None:
        return F.cross_entropy(logits, labels, reduction=reduction,
                               label_smoothing=settings.label_smoothing)
    return distillation_loss(logits, teacher[idx], labels, reduction=reduction,
                             label_smoothing=settings.label_smoothing)


THREADS = min(2, os.cpu_count() or 1)
"""deit_digits trains 1.6x faster on 2 threads than on 1 (2-core VM); more threads would
make results depend on the machine's core count."""


def worker_threads() -> int:
    """torch threads for scoring on a Dask worker: the worker's own (Dask starts a worker
    process with OMP_NUM_THREADS set to its task threads, 1 on nmc's LocalCluster), not
    THREADS: N one-thread workers use N cores, where N workers of THREADS threads would
    oversubscribe them (a `nmc sparsify --workers 2` search ran over 3x slower than one
    process on 2 loaded cores). The scores are the same bits: the kernels of these models
    (MKL's GEMM, oneDNN's convolution, per-row norms and softmax) gave identical outputs
    on 1 and 2 threads (deit_digits, swin_digits, deit_small, swin_tiny), and the tests
    compare the searches' results with one process's."""
    return torch.get_num_threads()


@torch.no_grad()
def evaluate(forward: Callable[[torch.Tensor], torch.Tensor], split: Split,
             batch_size: int = 512, threads: int | None = None) -> tuple[float, float]:
    """(top-1 accuracy, mean cross-entropy) of `forward` on a split, on `threads` torch
    threads (default: THREADS, shared by the ranks of data-parallel training). Under
    data-parallel training each rank scores a contiguous part of the split and the sums
    are added up, so every rank gets the same numbers."""
    correct, loss = 0, 0.0
    part = data_parallel.shard(len(split))  # all of it outside data-parallel training
    with torch_threads(threads or data_parallel.threads(THREADS)):
        for i in range(part.start, part.stop, batch_size):
            end = min(i + batch_size, part.stop)
            logits = forward(split.images[i:end])
            labels = split.labels[i:end]
            correct += int((logits.argmax(-1) == labels).sum())
            loss += float(F.cross_entropy(logits, labels, reduction="sum"))
    if data_parallel.size() > 1:
        correct, loss = data_parallel.sum_over_ranks([correct, loss])
    return correct / len(split), loss / len(split)


class Dense:
    """The plain model: pre-training and fine-tuning without sparsity."""

    def __init__(self, model: torch.nn.Module):
        self.model = model

    def begin_step(self, rng: random.Random) -> None:
        pass

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.model(images)

    def end_step(self, logits: torch.Tensor, labels: torch.Tensor) -> None:
        pass

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass


TIE = 1e-4
"""Weight of the held-out loss in `held_out_error`: it only breaks ties of accuracy (one
image of a 359-image split is 2.8e-3 of accuracy; a loss term stays below that)."""


def held_out_error(accuracy: float, loss: float) -> float:
    """What the searches minimise: the held-out error rate, ties broken by the loss."""
    return (1.0 - accuracy) + TIE * min(loss, 25.0)


PRETRAIN_LR = 1e-3


def pretrain(run: Run, module: torch.nn.Module, splits: dict[str, Split], epochs: int,
             batch_size: int = 64, teacher: bool = False) -> dict[str, float]:
    """Dense training from scratch (when `epochs` > 0), then the dense model's accuracy on
    val and test, recorded as stage "dense" (the reference every sparse result is read
    against); with `teacher`, its logits on the train split too, as stage "teacher" (what
    the sparse stages distil from, TrainSettings.distill)."""
    if epochs > 0:
        run.train("pretrain", Dense(module), splits["train"],
                  TrainSettings(epochs=epochs, lr=PRETRAIN_LR, warmup_epochs=1,
                                batch_size=batch_size))
    if not run.done("dense"):
        set_training(module, False)
        run.finish("dense", {s: evaluate(module, splits[s])[0] for s in ("val", "test")})
        run.log(f"dense model: top-1 val {run.result('dense')['val']:.2%}, test "
                f"{run.result('dense')['test']:.2%}")
    if teacher and not run.done("teacher"):
        set_training(module, False)
        with torch_threads(data_parallel.threads(THREADS)):
            run.finish("teacher", teacher_logits(module, splits["train"]))
    return run.result("dense")

"""`nmc eval --workers N / --scheduler ADDRESS`: a classifier's evaluation sharded over a
Dask cluster (`nmc.common.cluster`).

The images are cut into contiguous shards whose sizes are multiples of the program's batch,
so every run of the program sees exactly the images, padding included, that the serial
`run_classifier` gives it: the logits, hence the predictions, are those of `--workers 1`,
bit for bit, in data-set order. Each worker loads the program once (`LoadedProgram`, kept
by `built_once` for the next shard while the same program bytes and target come back) and
runs its shards with `run_classifier`. The program travels as its prog.bin bytes, once per
worker.
"""

from __future__ import annotations

import hashlib
import math

import numpy as np

from nmc.common.cluster import built_once, map_ordered, worker_count
from nmc.isa.container import program_from_bytes
from nmc.isa.target import Target
from nmc.runtime.emulator import LoadedProgram
from nmc.runtime.evaluate import Evaluation, check_classifier, run_classifier

SHARDS_PER_WORKER = 4
"""Shards per worker: enough that a slow or restarted worker leaves the others work to
take (Dask balances tasks, not images), few enough that each shard amortises its task's
overhead (milliseconds, against seconds of emulation)."""


def shard_bounds(count: int, batch: int, shards: int) -> list[tuple[int, int]]:
    """[start, end) of at most `shards` contiguous shards covering `count` images, each
    but the last a multiple of `batch` images long."""
    per_shard = math.ceil(count / max(1, shards) / batch) * batch if count else batch
    return [(start, min(start + per_shard, count)) for start in range(0, count, per_shard)]


def run_classifier_sharded(client, program, program_bytes: bytes, target: Target,
                           images: np.ndarray) -> Evaluation:
    """`run_classifier(program, target, images)`, spread over the workers of `client` (a
    `distributed.Client`); `program_bytes`: its prog.bin, what the workers load."""
    sym, _ = check_classifier(program, images)  # here, before any work is sent
    batch = int(sym.shape[0])
    bounds = shard_bounds(len(images), batch, SHARDS_PER_WORKER * max(1, worker_count(client)))
    if not bounds:  # no images: nothing to send; the serial path gives the empty result
        return run_classifier(program, target, images)
    digest = hashlib.sha256(program_bytes).hexdigest()
    parts = map_ordered(client, _classify_shard, (program_bytes, digest, target),
                        [images[lo:hi] for lo, hi in bounds], desc="eval",
                        names=[f"images {lo}..{hi - 1}" for lo, hi in bounds])
    logits = np.concatenate([p for p, _ in parts])
    return Evaluation(np.argmax(logits, axis=1), logits, parts[0][1], batch)


def _classify_shard(shared: tuple[bytes, str, Target], images: np.ndarray):
    """On a worker: (logits, cycles per run) of the program on one shard of images."""
    program_bytes, digest, target = shared
    loaded = built_once(("program", digest, target),
                        lambda: LoadedProgram(program_from_bytes(program_bytes), target))
    result = run_classifier(loaded.program, target, images, loaded=loaded)
    return result.logits, result.cycles_per_run

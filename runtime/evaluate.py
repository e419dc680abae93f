"""A compiled classifier's accuracy, measured on the emulator itself (`nmc eval`).

The program is loaded once (`LoadedProgram`) and run on the images in batches of its
input's batch size (a last partial batch is padded with zeros, whose outputs are dropped),
`RUNS_PER_WALK` of those runs at a time in one walk of the instruction stream
(`LoadedProgram.run_batch`, bit-identical to running them one by one).
Its outputs are the logits; the prediction is their argmax, as in PyTorch (ties: the
lowest class index, numpy's and torch's rule alike).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from nmc.common.progress import progress
from nmc.isa.target import Target
from nmc.runtime.emulator import LoadedProgram
from nmc.runtime.errors import EmulatorError


RUNS_PER_WALK = 8
"""Runs of the program per walk of its instructions (memory grows with it: every walk
holds this many copies of the program's memories)."""


@dataclass
class Evaluation:
    predictions: np.ndarray  # [n] int64
    logits: np.ndarray  # [n, classes] float32
    cycles_per_run: int  # cycles of one run of the program (one batch)
    batch: int

    def accuracy(self, labels: np.ndarray) -> float:
        return float(np.mean(self.predictions == labels)) if len(labels) else 0.0


def input_symbol(program):
    inputs = [s for s in program.symbols if s.kind == "input"]
    if len(inputs) != 1 or len(inputs[0].shape) != 4:
        shapes = [list(s.shape) for s in inputs]
        raise EmulatorError(f"nmc eval needs a program with one image input [B, C, H, W]; "
                            f"this one takes {shapes}")
    return inputs[0]


def check_classifier(program, images: np.ndarray):
    """(input symbol, output symbols) of a classifier `program` that takes `images`; an
    EmulatorError if it is not one or they are not its images."""
    sym = input_symbol(program)
    outputs = [s for s in program.symbols if s.kind == "output"]
    if len(outputs) != 1 or len(outputs[0].shape) != 2:
        raise EmulatorError(f"nmc eval needs a classifier: one output [B, classes]; this "
                            f"program returns {[list(s.shape) for s in outputs]}")
    if tuple(images.shape[1:]) != tuple(int(d) for d in sym.shape[1:]):
        raise EmulatorError(f"images of shape {list(images.shape[1:])} for a program whose "
                            f"input '{sym.name}' takes {list(sym.shape)}")
    return sym, outputs


def run_classifier(program, target: Target, images: np.ndarray,
                   loaded: LoadedProgram | None = None) -> Evaluation:
    """Run `program` on `images` [n, C, H, W] (float32, the program's C, H, W); `loaded`:
    the program already loaded for `target` (a Dask worker's, reused for every shard)."""
    sym, outputs = check_classifier(program, images)
    batch, shape = int(sym.shape[0]), tuple(int(d) for d in sym.shape[1:])
    loaded = loaded if loaded is not None else LoadedProgram(program, target)
    logits, cycles = [], 0
    step = batch * RUNS_PER_WALK
    with progress(total=len(images), desc="eval", unit="image") as bar:
        for start in range(0, len(images), step):
            part = images[start:start + step]
            runs = -(-len(part) // batch)
            chunks = np.zeros((runs * batch, *shape), np.float32)
            chunks[:len(part)] = part
            results = loaded.run_batch([{sym.name: chunks[r * batch:(r + 1) * batch]}
                                        for r in range(runs)])
            out = np.concatenate([next(iter(r.outputs.values())) for r in results])
            logits.append(out[:len(part)])
            cycles = int(results[-1].total_cycles)
            bar.update(len(part))
    out = np.concatenate(logits) if logits else np.zeros((0, outputs[0].shape[1]), np.float32)
    return Evaluation(np.argmax(out, axis=1), out, cycles, batch)

"""A compiled classifier's accuracy, measured on the emulator itself (`nmc eval`).

The program is loaded once (`LoadedProgram`) and run on the images in batches of its
input's batch size (a last partial batch is padded with zeros, whose outputs are dropped).
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
    starts = range(0, len(images), batch)
    for start in progress(starts, desc="eval", unit="batch"):
        chunk = np.zeros((batch, *shape), np.float32)
        part = images[start:start + batch]
        chunk[:len(part)] = part
        result = loaded.run({sym.name: chunk})
        logits.append(next(iter(result.outputs.values()))[:len(part)])
        cycles = int(result.total_cycles)
    out = np.concatenate(logits) if logits else np.zeros((0, outputs[0].shape[1]), np.float32)
    return Evaluation(np.argmax(out, axis=1), out, cycles, batch)

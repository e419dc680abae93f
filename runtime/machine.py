"""Machine state: one flat float32 array per memory, indexed by `Mem`.

DRAM is sized by the program (`Program.dram_words`, at most the target's), the on-chip
memories by the target. Memory that neither a constant nor an input initialises holds
`fill` (0.0 by default; pass NaN to make reads of uninitialised memory visible).

A machine can be reused for another run of the same program: `reset(dram_ranges)` puts back
the state of a fresh one where a run can have changed it (the on-chip memories and the DRAM
ranges the program stores to), which for a big model is a few MB instead of the whole DRAM.
"""

from __future__ import annotations

import numpy as np

from nmc.isa.table import Mem
from nmc.isa.target import Target
from nmc.runtime.errors import EmulatorError


class Machine:
    __slots__ = ("dram", "spad", "acc", "mems", "sizes", "fill")

    def __init__(self, target: Target, dram_words: int, fill: float = 0.0):
        if not 0 <= dram_words <= target.dram_words:
            raise EmulatorError(
                f"program needs {dram_words} DRAM words but target '{target.name}' has "
                f"{target.dram_words}"
            )
        self.fill = fill
        self.dram = filled_memory(dram_words, fill)
        self.spad = filled_memory(target.spad_words, fill)
        self.acc = filled_memory(target.acc_words, fill)
        # Indexed by Mem: mems[Mem.SPAD] is the scratchpad.
        self.mems: tuple[np.ndarray, ...] = (self.dram, self.spad, self.acc)
        self.sizes: tuple[int, ...] = tuple(m.size for m in self.mems)
        assert [Mem.DRAM, Mem.SPAD, Mem.ACC] == [0, 1, 2]

    def reset(self, dram_ranges: list[tuple[int, int]]) -> None:
        """Fill the on-chip memories and the DRAM words [start, end) of each range with
        `fill` again (the caller then rewrites the constants and inputs there)."""
        self.spad.fill(self.fill)
        self.acc.fill(self.fill)
        for start, end in dram_ranges:
            self.dram[start:end] = self.fill

    def write_dram(self, addr: int, values: np.ndarray, what: str) -> None:
        """Copy `values` (any shape, row-major) to DRAM words [addr, addr + size)."""
        flat = np.ascontiguousarray(values, dtype=np.float32).reshape(-1)
        end = addr + flat.size
        if addr < 0 or end > self.dram.size:
            raise EmulatorError(
                f"{what} at DRAM [{addr}, {end}) does not fit the program's "
                f"{self.dram.size} DRAM words"
            )
        self.dram[addr:end] = flat

    def read_dram(self, addr: int, shape: tuple[int, ...], what: str) -> np.ndarray:
        """A copy of DRAM words [addr, addr + prod(shape)) with the given shape."""
        words = int(np.prod(shape, dtype=np.int64))
        end = addr + words
        if addr < 0 or end > self.dram.size:
            raise EmulatorError(
                f"{what} at DRAM [{addr}, {end}) does not fit the program's "
                f"{self.dram.size} DRAM words"
            )
        return self.dram[addr:end].reshape(shape).copy()


def filled_memory(shape: int | tuple[int, ...], fill: float) -> np.ndarray:
    """A float32 memory of `shape` words holding `fill`."""
    # zeros come from calloc: pages the run never touches are never written (for DeiT-base,
    # most of 350 MB of DRAM is constants written right after anyway)
    if fill == 0.0 and not np.signbit(fill):
        return np.zeros(shape, dtype=np.float32)
    return np.full(shape, fill, dtype=np.float32)

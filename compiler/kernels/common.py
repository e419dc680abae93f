"""What every kernel shares: on-chip buffer allocation, DMA of 2-D blocks, tile candidates,
and the cost estimate that ranks tilings.

A kernel is the instruction sequence of one nm op for given tile sizes and DRAM addresses.
The tile search (`schedule-tiles`) and the lowering (`lower-nm-to-isa`) call the same kernel
code, so the schedule that was costed is the one that is emitted.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from math import ceil, prod
from typing import Iterable, Iterator

from nmc.isa.errors import NmcError
from nmc.isa.table import Instr, Mem, Unit
from nmc.isa.target import Target
from nmc.runtime.timing import instruction_cycles

ALIGN_WORDS = 16
"""On-chip buffers start at multiples of this, so every buffer is a whole number of
vector-lane rows and buffers never share a word."""


class TileError(NmcError):
    """No tiling of an op fits the target's on-chip memories."""


class _DoesNotFit(Exception):
    """Internal: this candidate tiling needs more on-chip memory than the target has."""


def align(words: int, to: int = ALIGN_WORDS) -> int:
    return -(-words // to) * to


@dataclass
class OnChipAllocator:
    """A bump allocator for the buffers of one kernel in SPAD and ACC.

    Kernels run one after another; buffers of consecutive kernels may overlap, because
    `insert-tokens` orders every access by its memory footprint.
    """

    target: Target
    used: dict[Mem, int] = field(default_factory=lambda: {Mem.SPAD: 0, Mem.ACC: 0})

    def capacity(self, mem: Mem) -> int:
        return self.target.spad_words if mem == Mem.SPAD else self.target.acc_words

    def alloc(self, mem: Mem, words: int) -> int:
        start = self.used[mem]
        end = start + align(words)
        if end > self.capacity(mem):
            raise _DoesNotFit
        self.used[mem] = end
        return start

    def ring(self, mem: Mem, words: int, slots: int = 2) -> "Ring":
        """`slots` buffers of `words` used round-robin: double buffering by default."""
        return Ring([self.alloc(mem, words) for _ in range(slots)])


@dataclass
class Ring:
    addrs: list[int]
    turn: int = 0

    def next(self) -> int:
        addr = self.addrs[self.turn % len(self.addrs)]
        self.turn += 1
        return addr


@dataclass(frozen=True)
class Matrix2D:
    """A row-major matrix in DRAM viewed as [rows x cols]; leading dims are flattened."""

    addr: int
    rows: int
    cols: int

    @staticmethod
    def of(addr: int, shape: tuple[int, ...]) -> "Matrix2D":
        return Matrix2D(addr, prod(shape[:-1]), shape[-1])

    def block(self, r0: int, c0: int) -> int:
        return self.addr + r0 * self.cols + c0


def load_block(dram: Matrix2D, r0: int, c0: int, rows: int, cols: int, mem: Mem, local: int):
    return Instr.make("load", mem=mem, local=local, dram=dram.block(r0, c0), rows=rows,
                      cols=cols, stride=dram.cols)


def store_block(dram: Matrix2D, r0: int, c0: int, rows: int, cols: int, mem: Mem, local: int):
    return Instr.make("store", mem=mem, local=local, dram=dram.block(r0, c0), rows=rows,
                      cols=cols, stride=dram.cols)


def tiles(extent: int, size: int) -> Iterator[tuple[int, int]]:
    """(start, length) of each tile of `size` covering [0, extent); the last may be short."""
    for start in range(0, extent, size):
        yield start, min(size, extent - start)


def size_candidates(extent: int, granule: int, limit: int = 4096) -> list[int]:
    """Tile sizes worth trying along one dimension: multiples of the hardware granule in
    powers of two, plus the whole extent (no tiling at all)."""
    sizes, s = set(), granule
    while s < extent and s <= limit:
        sizes.add(s)
        s *= 2
    sizes.add(extent)
    return sorted(sizes)


def estimate_cycles(instrs: Iterable[Instr], target: Target) -> int:
    """The tile search's objective: with double buffering the busiest unit bounds the run,
    plus the first load and the last store, which nothing can overlap."""
    busy = {unit: 0 for unit in Unit}
    first_load = last_store = 0
    for instr in instrs:
        cycles = instruction_cycles(instr, target)
        busy[instr.unit] += cycles
        if instr.unit == Unit.LOAD and not first_load:
            first_load = cycles
        if instr.unit == Unit.STORE:
            last_store = cycles
    return max(busy.values()) + first_load + last_store


def choose_best(layer: str, candidates: Iterable[dict], emit, target: Target,
                need: str) -> dict:
    """Return the candidate tiling with the lowest estimated cycles (ties: fewer
    instructions, then the first candidate). `emit(tiling)` builds the kernel with dummy
    addresses; a candidate that does not fit raises _DoesNotFit inside it."""
    best, best_key = None, None
    for tiling in candidates:
        try:
            instrs = emit(tiling)
        except _DoesNotFit:
            continue
        key = (estimate_cycles(instrs, target), len(instrs))
        if best_key is None or key < best_key:
            best, best_key = tiling, key
    if best is None:
        raise TileError(
            f"layer '{layer}' cannot fit the scratchpad under any tiling: it needs {need}; "
            f"target '{target.name}' has {target.spad_words} SPAD words and "
            f"{target.acc_words} ACC words"
        )
    return best


def ceil_div(a: int, b: int) -> int:
    return ceil(a / b)

"""What every kernel shares: on-chip buffer allocation, DMA of 2-D blocks, tile candidates,
and the cost models that rank tilings.

A kernel is the instruction sequence of one nm op for given tile sizes and DRAM addresses
(the protocol: kernels/kernel.py). The tile search (`schedule-tiles`) and the lowering
(`lower-nm-to-isa`) call the same kernel code, so the schedule that was costed is the one
that is emitted. Candidates are ranked by `estimate_cycles` (busiest unit + pipeline
fill/drain), by `simulate_cycles` (the emulator's own timing rule on the kernel with its
tokens: sees in-order stalls; attention and the row-wise kernels use it), or by counting
the kernel's schedule without emitting it (linear, `kernels/walk.py`: thousands of
candidates); `choose_best` then takes the fewest instructions within TOLERANCE of the
best. Choices are memoised per problem and target (`TILINGS`): a ViT has a handful of
distinct layer shapes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from math import prod
from typing import Iterable, Iterator

from nmc.common.errors import NmcError
from nmc.isa.table import Instr, Mem, Unit
from nmc.isa.target import Target
from nmc.isa.tokens import assign_tokens
from nmc.runtime.timing import instruction_cycles, token_schedule

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
    bounded: bool = True  # False: only count the words (what a tiling would need)

    def capacity(self, mem: Mem) -> int:
        return self.target.spad_words if mem == Mem.SPAD else self.target.acc_words

    def alloc(self, mem: Mem, words: int) -> int:
        start = self.used[mem]
        end = start + align(words)
        if self.bounded and end > self.capacity(mem):
            raise _DoesNotFit
        self.used[mem] = end
        return start

    def ring(self, mem: Mem, words: int, slots: int = 2) -> "Ring":
        """`slots` buffers of `words` used round-robin: double buffering by default."""
        return Ring(self.allocs(mem, words, slots))

    def allocs(self, mem: Mem, words: int, slots: int = 2) -> list[int]:
        """The addresses of `slots` buffers of `words` (a ring's)."""
        return [self.alloc(mem, words) for _ in range(slots)]


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


def block_fields(dram: Matrix2D, r0: int, c0: int, rows: int, cols: int, mem: Mem,
                 local: int) -> dict[str, int]:
    """The fields of a load / store of the [rows x cols] block at (r0, c0) of `dram`."""
    return dict(mem=mem, local=local, dram=dram.block(r0, c0), rows=rows, cols=cols,
                stride=dram.cols)


def load_block(dram: Matrix2D, r0: int, c0: int, rows: int, cols: int, mem: Mem, local: int):
    return Instr.make("load", **block_fields(dram, r0, c0, rows, cols, mem, local))


def store_block(dram: Matrix2D, r0: int, c0: int, rows: int, cols: int, mem: Mem, local: int):
    return Instr.make("store", **block_fields(dram, r0, c0, rows, cols, mem, local))


def tiles(extent: int, size: int) -> Iterator[tuple[int, int]]:
    """(start, length) of each tile of `size` covering [0, extent); the last may be short."""
    for start in range(0, extent, size):
        yield start, min(size, extent - start)


def size_candidates(extent: int, granule: int, limit: int = 4096,
                    balanced: int = 16) -> list[int]:
    """Tile sizes worth trying along one dimension: multiples of the hardware granule in
    powers of two, the sizes that split the extent into n nearly equal tiles (n up to
    `balanced`, rounded up to the granule: 197 rows -> 112, 80, 64, 48, ...; no short last
    tile wasting a pass), and the whole extent (no tiling at all)."""
    sizes, s = {extent}, granule
    while s < extent and s <= limit:
        sizes.add(s)
        s *= 2
    for n in range(2, balanced + 1):
        s = -(-(-(-extent // n)) // granule) * granule
        if s < extent and s <= limit:
            sizes.add(s)
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


def simulate_cycles(instrs: list[Instr], target: Target) -> int:
    """The cycles the emulator would take for `instrs` alone: tokens from insert-tokens'
    hazard analysis, then the emulator's timing rule (`timing.token_schedule`). Unlike
    `estimate_cycles` it sees the stalls of an in-order queue waiting for another unit
    (e.g. the matrix unit waiting for a softmax before it can start the next tile), at the
    price of the hazard analysis; kernels with few, short candidates use it."""
    tokened = assign_tokens(instrs)
    timed = token_schedule(
        [int(i.unit) for i in tokened], [i["wait"] for i in tokened],
        [i["signal"] for i in tokened], [instruction_cycles(i, target) for i in tokened])
    assert timed is not None  # insert-tokens only makes earlier producers signal
    return max(timed[1], default=0)


SHORTLIST = 12
"""With a `shortlist`, only this many candidates (the best by it) are costed."""

TOLERANCE = 0.01
"""The tile search takes, among the tilings whose estimate is within this fraction of the
best one, the one with the fewest instructions: a much smaller program (faster to compile
and to emulate) for a negligible modelled cost."""


def choose_best(layer: str, candidates: Iterable[dict], target: Target, cost, need,
                lower_bound=None, shortlist=None) -> dict:
    """The candidate tiling to use: the fewest instructions among those whose cycles are
    within TOLERANCE of the lowest (ties: fewer cycles, then the first candidate).

    `cost(tiling)` returns (cycles, instructions) of the kernel under the tiling (a
    `kernel.Cost`) and raises _DoesNotFit for a candidate that does not fit.
    `need` (a string, or a function returning it) says what the smallest candidate needs,
    for the error when none fits.
    `shortlist(tiling)`, when given, is a cheaper (cycles, instructions) to rank by first:
    only the SHORTLIST candidates it ranks best are costed (`cost` simulating the emulator
    is ~100x the price of estimating).
    `lower_bound(tiling)`, when given, is a cheap bound that the cost can never beat (e.g.
    the matrix unit's busy cycles): candidates are then tried in order of their bound and
    the search stops once the bound exceeds the tolerance of the best cost found, which
    gives the same result as trying them all.
    """
    candidates = list(candidates)
    if shortlist is not None:
        ranked = []
        for i, tiling in enumerate(candidates):
            try:
                est, count = shortlist(tiling)
            except _DoesNotFit:
                continue
            ranked.append((est, count, i))
        keep = sorted(i for _, _, i in sorted(ranked)[:SHORTLIST])
        candidates = [candidates[i] for i in keep]
    if lower_bound is not None:
        bounds = [lower_bound(t) for t in candidates]
        order = sorted(range(len(candidates)), key=lambda i: bounds[i])
    else:
        bounds, order = None, range(len(candidates))
    scored = []  # (cycles, instructions, index)
    best_est = None
    for i in order:
        if bounds is not None and best_est is not None and bounds[i] > best_est * (1 + TOLERANCE):
            break
        try:
            est, count = cost(candidates[i])
        except _DoesNotFit:
            continue
        scored.append((est, count, i))
        if best_est is None or est < best_est:
            best_est = est
    if not scored:
        if callable(need):  # worked out only when needed
            need = need()
        raise TileError(
            f"layer '{layer}' cannot fit the scratchpad under any tiling: it needs {need}; "
            f"target '{target.name}' has {target.spad_words} SPAD words and "
            f"{target.acc_words} ACC words"
        )
    near = [(count, est, i) for est, count, i in scored if est <= best_est * (1 + TOLERANCE)]
    return candidates[min(near)[2]]


def tile_counts(extent: int, size: int) -> list[tuple[int, int]]:
    """(length, how many tiles have it) for the tiles of `size` covering [0, extent)."""
    full, rest = divmod(extent, size)
    out = [(size, full)] if full else []
    if rest:
        out.append((rest, 1))
    return out


class TilingCache:
    """Memoises tile choices per (kernel kind, shape parameters, target): a ViT repeats the
    same few shapes in every block, so each distinct shape is searched once per process."""

    def __init__(self):
        self._entries: dict[tuple, dict] = {}

    def get(self, key: tuple, target: Target, compute) -> dict:
        full_key = (_target_key(target), *key)
        hit = self._entries.get(full_key)
        if hit is not None:
            return dict(hit)
        tiling = compute()
        self._entries[full_key] = dict(tiling)
        return tiling


def _target_key(target: Target) -> tuple:
    """Everything that describes the machine (targets are compared by value: the same
    file loaded twice is the same machine)."""
    return tuple(
        tuple(sorted(v.items())) if isinstance(v, dict) else v
        for k, v in vars(target).items() if k != "source"
    )


TILINGS = TilingCache()


@dataclass
class Block2D:
    """A 2-D block of DRAM words: `rows` rows of `cols` words, `stride` words apart."""

    addr: int
    rows: int
    cols: int
    stride: int


def copy_chunks(src: Block2D, dst_addr: int, dst_stride: int, chunk_words: int):
    """(src addr, dst addr, rows, cols) of DMA transfers that together copy `src` to the
    block of the same shape at `dst_addr` (rows `dst_stride` apart), each at most
    `chunk_words` words: whole rows at a time when a row fits, else pieces of one row."""
    rows, cols = src.rows, src.cols
    if cols <= chunk_words:
        per = max(1, min(chunk_words // cols, DIM_MAX))
        for r0 in range(0, rows, per):
            rr = min(per, rows - r0)
            yield src.addr + r0 * src.stride, dst_addr + r0 * dst_stride, rr, cols
    else:
        for r in range(rows):
            for c0 in range(0, cols, chunk_words):
                cc = min(chunk_words, cols - c0)
                yield src.addr + r * src.stride + c0, dst_addr + r * dst_stride + c0, 1, cc


DIM_MAX = (1 << 16) - 1
"""The largest rows / cols / m / k / n an instruction can hold (16-bit fields)."""


def emit_copies(copies: Iterable[tuple[Block2D, int, int]], chunk_words: int,
                target: Target) -> list[Instr]:
    """DRAM -> SPAD -> DRAM copies of 2-D blocks (src block, dst addr, dst row stride),
    through two SPAD buffers of `chunk_words` so one block's store overlaps the next load."""
    chip = OnChipAllocator(target)
    ring = chip.ring(Mem.SPAD, chunk_words)
    out: list[Instr] = []
    for src, dst, dst_stride in copies:
        for s, d, rows, cols in copy_chunks(src, dst, dst_stride, chunk_words):
            buf = ring.next()
            out.append(Instr.make("load", mem=Mem.SPAD, local=buf, dram=s, rows=rows,
                                  cols=cols, stride=src.stride))
            out.append(Instr.make("store", mem=Mem.SPAD, local=buf, dram=d, rows=rows,
                                  cols=cols, stride=dst_stride))
    return out


def chunk_candidates(total_words: int, target: Target) -> list[int]:
    """SPAD chunk sizes worth trying for a copy: powers of two up to half the scratchpad
    (two buffers), and the whole copy when it fits."""
    half = min(target.spad_words // 2, DIM_MAX) // ALIGN_WORDS * ALIGN_WORDS
    sizes = {min(total_words, half)}
    s = 256
    while s < min(total_words, half):
        sizes.add(s)
        s *= 2
    return sorted(x for x in sizes if x > 0)

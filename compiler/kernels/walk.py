"""One walk over a kernel's tiles that either emits its instructions or counts their cost.

A schedule written as `walk(out)` runs its tile loops with `out.tiles(extent, size)` and
issues each instruction with `out.add(mnemonic, **fields)`, which returns the instruction's
cycles under the timing model (`runtime.timing`). `Walk(target, emit=True)` visits every
tile and builds the instructions. `Walk(target, emit=False)` visits each distinct tile
length once (the full tiles, then the short last one), weighting every instruction by how
many tiles it stands for, and builds nothing: the cost of a kernel with thousands of
tiles in a few dozen steps, which the tile search needs for thousands of candidates.
Both tally the same things: per-unit busy cycles, the first load and the last store
(together `estimate_cycles`) and the waits the schedule charges with `out.stall`, so the
cost the search ranks by is, by construction, the cost of the code that is emitted.
"""

from __future__ import annotations

from typing import Iterator

from nmc.isa.table import OP_BY_MNEMONIC, Instr, Unit
from nmc.isa.target import Target
from nmc.runtime.timing import instruction_cycles

from nmc.compiler.kernels.common import tile_counts, tiles


_UNIT_OF = {mnemonic: int(spec.unit) for mnemonic, spec in OP_BY_MNEMONIC.items()}
_UNITS = len(Unit)


class Tile:
    """One tile of a loop: where it starts and how long it is (`start` is 0 when
    counting: any tile of that length stands for all of them), and the busy cycles per
    unit (indexed by `Unit`) of the instructions issued in it so far, inner loops
    included."""

    __slots__ = ("start", "length", "busy")

    def __init__(self, start: int, length: int):
        self.start, self.length, self.busy = start, length, [0] * _UNITS


class Walk:
    """What a schedule's walk issues (module docstring): the instructions when `emit`,
    and in any case their tally."""

    def __init__(self, target: Target, emit: bool):
        self.target = target
        self.instrs: list[Instr] | None = [] if emit else None
        self.busy = [0] * _UNITS  # indexed by Unit
        self.stalls: dict[str, list[int]] = {}  # cause -> waits per unit
        self.instructions = 0
        self.first_load = 0
        self.last_store = 0
        self._open: list[tuple[Tile, int]] = []  # enclosing tiles, with how many each stands for

    def tiles(self, extent: int, size: int) -> Iterator[Tile]:
        """The tiles of `size` covering [0, extent) (counting: one per distinct length)."""
        if self.instrs is not None:
            groups = ((Tile(start, length), 1) for start, length in tiles(extent, size))
        else:
            groups = ((Tile(0, length), times) for length, times in tile_counts(extent, size))
        for tile, times in groups:
            self._open.append((tile, times))
            yield tile
            self._open.pop()

    def _times(self) -> int:
        """How many issues the instruction being added stands for."""
        times = 1
        for _, n in self._open:
            times *= n
        return times

    def add(self, mnemonic: str, **fields: int) -> int:
        """Issue one instruction; returns its cycles."""
        if self.instrs is not None:
            self.instrs.append(Instr.make(mnemonic, **fields))
        spec = OP_BY_MNEMONIC[mnemonic]
        cycles = instruction_cycles(Instr(spec, fields), self.target)  # fields unchecked
        unit = _UNIT_OF[mnemonic]
        times = 1
        for tile, n in reversed(self._open):
            tile.busy[unit] += times * cycles
            times *= n
        self.busy[unit] += times * cycles
        self.instructions += times
        if unit == Unit.LOAD and not self.first_load:
            self.first_load = cycles
        if unit == Unit.STORE:
            self.last_store = cycles
        return cycles

    def stall(self, unit: Unit, cycles: int, cause: str) -> None:
        """Charge `unit` a wait that its busy cycles do not show, which happens when
        `cause` holds (e.g. "acc": the kernel has a single ACC buffer). A walk charges
        the waits of every cause, so one count serves every variant of a schedule that
        only differs in which causes hold."""
        stalls = self.stalls.setdefault(cause, [0] * _UNITS)
        stalls[unit] += self._times() * cycles

    @property
    def estimate(self) -> int:
        """`common.estimate_cycles` of the instructions issued: the busiest unit plus the
        first load and the last store, which nothing overlaps."""
        return max(self.busy) + self.first_load + self.last_store

    def cycles(self, causes=()) -> int:
        """The estimate with the stalls of `causes` charged on top of each unit's busy
        cycles."""
        busy = list(self.busy)
        for cause in causes:
            for unit, wait in enumerate(self.stalls.get(cause, ())):
                busy[unit] += wait
        return max(busy) + self.first_load + self.last_store

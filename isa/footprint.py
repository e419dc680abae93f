"""Memory footprints: exactly which words an instruction reads and writes, and the one test
of whether two footprints touch a common word.

A `Region` is a 2-D strided block: `rows` runs of `cols` consecutive words in `mem`, the
first at `start`, each `stride` words after the previous one (a dense block is one row).
The ISA table describes every instruction's footprint with regions (`OpSpec.footprint`);
insert-tokens, the emulator's race check and its fast path all decide overlaps with
`Region.overlaps` here, so they cannot disagree on what "touching the same words" means.
Column tiles of one matrix (strided DMA rows that interleave) do not overlap although their
bounding ranges do; insert-tokens asks on the bounding ranges (`bounding`: conservative,
and the programs it makes stay as they were), the race check on the exact regions.

A footprint formula may also be evaluated on arrays of field values (see
`nmc.isa.fieldmath`); its regions then hold arrays, one element per instruction, and only
the elementwise properties (`words`, `length`, `end`) apply.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass(frozen=True)
class Region:
    """`rows` runs of `cols` words in `mem`, the first at `start`, `stride` words apart."""

    mem: Any  # Mem (an int array in array form)
    start: int
    cols: int
    rows: int = 1
    stride: int = 0  # unused when rows <= 1
    length: int = field(init=False, repr=False, compare=False)
    """Words from the first touched word to the last, inclusive: the bounding range."""
    end: int = field(init=False, repr=False, compare=False)
    """One past the last word of the bounding range."""

    def __post_init__(self):
        # computed once: the overlap tests read them over and over
        rows, cols = self.rows, self.cols
        length = (rows > 0) * (cols > 0) * ((rows - 1) * self.stride + cols)
        object.__setattr__(self, "length", length)
        object.__setattr__(self, "end", self.start + length)

    @property
    def words(self):
        """How many words the region touches (0: it touches none)."""
        return self.rows * self.cols

    @property
    def contiguous(self) -> bool:
        """Whether the region is its bounding range (no gaps between rows)."""
        return self.rows <= 1 or self.stride == self.cols

    def bounds(self) -> "Region":
        """The bounding range as a dense region (a conservative stand-in for this one)."""
        return self if self.rows <= 1 else Region(self.mem, self.start, self.length)

    def overlaps(self, other: "Region") -> bool:
        """Whether the two regions share a word."""
        if self.mem != other.mem or self.start >= other.end or other.start >= self.end:
            return False
        if not (self.words and other.words):
            return False
        if self.contiguous and other.contiguous:
            return True
        return _rows_meet(self, other)


def _rows_meet(a: Region, b: Region) -> bool:
    """Whether a row of `a` shares a word with a row of `b` (same memory, bounding ranges
    overlapping). Rows start at nondecreasing addresses and have one width per region, so
    for each row of `a` only the last row of `b` starting before its end can reach it."""
    a_starts = a.start + np.arange(a.rows, dtype=np.int64) * a.stride
    b_starts = b.start + np.arange(b.rows, dtype=np.int64) * b.stride
    j = np.searchsorted(b_starts, a_starts + a.cols, side="left") - 1
    ok = j >= 0
    return bool(np.any(b_starts[j[ok]] + b.cols > a_starts[ok]))


Footprint = tuple[tuple[Region, ...], tuple[Region, ...]]  # (reads, writes)


def bounding(footprint: Footprint) -> Footprint:
    """The footprint with every region widened to its bounding range: conservative (it
    overlaps whatever the exact one does, and more)."""
    reads, writes = footprint
    return tuple(r.bounds() for r in reads), tuple(r.bounds() for r in writes)


def first_overlap(a: tuple[Region, ...], b: tuple[Region, ...]) -> tuple[Region, Region] | None:
    """The first region of `a` and region of `b` that share a word, or None."""
    for x in a:
        for y in b:
            # the bounding ranges first, inline: most pairs fail there (insert-tokens asks
            # this for every pair of instructions it compares)
            if x.mem == y.mem and x.start < y.end and y.start < x.end and x.overlaps(y):
                return x, y
    return None


def hazard(earlier: Footprint, later: Footprint) -> bool:
    """Whether `later` must wait for `earlier`: it reads what `earlier` writes (RAW), writes
    what `earlier` reads (WAR) or writes what `earlier` writes (WAW)."""
    (r1, w1), (r2, w2) = earlier, later
    return (first_overlap(w1, r2) is not None or first_overlap(r1, w2) is not None
            or first_overlap(w1, w2) is not None)

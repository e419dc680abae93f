"""Data movement kernels, DMA only: nm.concat (along a non-last axis), nm.select and
nm.permute_rows.

Both are copies of 2-D blocks through SPAD (`emit_copies`): per input of a concat, the
slab of each outer index is contiguous in the input ([outer x n_i*rest]) and lands at
column offset off_i*rest of the output viewed as [outer x total*rest]; a select of index i
along an axis reads [outer x rest] rows shape[axis]*rest apart, starting at i*rest, into a
contiguous result. Blocks bigger than a SPAD chunk are split (`copy_chunks`); the chunk
size is chosen by the timing model.

nm.permute_rows (`permute_rows_copies`): output row j is input row rows[j]. Runs of
consecutive source rows landing on consecutive output rows are one block; runs of the
same length whose source and destination starts advance by constant steps (the rows of
one window: `window` tokens per image row, image rows W apart) merge into one 2-D strided
block, so a window partition is one transfer per window (or per piece of a window that
the cyclic shift wrapped around).
"""

from __future__ import annotations

from math import prod

from nmc.isa.table import Instr
from nmc.isa.target import Target

from nmc.compiler.kernels.common import (
    TILINGS, Block2D, chunk_candidates, choose_best, emit_copies,
)


def concat_copies(shapes: list[tuple[int, ...]], axis: int, inputs: list[int], y: int):
    outer = prod(shapes[0][:axis])
    rest = prod(shapes[0][axis + 1:])
    total = sum(s[axis] for s in shapes) * rest
    copies, off = [], 0
    for shape, addr in zip(shapes, inputs):
        width = shape[axis] * rest
        if width:
            copies.append((Block2D(addr, outer, width, width), y + off, total))
        off += width
    return copies


def select_copies(shape: tuple[int, ...], axis: int, index: int, x: int, y: int):
    outer = prod(shape[:axis])
    rest = prod(shape[axis + 1:])
    return [(Block2D(x + index * rest, outer, rest, shape[axis] * rest), y, rest)]


def emit_concat(shapes, axis, tiling, inputs, y, target) -> list[Instr]:
    return emit_copies(concat_copies(shapes, axis, inputs, y), tiling["chunk"], target)


def emit_select(shape, axis, index, tiling, x, y, target) -> list[Instr]:
    return emit_copies(select_copies(shape, axis, index, x, y), tiling["chunk"], target)


def choose_copy_tiling(layer: str, key: tuple, copies_of, target: Target) -> dict:
    """`copies_of()` gives the copies with dummy addresses."""

    def search() -> dict:
        copies = copies_of()
        total = max((c[0].rows * c[0].cols for c in copies), default=1)
        return choose_best(
            layer, [{"chunk": c} for c in chunk_candidates(total, target)],
            lambda t: emit_copies(copies, t["chunk"], target), target,
            need="two SPAD buffers of 256 words",
        )

    return TILINGS.get(key, target, search)


def permute_rows_copies(rows: list[int], unit: int, x: int, y: int):
    """The 2-D block copies of a row gather: output row j (of `unit` words) = input row
    rows[j]."""
    runs: list[list[int]] = []  # [source row, output row, length]
    for j, r in enumerate(rows):
        if runs and runs[-1][0] + runs[-1][2] == r and runs[-1][1] + runs[-1][2] == j:
            runs[-1][2] += 1
        else:
            runs.append([r, j, 1])
    copies, i = [], 0
    while i < len(runs):
        s0, d0, n = runs[i]
        count, steps = 1, None
        while i + count < len(runs):
            (sp, dp, _), (s1, d1, n1) = runs[i + count - 1], runs[i + count]
            step = (s1 - sp, d1 - dp)
            if n1 != n or step[0] < n or step[1] < n or (steps is not None and step != steps):
                break
            steps, count = step, count + 1
        ss, ds = steps or (n, n)
        copies.append((Block2D(x + s0 * unit, count, n * unit, ss * unit), y + d0 * unit,
                       ds * unit))
        i += count
    return copies


def emit_permute_rows(rows, unit, tiling, x, y, target) -> list[Instr]:
    return emit_copies(permute_rows_copies(rows, unit, x, y), tiling["chunk"], target)

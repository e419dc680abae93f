"""Data movement kernels, DMA only: nm.concat (along a non-last axis) and nm.select.

Both are copies of 2-D blocks through SPAD (`emit_copies`): per input of a concat, the
slab of each outer index is contiguous in the input ([outer x n_i*rest]) and lands at
column offset off_i*rest of the output viewed as [outer x total*rest]; a select of index i
along an axis reads [outer x rest] rows shape[axis]*rest apart, starting at i*rest, into a
contiguous result. Blocks bigger than a SPAD chunk are split (`copy_chunks`); the chunk
size is chosen by the timing model.
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

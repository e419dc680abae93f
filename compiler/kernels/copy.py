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

from dataclasses import dataclass
from math import prod

from xdsl.ir import Operation

from nmc.compiler.dialects.nm import ConcatOp, PermuteRowsOp, SelectOp, tensor_shape
from nmc.isa.table import Instr
from nmc.isa.target import Target

from nmc.compiler.kernels.common import Block2D, chunk_candidates, emit_copies
from nmc.compiler.kernels.kernel import Buffers, Kernel


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


@dataclass(frozen=True)
class ConcatProblem:
    shapes: tuple[tuple[int, ...], ...]
    axis: int

    @staticmethod
    def of(op: ConcatOp) -> "ConcatProblem":
        return ConcatProblem(tuple(tensor_shape(v) for v in op.inputs), op.axis_value)

    def copies(self, buffers: Buffers):
        return concat_copies(list(self.shapes), self.axis,
                             list(buffers.many("inputs", len(self.shapes))), buffers["result"])


@dataclass(frozen=True)
class SelectProblem:
    shape: tuple[int, ...]
    axis: int
    index: int

    @staticmethod
    def of(op: SelectOp) -> "SelectProblem":
        return SelectProblem(tensor_shape(op.input), op.axis_value, op.index_value)

    def copies(self, buffers: Buffers):
        return select_copies(self.shape, self.axis, self.index, buffers["input"],
                             buffers["result"])


@dataclass(frozen=True)
class PermuteRowsProblem:
    rows: tuple[int, ...]
    unit: int  # words per row

    @staticmethod
    def of(op: PermuteRowsOp) -> "PermuteRowsProblem":
        return PermuteRowsProblem(tuple(op.row_indices), tensor_shape(op.input)[-1])

    def copies(self, buffers: Buffers):
        return permute_rows_copies(list(self.rows), self.unit, buffers["input"],
                                   buffers["result"])


CopyProblem = ConcatProblem | SelectProblem | PermuteRowsProblem


class CopyKernel(Kernel[CopyProblem]):
    """The block copies of a problem (its `copies(buffers)`) through SPAD chunks whose
    size the timing model picks."""

    def __init__(self, problem_type: type):
        self.problem_type = problem_type

    def candidates(self, problem: CopyProblem, target: Target) -> list[dict]:
        copies = problem.copies(Buffers.dummy())
        total = max((c[0].rows * c[0].cols for c in copies), default=1)
        return [{"chunk": c} for c in chunk_candidates(total, target)]

    def need(self, problem: CopyProblem, target: Target) -> str:
        return "two SPAD buffers of 256 words"

    def emit(self, problem: CopyProblem, tiling: dict, buffers: Buffers,
             target: Target) -> list[Instr]:
        return emit_copies(problem.copies(buffers), tiling["chunk"], target)

"""Kernels of the `win` ops (SparseViT window pruning): scoring, ranking, gathering and
scattering windows, on the vector unit and the gathered / scattered DMA.

- win.magnitude x [M x C] -> [M]: row tiles of `rows` tokens are loaded, reduced by one
  `vred mean_abs` each, and stored as one run of words.
- win.rank mags [B x W x N] -> [B x k]: per image, window tiles are loaded and reduced by
  `vred l2` into one score row of W words; one `topk` writes the k best indices, which are
  stored.
- win.gather table [images * W x block], indices [images x row] -> [images * count x
  block]: the indices are loaded once, then per image and chunk of windows and columns one
  `gload` (blocks of that image's part of the table picked by its indices) and one store
  of the packed chunk.
- win.scatter: the table is copied to the result (the windows that are not scattered keep
  their values) unless plan-memory gave the result the table's own space (the table is
  not used afterwards: the usual case), then per chunk the values are loaded and one
  `gstore` writes them at their windows. The stores of the copy and the gstores touch the same words: the tokens
  of insert-tokens (footprints: a gstore may write any window) order them.

Chunk sizes are chosen by the timing model like every other kernel (`choose_best`).
"""

from __future__ import annotations

from dataclasses import dataclass
from math import prod

from nmc.compiler.dialects.nm import tensor_shape
from nmc.compiler.dialects.win import GatherOp, MagnitudeOp, RankOp, ScatterOp
from nmc.isa.table import Instr, Mem, VRedFn
from nmc.isa.target import Target

from nmc.compiler.kernels.common import (
    ALIGN_WORDS, DIM_MAX, Block2D, Matrix2D, OnChipAllocator, emit_copies, load_block,
    size_candidates, store_block, tiles,
)
from nmc.compiler.kernels.kernel import Buffers, Kernel


def emit_magnitude(M: int, C: int, tiling: dict, x: int, y: int, target: Target) -> list[Instr]:
    tr = tiling["rows"]
    chip = OnChipAllocator(target)
    inputs, outputs = chip.ring(Mem.SPAD, tr * C), chip.ring(Mem.SPAD, tr)
    out: list[Instr] = []
    X, Y = Matrix2D(x, M, C), Matrix2D(y, 1, M)
    for r0, rr in tiles(M, tr):
        src, dst = inputs.next(), outputs.next()
        out.append(load_block(X, r0, 0, rr, C, Mem.SPAD, src))
        out.append(Instr.make("vred", fn=VRedFn.MEAN_ABS, dst_mem=Mem.SPAD, dst=dst,
                              src_mem=Mem.SPAD, src=src, rows=rr, cols=C))
        out.append(store_block(Y, 0, r0, 1, rr, Mem.SPAD, dst))
    return out


def emit_rank(B: int, W: int, N: int, keep: int, tiling: dict, mags: int, y: int,
              target: Target) -> list[Instr]:
    """Per image: window tiles reduced by `vred l2` into a score row, one `topk`, a store."""
    tw = tiling["windows"]
    chip = OnChipAllocator(target)
    scores, best = chip.alloc(Mem.SPAD, W), chip.alloc(Mem.SPAD, keep)
    ring = chip.ring(Mem.SPAD, tw * N)
    MAGS, Y = Matrix2D(mags, B * W, N), Matrix2D(y, B, keep)
    out: list[Instr] = []
    for b in range(B):
        for w0, ww in tiles(W, tw):
            buf = ring.next()
            out.append(load_block(MAGS, b * W + w0, 0, ww, N, Mem.SPAD, buf))
            out.append(Instr.make("vred", fn=VRedFn.L2, dst_mem=Mem.SPAD, dst=scores + w0,
                                  src_mem=Mem.SPAD, src=buf, rows=ww, cols=N))
        out.append(Instr.make("topk", dst_mem=Mem.SPAD, dst=best, src_mem=Mem.SPAD,
                              src=scores, n=W, k=keep))
        out.append(store_block(Y, b, 0, 1, keep, Mem.SPAD, best))
    return out


def _chunks(count: int, block: int, tiling: dict):
    """(first window, windows, first column, columns) of each chunk of a gather/scatter."""
    for w0, ww in tiles(count, tiling["windows"]):
        for c0, cc in tiles(block, tiling["cols"]):
            yield w0, ww, c0, cc


@dataclass(frozen=True)
class WindowTable:
    """A win.gather / win.scatter's shapes: `images` images of `windows` blocks of `block`
    words in the table (or, `shared`, one table of `windows` blocks for all images), `row`
    indices per image (the first `count` used)."""

    images: int
    windows: int
    block: int
    row: int
    count: int
    shared: bool = False

    @staticmethod
    def of(op: GatherOp | ScatterOp) -> "WindowTable":
        shape, (images, row) = tensor_shape(op.table), tensor_shape(op.indices)
        return WindowTable(images, op.windows, prod(shape[1:]), row, op.count_value,
                           op.is_shared)

    def image_base(self, table: int, b: int) -> int:
        """DRAM address of image b's part of the table."""
        return table if self.shared else table + b * self.windows * self.block


def _load_indices(t: WindowTable, chip: OnChipAllocator, indices: int) -> tuple[int, Instr]:
    idx = chip.alloc(Mem.SPAD, t.images * t.row)
    words = t.images * t.row
    return idx, load_block(Matrix2D(indices, 1, words), 0, 0, 1, words, Mem.SPAD, idx)


def emit_gather(t: WindowTable, tiling: dict, table: int, indices: int, y: int,
                target: Target) -> list[Instr]:
    chip = OnChipAllocator(target)
    idx, load_idx = _load_indices(t, chip, indices)
    ring = chip.ring(Mem.SPAD, tiling["windows"] * tiling["cols"])
    out = [load_idx]
    for b in range(t.images):
        base = t.image_base(table, b)
        for w0, ww, c0, cc in _chunks(t.count, t.block, tiling):
            buf = ring.next()
            out.append(Instr.make("gload", mem=Mem.SPAD, local=buf, dram=base + c0,
                                  idx=idx + b * t.row + w0, count=ww, block=cc,
                                  stride=t.block, limit=t.windows))
            out.append(Instr.make("store", mem=Mem.SPAD, local=buf,
                                  dram=y + (b * t.count + w0) * t.block + c0, rows=ww,
                                  cols=cc, stride=t.block))
    return out


def emit_scatter(t: WindowTable, tiling: dict, table: int, indices: int, values: int, y: int,
                 target: Target) -> list[Instr]:
    # plan-memory puts the result in the table's space when the table is not used after
    # (then the windows that are not scattered are already in place); otherwise, copy it
    words = t.images * t.windows * t.block
    out = [] if table == y else emit_copies(
        [(Block2D(table, 1, words, words), y, words)], tiling["copy"], target)
    chip = OnChipAllocator(target)
    idx, load_idx = _load_indices(t, chip, indices)
    ring = chip.ring(Mem.SPAD, tiling["windows"] * tiling["cols"])
    out.append(load_idx)
    for b in range(t.images):
        base = t.image_base(y, b)
        for w0, ww, c0, cc in _chunks(t.count, t.block, tiling):
            buf = ring.next()
            out.append(Instr.make("load", mem=Mem.SPAD, local=buf,
                                  dram=values + (b * t.count + w0) * t.block + c0, rows=ww,
                                  cols=cc, stride=t.block))
            out.append(Instr.make("gstore", mem=Mem.SPAD, local=buf, dram=base + c0,
                                  idx=idx + b * t.row + w0, count=ww, block=cc,
                                  stride=t.block, limit=t.windows))
    return out


def _chunk_candidates(count: int, block: int, target: Target) -> list[dict]:
    cols = sorted({block, *(c for c in (256, 1024, 4096) if c < block)})
    half = target.spad_words // 2 - ALIGN_WORDS
    return [{"windows": w, "cols": c}
            for w in size_candidates(count, 1, limit=DIM_MAX, balanced=8) for c in cols
            if w * c <= half]


@dataclass(frozen=True)
class MagnitudeProblem:
    M: int
    C: int

    @staticmethod
    def of(op: MagnitudeOp) -> "MagnitudeProblem":
        shape = tensor_shape(op.input)
        return MagnitudeProblem(prod(shape[:-1]), shape[-1])


class MagnitudeKernel(Kernel[MagnitudeProblem]):
    problem_type = MagnitudeProblem

    def candidates(self, problem: MagnitudeProblem, target: Target) -> list[dict]:
        return [{"rows": r} for r in size_candidates(problem.M, 16, limit=DIM_MAX)]

    def need(self, problem: MagnitudeProblem, target: Target) -> str:
        return f"{2 * (problem.C + 1)} SPAD words for two rows of {problem.C}"

    def emit(self, problem: MagnitudeProblem, tiling: dict, buffers: Buffers,
             target: Target) -> list[Instr]:
        return emit_magnitude(problem.M, problem.C, tiling, buffers["input"],
                              buffers["result"], target)


@dataclass(frozen=True)
class RankProblem:
    """win.rank of mags [B x W x N]: the `keep` best of W windows per image."""

    B: int
    W: int
    N: int
    keep: int

    @staticmethod
    def of(op: RankOp) -> "RankProblem":
        return RankProblem(*tensor_shape(op.input), op.keep_value)


class RankKernel(Kernel[RankProblem]):
    problem_type = RankProblem

    def candidates(self, problem: RankProblem, target: Target) -> list[dict]:
        return [{"windows": w} for w in size_candidates(problem.W, 1, limit=DIM_MAX)]

    def need(self, problem: RankProblem, target: Target) -> str:
        p = problem
        return f"{p.W + p.keep + 2 * p.N} SPAD words for the scores and two windows"

    def emit(self, problem: RankProblem, tiling: dict, buffers: Buffers,
             target: Target) -> list[Instr]:
        p = problem
        return emit_rank(p.B, p.W, p.N, p.keep, tiling, buffers["input"], buffers["result"],
                         target)


class GatherKernel(Kernel[WindowTable]):
    problem_type = WindowTable

    def candidates(self, problem: WindowTable, target: Target) -> list[dict]:
        return _chunk_candidates(problem.count, problem.block, target)

    def need(self, problem: WindowTable, target: Target) -> str:
        return (f"{problem.images * problem.row} SPAD words for the indices and two chunks "
                f"of 256 words")

    def emit(self, problem: WindowTable, tiling: dict, buffers: Buffers,
             target: Target) -> list[Instr]:
        return emit_gather(problem, tiling, buffers["table"], buffers["indices"],
                           buffers["result"], target)


class ScatterKernel(GatherKernel):
    def candidates(self, problem: WindowTable, target: Target) -> list[dict]:
        words = problem.images * problem.windows * problem.block
        copy = min(words, target.spad_words // 2 - ALIGN_WORDS, DIM_MAX) // ALIGN_WORDS \
            * ALIGN_WORDS
        return [{**c, "copy": copy} for c in super().candidates(problem, target)]

    def emit(self, problem: WindowTable, tiling: dict, buffers: Buffers,
             target: Target) -> list[Instr]:
        return emit_scatter(problem, tiling, buffers["table"], buffers["indices"],
                            buffers["values"], buffers["result"], target)

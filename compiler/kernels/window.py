"""Kernels of the `win` ops (SparseViT window pruning): scoring, ranking, gathering and
scattering windows, on the vector unit and the gathered / scattered DMA.

- win.magnitude x [M x C] -> [M]: row tiles of `rows` tokens are loaded, reduced by one
  `vred mean_abs` each, and stored as one run of words.
- win.rank mags [W x N] -> [k]: window tiles are loaded and reduced by `vred l2` into one
  score row of W words; one `topk` writes the k best indices, which are stored.
- win.gather table [W x B] (B words per window), indices -> [count x B]: the indices are
  loaded once, then per chunk of windows and columns one `gload` (table blocks picked by
  the indices, `stride` B) and one store of the packed chunk.
- win.scatter: the table is copied to the result (the windows that are not scattered keep
  their values) unless plan-memory gave the result the table's own space (the table is
  not used afterwards: the usual case), then per chunk the values are loaded and one
  `gstore` writes them at their windows. The stores of the copy and the gstores touch the same words: the tokens
  of insert-tokens (footprints: a gstore may write any window) order them.

Chunk sizes are chosen by the timing model like every other kernel (`choose_best`).
"""

from __future__ import annotations

from nmc.isa.table import Instr, Mem, VRedFn
from nmc.isa.target import Target

from nmc.compiler.kernels.common import (
    ALIGN_WORDS, DIM_MAX, TILINGS, Block2D, OnChipAllocator, choose_best, emit_copies,
    size_candidates, tiles,
)


def _store_run(local: int, dram: int, words: int) -> Instr:
    return Instr.make("store", mem=Mem.SPAD, local=local, dram=dram, rows=1, cols=words,
                      stride=words)


def _load_rows(local: int, dram: int, rows: int, cols: int) -> Instr:
    return Instr.make("load", mem=Mem.SPAD, local=local, dram=dram, rows=rows, cols=cols,
                      stride=cols)


def emit_magnitude(M: int, C: int, tiling: dict, x: int, y: int, target: Target) -> list[Instr]:
    tr = tiling["rows"]
    chip = OnChipAllocator(target)
    inputs, outputs = chip.ring(Mem.SPAD, tr * C), chip.ring(Mem.SPAD, tr)
    out: list[Instr] = []
    for r0, rr in tiles(M, tr):
        src, dst = inputs.next(), outputs.next()
        out.append(_load_rows(src, x + r0 * C, rr, C))
        out.append(Instr.make("vred", fn=VRedFn.MEAN_ABS, dst_mem=Mem.SPAD, dst=dst,
                              src_mem=Mem.SPAD, src=src, rows=rr, cols=C))
        out.append(_store_run(dst, y + r0, rr))
    return out


def choose_magnitude_tiling(layer: str, M: int, C: int, target: Target) -> dict:
    def search() -> dict:
        return choose_best(
            layer, [{"rows": r} for r in size_candidates(M, 16, limit=DIM_MAX)],
            lambda t: emit_magnitude(M, C, t, 0, 0, target), target,
            need=f"{2 * (C + 1)} SPAD words for two rows of {C}")

    return TILINGS.get(("win.magnitude", M, C), target, search)


def emit_rank(W: int, N: int, keep: int, tiling: dict, mags: int, y: int,
              target: Target) -> list[Instr]:
    tw = tiling["windows"]
    chip = OnChipAllocator(target)
    scores, best = chip.alloc(Mem.SPAD, W), chip.alloc(Mem.SPAD, keep)
    ring = chip.ring(Mem.SPAD, tw * N)
    out: list[Instr] = []
    for w0, ww in tiles(W, tw):
        buf = ring.next()
        out.append(_load_rows(buf, mags + w0 * N, ww, N))
        out.append(Instr.make("vred", fn=VRedFn.L2, dst_mem=Mem.SPAD, dst=scores + w0,
                              src_mem=Mem.SPAD, src=buf, rows=ww, cols=N))
    out.append(Instr.make("topk", dst_mem=Mem.SPAD, dst=best, src_mem=Mem.SPAD, src=scores,
                          n=W, k=keep))
    out.append(_store_run(best, y, keep))
    return out


def choose_rank_tiling(layer: str, W: int, N: int, keep: int, target: Target) -> dict:
    def search() -> dict:
        return choose_best(
            layer, [{"windows": w} for w in size_candidates(W, 1, limit=DIM_MAX)],
            lambda t: emit_rank(W, N, keep, t, 0, 0, target), target,
            need=f"{W + keep + 2 * N} SPAD words for the scores and two windows")

    return TILINGS.get(("win.rank", W, N, keep), target, search)


def _chunks(count: int, block: int, tiling: dict):
    """(first window, windows, first column, columns) of each chunk of a gather/scatter."""
    for w0, ww in tiles(count, tiling["windows"]):
        for c0, cc in tiles(block, tiling["cols"]):
            yield w0, ww, c0, cc


def emit_gather(W: int, block: int, count: int, tiling: dict, table: int, indices: int,
                y: int, target: Target) -> list[Instr]:
    chip = OnChipAllocator(target)
    idx = chip.alloc(Mem.SPAD, count)
    ring = chip.ring(Mem.SPAD, tiling["windows"] * tiling["cols"])
    out = [_load_rows(idx, indices, 1, count)]
    for w0, ww, c0, cc in _chunks(count, block, tiling):
        buf = ring.next()
        out.append(Instr.make("gload", mem=Mem.SPAD, local=buf, dram=table + c0, idx=idx + w0,
                              count=ww, block=cc, stride=block, limit=W))
        out.append(Instr.make("store", mem=Mem.SPAD, local=buf, dram=y + w0 * block + c0,
                              rows=ww, cols=cc, stride=block))
    return out


def emit_scatter(W: int, block: int, count: int, tiling: dict, table: int, indices: int,
                 values: int, y: int, target: Target) -> list[Instr]:
    # plan-memory puts the result in the table's space when the table is not used after
    # (then the windows that are not scattered are already in place); otherwise, copy it
    out = [] if table == y else emit_copies(
        [(Block2D(table, 1, W * block, W * block), y, W * block)], tiling["copy"], target)
    chip = OnChipAllocator(target)
    idx = chip.alloc(Mem.SPAD, count)
    ring = chip.ring(Mem.SPAD, tiling["windows"] * tiling["cols"])
    out.append(_load_rows(idx, indices, 1, count))
    for w0, ww, c0, cc in _chunks(count, block, tiling):
        buf = ring.next()
        out.append(Instr.make("load", mem=Mem.SPAD, local=buf, dram=values + w0 * block + c0,
                              rows=ww, cols=cc, stride=block))
        out.append(Instr.make("gstore", mem=Mem.SPAD, local=buf, dram=y + c0, idx=idx + w0,
                              count=ww, block=cc, stride=block, limit=W))
    return out


def _chunk_candidates(count: int, block: int, target: Target) -> list[dict]:
    cols = sorted({block, *(c for c in (256, 1024, 4096) if c < block)})
    half = target.spad_words // 2 - ALIGN_WORDS
    return [{"windows": w, "cols": c}
            for w in size_candidates(count, 1, limit=DIM_MAX, balanced=8) for c in cols
            if w * c <= half]


def choose_gather_tiling(layer: str, W: int, block: int, count: int, target: Target) -> dict:
    def search() -> dict:
        return choose_best(
            layer, _chunk_candidates(count, block, target),
            lambda t: emit_gather(W, block, count, t, 0, 0, 0, target), target,
            need=f"{count} SPAD words for the indices and two chunks of 256 words")

    return TILINGS.get(("win.gather", W, block, count), target, search)


def choose_scatter_tiling(layer: str, W: int, block: int, count: int, target: Target) -> dict:
    copy = min(W * block, target.spad_words // 2 - ALIGN_WORDS, DIM_MAX) // ALIGN_WORDS \
        * ALIGN_WORDS

    def search() -> dict:
        return choose_best(
            layer, [{**t, "copy": copy} for t in _chunk_candidates(count, block, target)],
            lambda t: emit_scatter(W, block, count, t, 0, 0, 0, 0, target), target,
            need=f"{count} SPAD words for the indices and two chunks of 256 words")

    return TILINGS.get(("win.scatter", W, block, count), target, search)

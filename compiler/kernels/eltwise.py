"""Row-block kernels on the vector unit: nm.gelu, nm.add and nm.layer_norm over [M x C].

Each streams blocks of `rows` full rows: load, compute in place, store, with two SPAD
buffers per operand so the next block's load overlaps this block's compute and store.

A broadcast operand of nm.add (position embedding [1, N, D] added to [B, N, D]) is an input
of `period` rows (N) whose row r serves rows r, r + period, ... of the result: the stream
then walks each period separately so a block never wraps around it. An operand of one row
is a parameter instead (loaded once, added with the vector unit's row broadcast).
"""

from __future__ import annotations

from typing import Callable

from nmc.isa.table import Instr, Mem, VBinFn, VRowFn, VUnFn, f32_bits
from nmc.isa.target import Target

from nmc.compiler.kernels.common import (
    TILINGS, Matrix2D, OnChipAllocator, choose_best, load_block, size_candidates, store_block, tiles,
)


# compute(dst/src buffer, other operand buffers, rows, cols) -> one vector instruction
Compute = Callable[[int, list[int], int, int], Instr]


def emit_rowwise(M: int, C: int, tiling: dict, inputs: list[int], y: int, compute: Compute,
                 target: Target, params: list[int] = (), periods: list[int] | None = None
                 ) -> list[Instr]:
    """Stream `inputs` (DRAM [M x C] each) through `compute`, result to `y`. `params` are
    DRAM vectors of C words loaded once, side by side, before the stream. `periods[i]`
    (default M) is the number of rows of input i, which must divide M: input i is
    broadcast, its row r % periods[i] serving row r."""
    rows = tiling["rows"]
    periods = list(periods) if periods is not None else [M] * len(inputs)
    period = min(periods)  # blocks never cross a multiple of any period
    assert all(M % p == 0 and p % period == 0 for p in periods)
    chip = OnChipAllocator(target)
    param_buf = chip.alloc(Mem.SPAD, len(params) * C) if params else 0
    rings = [chip.ring(Mem.SPAD, rows * C) for _ in inputs]
    srcs = [Matrix2D(addr, p, C) for addr, p in zip(inputs, periods)]
    Y = Matrix2D(y, M, C)

    out = [load_block(Matrix2D(p, 1, C), 0, 0, 1, C, Mem.SPAD, param_buf + i * C)
           for i, p in enumerate(params)]
    for base in range(0, M, period):
        for r0, rr in tiles(period, rows):
            r = base + r0
            bufs = [ring.next() for ring in rings]
            out += [load_block(src, r % p, 0, rr, C, Mem.SPAD, buf)
                    for src, buf, p in zip(srcs, bufs, periods)]
            out.append(compute(bufs[0], bufs[1:] + [param_buf], rr, C))
            out.append(store_block(Y, r, 0, rr, C, Mem.SPAD, bufs[0]))
    return out


def gelu_compute(approximate: str) -> Compute:
    fn = VUnFn.GELU_TANH if approximate == "tanh" else VUnFn.GELU
    return lambda buf, _, rows, cols: Instr.make(
        "vun", fn=fn, dst_mem=Mem.SPAD, dst=buf, src_mem=Mem.SPAD, src=buf, rows=rows, cols=cols)


def add_compute(buf: int, others: list[int], rows: int, cols: int) -> Instr:
    return Instr.make("vbin", fn=VBinFn.ADD, dst_mem=Mem.SPAD, dst=buf, a_mem=Mem.SPAD, a=buf,
                      b_mem=Mem.SPAD, b=others[0], rows=rows, cols=cols)


def add_row_compute(buf: int, others: list[int], rows: int, cols: int) -> Instr:
    """+ a single row (a parameter loaded once), broadcast over the block's rows."""
    return Instr.make("vbin", fn=VBinFn.ADD, dst_mem=Mem.SPAD, dst=buf, a_mem=Mem.SPAD, a=buf,
                      b_mem=Mem.SPAD, b=others[-1], rows=rows, cols=cols, bcast=1)


def layernorm_compute(eps: float) -> Compute:
    return lambda buf, others, rows, cols: Instr.make(
        "vrow", fn=VRowFn.LAYERNORM, dst_mem=Mem.SPAD, dst=buf, src_mem=Mem.SPAD, src=buf,
        param=others[-1], rows=rows, cols=cols, imm=f32_bits(eps))


def choose_rowwise_tiling(layer: str, M: int, C: int, n_inputs: int, n_params: int,
                          compute: Compute, target: Target, periods: list[int] | None = None,
                          key: tuple | None = None) -> dict:
    """The row block size with the lowest estimate. `key` (the op kind and whatever makes
    `compute` differ) memoises the choice per shape."""
    period = min(periods) if periods else M

    def search() -> dict:
        candidates = [{"rows": r} for r in size_candidates(period, 1, limit=period, balanced=64)]
        return choose_best(
            layer, candidates,
            lambda t: emit_rowwise(M, C, t, [0] * n_inputs, 0, compute, target,
                                   [0] * n_params, periods),
            target,
            need=f"{2 * n_inputs * C + n_params * C} SPAD words for one row of {C}",
            simulate=True,
        )

    if key is None:
        return search()
    return TILINGS.get(("rowwise", *key, M, C, n_inputs, n_params,
                        tuple(periods or ())), target, search)

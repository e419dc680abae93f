"""nm.mean: the mean over the tokens of x [B, T, C] (global average pooling) -> [B, C], on
the vector unit alone.

Per image and column tile of tc columns, row blocks of tr tokens are loaded ([tr x tc],
row stride C) and summed in place by halving: rows [0, h) += rows [n - h, n) with
h = n // 2 (one vbin add, the middle row of an odd n stays), until one row is left. With
several row blocks their sums accumulate in a separate row (vun copy, then vbin add). The
sum is scaled by 1/T (vun scale) and stored. No constant operand is needed; the pairwise
summation order keeps the rounding error at the level of PyTorch's own.
"""

from __future__ import annotations

from dataclasses import dataclass
from math import prod

from nmc.compiler.dialects.nm import MeanOp, tensor_shape
from nmc.isa.table import Instr, Mem, VBinFn, VUnFn, f32_bits
from nmc.isa.target import Target

from nmc.compiler.kernels.common import (
    Matrix2D, OnChipAllocator, load_block, size_candidates, store_block, tiles,
)
from nmc.compiler.kernels.kernel import Buffers, Kernel


def _vbin_add(dst: int, a: int, b: int, rows: int, cols: int) -> Instr:
    return Instr.make("vbin", fn=VBinFn.ADD, dst_mem=Mem.SPAD, dst=dst, a_mem=Mem.SPAD, a=a,
                      b_mem=Mem.SPAD, b=b, rows=rows, cols=cols)


def emit_mean(B: int, T: int, C: int, tiling: dict, x: int, y: int,
              target: Target) -> list[Instr]:
    tr, tc = tiling["rows"], tiling["cols"]
    chip = OnChipAllocator(target)
    ring = chip.ring(Mem.SPAD, tr * tc)
    row_tiles = list(tiles(T, tr))
    acc = chip.alloc(Mem.SPAD, tc) if len(row_tiles) > 1 else None
    X, Y = Matrix2D(x, B * T, C), Matrix2D(y, B, C)
    out: list[Instr] = []
    for b in range(B):
        for c0, cc in tiles(C, tc):
            res = acc
            for i, (r0, rr) in enumerate(row_tiles):
                buf = ring.next()
                out.append(load_block(X, b * T + r0, c0, rr, cc, Mem.SPAD, buf))
                n = rr
                while n > 1:
                    h = n // 2
                    out.append(_vbin_add(buf, buf, buf + (n - h) * cc, h, cc))
                    n -= h
                if acc is None:
                    res = buf
                elif i == 0:
                    out.append(Instr.make("vun", fn=VUnFn.COPY, dst_mem=Mem.SPAD, dst=acc,
                                          src_mem=Mem.SPAD, src=buf, rows=1, cols=cc))
                else:
                    out.append(_vbin_add(acc, acc, buf, 1, cc))
            out.append(Instr.make("vun", fn=VUnFn.SCALE, dst_mem=Mem.SPAD, dst=res,
                                  src_mem=Mem.SPAD, src=res, rows=1, cols=cc,
                                  imm=f32_bits(1.0 / T)))
            out.append(store_block(Y, b, c0, 1, cc, Mem.SPAD, res))
    return out


@dataclass(frozen=True)
class MeanProblem:
    """nm.mean of x [B, T..., C] over its T tokens (the dims between the first and the
    last, flattened)."""

    B: int
    T: int
    C: int

    @staticmethod
    def of(op: MeanOp) -> "MeanProblem":
        shape = tensor_shape(op.input)
        return MeanProblem(shape[0], prod(shape[1:-1]), shape[-1])


class MeanKernel(Kernel[MeanProblem]):
    problem_type = MeanProblem

    def candidates(self, problem: MeanProblem, target: Target) -> list[dict]:
        T, C = problem.T, problem.C
        cols = sorted({C, *(c for c in (64, 128, 256, 512) if c < C)})
        return [{"rows": r, "cols": c}
                for r in size_candidates(T, 1, limit=T, balanced=8) for c in cols]

    def need(self, problem: MeanProblem, target: Target) -> str:
        c = min(problem.C, 64)
        return f"{3 * c} SPAD words for two rows and a sum of {c} columns"

    def emit(self, problem: MeanProblem, tiling: dict, buffers: Buffers,
             target: Target) -> list[Instr]:
        return emit_mean(problem.B, problem.T, problem.C, tiling, buffers["input"],
                         buffers["result"], target)

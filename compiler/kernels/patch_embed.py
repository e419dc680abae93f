"""nm.patch_embed: conv2d with stride = kernel = p as im2col by DMA, then the linear kernel.

The im2col matrix X2 [B*Hp*Wp x Cin*p*p] (Hp = H // p, Wp = W // p) lives in DRAM scratch
space that plan-memory reserves for the op: row b*Hp*Wp + py*Wp + px, column c*p*p + i*p + j
holds x[b, c, py*p + i, px*p + j]. For each (b, c, i) one load gathers image rows
py*p + i (py = 0 .. Hp-1, rows p*W apart) into a contiguous SPAD block [Hp x Wp*p], which
is the same words as [Hp*Wp x p]: one p-wide slice of every patch, in patch order; one store
writes it to columns (c*p + i)*p .. +p of every row of X2 (row stride Cin*p*p). So the
whole im2col is 2*B*Cin*p transfers (blocks of py are split if they exceed the chunk).

Then Y [B*Hp*Wp x D] = X2 . W^T + bias with the conv weight [D, Cin, p, p] read as stored,
i.e. as [D x Cin*p*p] row-major (the linear kernel's `w_layout="nk"`, matmul transpose_w):
no layout change of the parameter is needed. Y is already [B, Hp*Wp, D].

int8 (an op with `nm.quant`, docs/INT8.md): the linear half is the int8 linear kernel; its
weight is stored as the int8 [Cin*p*p x D] (the quantize pass chose the layout) and its
quantised input follows the im2col matrix in the scratch space.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from nmc.common import quant as quant_rule
from nmc.compiler.dialects.nm import PatchEmbedOp, tensor_shape
from nmc.compiler.dialects.nm_attrs import quant
from nmc.isa.table import Instr, Mem
from nmc.isa.target import Target

from nmc.compiler.kernels.common import (
    TILINGS, OnChipAllocator, TileError, _DoesNotFit, estimate_cycles,
)
from nmc.compiler.kernels.int8 import int8_shape, quantized_words
from nmc.compiler.kernels.kernel import Buffers, Kernel
from nmc.compiler.kernels.linear import LINEAR, LinearProblem


def im2col_words(B: int, Cin: int, H: int, W: int, p: int) -> int:
    return B * (H // p) * (W // p) * Cin * p * p


def emit_im2col(B: int, Cin: int, H: int, W: int, p: int, tiling: dict, x: int, x2: int,
                target: Target) -> list[Instr]:
    Hp, Wp = H // p, W // p
    K = Cin * p * p
    rows_per = tiling["py"]  # patch rows per transfer
    chip = OnChipAllocator(target)
    ring = chip.ring(Mem.SPAD, rows_per * Wp * p)
    out: list[Instr] = []
    for b in range(B):
        for c in range(Cin):
            plane = x + (b * Cin + c) * H * W
            for i in range(p):
                for py0 in range(0, Hp, rows_per):
                    n = min(rows_per, Hp - py0)
                    buf = ring.next()
                    out.append(Instr.make("load", mem=Mem.SPAD, local=buf,
                                          dram=plane + (py0 * p + i) * W, rows=n,
                                          cols=Wp * p, stride=p * W))
                    out.append(Instr.make("store", mem=Mem.SPAD, local=buf,
                                          dram=x2 + (b * Hp + py0) * Wp * K + (c * p + i) * p,
                                          rows=n * Wp, cols=p, stride=K))
    return out


@dataclass(frozen=True)
class PatchEmbedProblem:
    """nm.patch_embed of x [B, Cin, H, W] by a conv weight [D, Cin, p, p] with a bias;
    `int8` / `inv_scale` as in LinearProblem."""

    B: int
    Cin: int
    H: int
    W: int
    p: int
    D: int
    int8: bool = False
    inv_scale: float = field(default=1.0, compare=False)

    @staticmethod
    def of(op: PatchEmbedOp) -> "PatchEmbedProblem":
        B, Cin, H, W = tensor_shape(op.input)
        D, p = tensor_shape(op.weight)[0], tensor_shape(op.weight)[2]
        scales = quant(op)
        if scales is None:
            return PatchEmbedProblem(B, Cin, H, W, p, D)
        return PatchEmbedProblem(B, Cin, H, W, p, D, True,
                                 float(quant_rule.inverse_scale(scales[0])))

    def on(self, target: Target) -> "PatchEmbedProblem":
        """As LinearProblem.on: int8 on an int8 target when its shape allows."""
        if target.int8 and not self.int8 and int8_shape(self.Cin * self.p * self.p, self.D):
            return replace(self, int8=True)
        return self

    @property
    def linear(self) -> LinearProblem:
        """The linear half: the im2col matrix times the weight read as stored (int8: the
        int8 W^T)."""
        q = self
        return LinearProblem(q.B * (q.H // q.p) * (q.W // q.p), q.Cin * q.p * q.p, q.D, True,
                             w_layout="kn" if q.int8 else "nk", int8=q.int8,
                             inv_scale=q.inv_scale)


class PatchEmbedKernel(Kernel[PatchEmbedProblem]):
    """The im2col (its own tiling `py`: patch rows per transfer) then the linear kernel
    (the linear tiling)."""

    problem_type = PatchEmbedProblem

    def problem_on(self, op: PatchEmbedOp, target: Target) -> PatchEmbedProblem:
        return self.problem(op).on(target)

    def scratch_words(self, problem: PatchEmbedProblem, tiling: dict) -> int:
        q = problem
        words = im2col_words(q.B, q.Cin, q.H, q.W, q.p)
        return words + (quantized_words(q.linear.M, q.linear.K) if q.int8 else 0)

    def emit(self, problem: PatchEmbedProblem, tiling: dict, buffers: Buffers,
             target: Target) -> list[Instr]:
        q, scratch = problem, buffers["scratch"]
        linear = Buffers({"input": scratch, "weight": buffers["weight"],
                          "bias": buffers["bias"], "result": buffers["result"],
                          "scratch": scratch + im2col_words(q.B, q.Cin, q.H, q.W, q.p)})
        return (emit_im2col(q.B, q.Cin, q.H, q.W, q.p, tiling, buffers["input"], scratch,
                            target)
                + LINEAR.emit(q.linear, tiling, linear, target))

    def choose(self, problem: PatchEmbedProblem, target: Target, layer: str) -> dict:
        q = problem
        Hp = q.H // q.p

        def search() -> dict:
            tiling = LINEAR.choose(q.linear, target, layer)
            best = None
            for py in sorted({Hp, *(1 << e for e in range(Hp.bit_length()) if 1 << e < Hp)}):
                try:
                    instrs = emit_im2col(q.B, q.Cin, q.H, q.W, q.p, {"py": py}, 0, 0, target)
                except _DoesNotFit:
                    continue
                key = (estimate_cycles(instrs, target), len(instrs))
                if best is None or key < best[0]:
                    best = (key, py)
            if best is None:
                raise TileError(f"layer '{layer}': one image row of {q.W} words does not fit "
                                f"SPAD twice on target '{target.name}'")
            return {**tiling, "py": best[1]}

        return TILINGS.get((type(self).__name__, problem), target, search)

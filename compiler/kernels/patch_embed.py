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
"""

from __future__ import annotations

from nmc.isa.table import Instr, Mem
from nmc.isa.target import Target

from nmc.compiler.kernels.common import (
    TILINGS, OnChipAllocator, TileError, _DoesNotFit, estimate_cycles,
)
from nmc.compiler.kernels.linear import choose_linear_tiling, emit_linear


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


def patch_embed_dims(x_shape, w_shape) -> tuple[int, int, int, int, int, int]:
    B, Cin, H, W = x_shape
    D, p = w_shape[0], w_shape[2]
    return B, Cin, H, W, p, D


def emit_patch_embed(x_shape, w_shape, tiling: dict, x: int, w: int, bias: int, y: int,
                     scratch: int, target: Target) -> list[Instr]:
    B, Cin, H, W, p, D = patch_embed_dims(x_shape, w_shape)
    M, K = B * (H // p) * (W // p), Cin * p * p
    return (emit_im2col(B, Cin, H, W, p, tiling, x, scratch, target)
            + emit_linear(M, K, D, tiling, scratch, w, bias, y, target, w_layout="nk"))


def choose_patch_embed_tiling(layer: str, x_shape, w_shape, target: Target) -> dict:
    B, Cin, H, W, p, D = patch_embed_dims(x_shape, w_shape)
    Hp, Wp = H // p, W // p

    def search() -> dict:
        tiling = choose_linear_tiling(layer, B * Hp * Wp, Cin * p * p, D, True, target, "nk")
        best = None
        for py in sorted({Hp, *(1 << e for e in range(Hp.bit_length()) if 1 << e < Hp)}):
            try:
                instrs = emit_im2col(B, Cin, H, W, p, {"py": py}, 0, 0, target)
            except _DoesNotFit:
                continue
            key = (estimate_cycles(instrs, target), len(instrs))
            if best is None or key < best[0]:
                best = (key, py)
        if best is None:
            raise TileError(f"layer '{layer}': one image row of {W} words does not fit SPAD "
                            f"twice on target '{target.name}'")
        return {**tiling, "py": best[1]}

    return TILINGS.get(("patch_embed", tuple(x_shape), tuple(w_shape)), target, search)

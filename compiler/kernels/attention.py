"""nm.attention: per batch b and head h, O = softmax(Q . K^T * scale) . V on the matrix and
vector units, straight from the output of the qkv linear.

qkv [B, N, 3C] is row-major in DRAM, so with d = C / heads the q, k and v of head h are the
2-D blocks at columns h*d, C + h*d and 2C + h*d of rows b*N .. b*N + N (row stride 3C):
plain strided DMA, no reshuffling. Per (b, h):

    load K_h [N x d], V_h [N x d]                   (double-buffered across heads)
    for each tile of tm query rows:
        load Q [tm x d]
        S[tm x N] = Q . K_h^T        matmul with transpose_w (K_h is stored [N x d])
        P[tm x N] = softmax(S * scale) along rows   vrow, ACC -> SPAD
        O[tm x d] = P . V_h          matmul, into S's ACC buffer (S is dead after softmax)
        store O into the result [B, N, C] at rows b*N + m0, columns h*d (row stride C),
        straight from ACC

Every buffer is double-buffered, so the next tile's Q load and S matmul overlap this tile's
softmax and store. The tile height tm is chosen by the timing model (S must fit ACC twice;
O living in S's buffer is what lets tm = 32 fit for 197 tokens).
Keys are not tiled (softmax needs whole rows): K_h and V_h must fit SPAD.
"""

from __future__ import annotations

from nmc.isa.table import Instr, Mem, VRowFn, f32_bits
from nmc.isa.target import Target

from nmc.compiler.kernels.common import (
    TILINGS, Matrix2D, OnChipAllocator, choose_best, load_block, size_candidates, store_block,
    tiles,
)


def emit_attention(B: int, N: int, C: int, heads: int, scale: float, tiling: dict, qkv: int,
                   y: int, target: Target) -> list[Instr]:
    d = C // heads
    tm, kv_slots = tiling["m"], tiling.get("kv", 2)
    QKV, Y = Matrix2D(qkv, B * N, 3 * C), Matrix2D(y, B * N, C)
    chip = OnChipAllocator(target)
    k_ring = chip.ring(Mem.SPAD, N * d, kv_slots)
    v_ring = chip.ring(Mem.SPAD, N * d, kv_slots)
    q_ring = chip.ring(Mem.SPAD, tm * d)
    p_ring = chip.ring(Mem.SPAD, tm * N)
    s_ring = chip.ring(Mem.ACC, tm * max(N, d))
    imm = f32_bits(scale)

    out: list[Instr] = []
    for b in range(B):
        r = b * N
        for h in range(heads):
            kb, vb = k_ring.next(), v_ring.next()
            out.append(load_block(QKV, r, C + h * d, N, d, Mem.SPAD, kb))
            out.append(load_block(QKV, r, 2 * C + h * d, N, d, Mem.SPAD, vb))
            for m0, mr in tiles(N, tm):
                q, s, p = q_ring.next(), s_ring.next(), p_ring.next()
                o = s
                out.append(load_block(QKV, r + m0, h * d, mr, d, Mem.SPAD, q))
                out.append(Instr.make("matmul", a=q, w=kb, out=s, m=mr, k=d, n=N,
                                      transpose_w=1))
                out.append(Instr.make("vrow", fn=VRowFn.SOFTMAX, dst_mem=Mem.SPAD, dst=p,
                                      src_mem=Mem.ACC, src=s, rows=mr, cols=N, imm=imm))
                out.append(Instr.make("matmul", a=p, w=vb, out=o, m=mr, k=N, n=d))
                out.append(store_block(Y, r + m0, h * d, mr, d, Mem.ACC, o))
    return out


def choose_attention_tiling(layer: str, B: int, N: int, C: int, heads: int,
                            target: Target) -> dict:
    def search() -> dict:
        # heights below the PE array's rows waste part of it: only for tiny accumulators
        heights = sorted(set(size_candidates(N, target.mx_rows, limit=N))
                         | {s for s in (1, 2, 4, 8) if s < min(N, target.mx_rows)})
        candidates = [{"m": tm, "kv": kv} for kv in (2, 1) for tm in heights]
        d = C // heads
        return choose_best(
            layer, candidates,
            lambda t: emit_attention(B, N, C, heads, 1.0, t, 0, 0, target),
            target,
            need=f"{2 * N * d} SPAD words for one head's keys and values ({N} tokens x {d}) "
                 f"and {2 * target.mx_rows * N} ACC words for two tiles of scores",
        )

    return TILINGS.get(("attention", B, N, C, heads), target, search)

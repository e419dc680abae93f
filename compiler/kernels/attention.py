"""nm.attention: per batch b and head h, O = softmax(Q . K^T * scale) . V on the matrix and
vector units, straight from the output of the qkv linear.

qkv [B, N, 3C] is row-major in DRAM, so with d = C / heads the q, k and v of head h are the
2-D blocks at columns h*d, C + h*d and 2C + h*d of rows b*N .. b*N + N (row stride 3C):
plain strided DMA, no reshuffling. Per (b, h), for each tile i of tm query rows:

    load Q_i [tm x d]
    S_i[tm x N] = Q_i . K_h^T    matmul with transpose_w (K_h is loaded [N x d] per head)
    P_i[tm x N] = softmax(S_i * scale) along rows     vrow, ACC -> SPAD
    O_i[tm x d] = P_i . V_h      matmul
    store O_i into the result [B, N, C] at rows b*N + m0, columns h*d (row stride C),
    straight from ACC

With an additive bias [G, heads, N, N] (Swin's relative position bias + shifted-window
mask, one [N x N] block per (window, head)), the tile's bias rows are loaded too, Q_i is
scaled in place (vun scale, as timm scales q), and S_i + bias goes through vbin add
(ACC + SPAD -> SPAD) before a softmax with scale 1.

The matrix unit runs its queue in order, so issuing S_i then O_i would leave it idle during
every softmax. The kernel is software-pipelined instead: the matrix queue holds
S_0 .. S_(L-1), then O_i followed by S_(i+L), so the scores of the next tiles are computed
while the vector unit normalises tile i (L = `depth`; the (b, h) loop is flattened so the
pipeline runs across heads, except that the outputs still reading a V buffer are issued
before that buffer is reloaded). S, P and Q need L + 1 buffers each. O_i goes either to a separate ring
of two ACC buffers, or (`o_in_s`, when ACC is tight: 197 tokens, tm = 32) into the ACC
buffer of S_i, which is dead after its softmax. K_h and V_h are double-buffered across
heads (`kv` = 2) when SPAD allows. Keys are not tiled (softmax needs whole rows): K_h and
V_h must fit SPAD.

The tiling {m, kv, depth, o_in_s} is chosen by simulating each candidate kernel with the
emulator's timing rule (`simulate_cycles`), which sees these stalls; the simple
busiest-unit estimate does not.
"""

from __future__ import annotations

from dataclasses import dataclass

from nmc.compiler.dialects.nm import AttentionOp, tensor_shape
from nmc.isa.table import Instr, Mem, VBinFn, VRowFn, VUnFn, f32_bits
from nmc.isa.target import Target

from nmc.compiler.kernels.common import (
    Matrix2D, OnChipAllocator, load_block, size_candidates, store_block, tiles,
)
from nmc.compiler.kernels.kernel import Buffers, Kernel


def emit_attention(B: int, N: int, C: int, heads: int, scale: float, tiling: dict, qkv: int,
                   y: int, target: Target, bias: int | None = None, groups: int = 1
                   ) -> list[Instr]:
    """`bias`: DRAM address of the additive term [groups, heads, N, N] of the scores (None:
    no bias); batch b uses bias[b % groups]."""
    d = C // heads
    tm, kv_slots = tiling["m"], tiling.get("kv", 2)
    depth, o_in_s = tiling.get("depth", 1), bool(tiling.get("o_in_s", 0))
    QKV, Y = Matrix2D(qkv, B * N, 3 * C), Matrix2D(y, B * N, C)
    chip = OnChipAllocator(target)
    k_ring = chip.ring(Mem.SPAD, N * d, kv_slots)
    v_ring = chip.ring(Mem.SPAD, N * d, kv_slots)
    q_ring = chip.ring(Mem.SPAD, tm * d, depth + 1)
    p_ring = chip.ring(Mem.SPAD, tm * N, depth + 1)
    s_ring = chip.ring(Mem.ACC, tm * (max(N, d) if o_in_s else N), depth + 1)
    o_ring = None if o_in_s else chip.ring(Mem.ACC, tm * d)
    b_ring = None if bias is None else chip.ring(Mem.SPAD, tm * N, depth + 1)
    BIAS = None if bias is None else Matrix2D(bias, groups * heads * N, N)
    imm = f32_bits(scale)

    # every (b, h, tile) in order, with the K/V buffers of its head
    work = []
    for b in range(B):
        for h in range(heads):
            kb, vb = k_ring.next(), v_ring.next()
            for i, (m0, mr) in enumerate(tiles(N, tm)):
                work.append((b, h, m0, mr, kb, vb, i == 0))

    out: list[Instr] = []
    pending: list[tuple] = []  # tiles whose scores are computed, oldest first

    def issue_scores(t) -> None:
        b, h, m0, mr, kb, vb, first = t
        if first:  # the head's keys and values
            while any(pt[0][5] == vb for pt in pending):
                issue_output()  # a pending tile still reads the V buffer being replaced
            out.append(load_block(QKV, b * N, C + h * d, N, d, Mem.SPAD, kb))
            out.append(load_block(QKV, b * N, 2 * C + h * d, N, d, Mem.SPAD, vb))
        q, s, p = q_ring.next(), s_ring.next(), p_ring.next()
        out.append(load_block(QKV, b * N + m0, h * d, mr, d, Mem.SPAD, q))
        if BIAS is None:
            out.append(Instr.make("matmul", a=q, w=kb, out=s, m=mr, k=d, n=N, transpose_w=1))
            out.append(Instr.make("vrow", fn=VRowFn.SOFTMAX, dst_mem=Mem.SPAD, dst=p,
                                  src_mem=Mem.ACC, src=s, rows=mr, cols=N, imm=imm))
        else:  # softmax((q * scale) . k^T + bias), q scaled first as in timm
            bb = b_ring.next()
            out.append(load_block(BIAS, ((b % groups) * heads + h) * N + m0, 0, mr, N,
                                  Mem.SPAD, bb))
            out.append(Instr.make("vun", fn=VUnFn.SCALE, dst_mem=Mem.SPAD, dst=q,
                                  src_mem=Mem.SPAD, src=q, rows=mr, cols=d, imm=imm))
            out.append(Instr.make("matmul", a=q, w=kb, out=s, m=mr, k=d, n=N, transpose_w=1))
            out.append(Instr.make("vbin", fn=VBinFn.ADD, dst_mem=Mem.SPAD, dst=p,
                                  a_mem=Mem.ACC, a=s, b_mem=Mem.SPAD, b=bb, rows=mr, cols=N))
            out.append(Instr.make("vrow", fn=VRowFn.SOFTMAX, dst_mem=Mem.SPAD, dst=p,
                                  src_mem=Mem.SPAD, src=p, rows=mr, cols=N,
                                  imm=f32_bits(1.0)))
        pending.append((t, s, p))

    def issue_output() -> None:
        (b, h, m0, mr, kb, vb, _), s, p = pending.pop(0)
        o = s if o_ring is None else o_ring.next()
        out.append(Instr.make("matmul", a=p, w=vb, out=o, m=mr, k=N, n=d))
        out.append(store_block(Y, b * N + m0, h * d, mr, d, Mem.ACC, o))

    for t in work:
        issue_scores(t)
        if len(pending) > depth:
            issue_output()
    while pending:
        issue_output()
    return out


@dataclass(frozen=True)
class AttentionProblem:
    """An nm.attention: qkv [B, N, 3C] with `heads` heads; `groups`: the number of
    [heads, N, N] blocks of the additive bias (None: no bias)."""

    B: int
    N: int
    C: int
    heads: int
    scale: float
    groups: int | None = None

    @staticmethod
    def of(op: AttentionOp) -> "AttentionProblem":
        B, N, C3 = tensor_shape(op.qkv)
        groups = None if op.bias is None else tensor_shape(op.bias)[0]
        return AttentionProblem(B, N, C3 // 3, op.heads_value, op.scale_value, groups)

    def steady_state(self) -> "AttentionProblem":
        """Two heads of one image: every head repeats the same schedule, so this ranks
        tilings as the whole problem does, at a fraction of the price."""
        h = min(self.heads, 2)
        return AttentionProblem(1, self.N, self.C // self.heads * h, h, 1.0,
                                None if self.groups is None else 1)


class AttentionKernel(Kernel[AttentionProblem]):
    """Ranked by the emulator's timing rule, which sees the pipeline's stalls."""

    simulate = True

    problem_type = AttentionProblem

    def candidates(self, problem: AttentionProblem, target: Target) -> list[dict]:
        # heights below the PE array's rows waste part of it: only for tiny accumulators
        N = problem.N
        heights = sorted(set(size_candidates(N, target.mx_rows, limit=N, balanced=8))
                         | {s for s in (1, 2, 4, 8) if s < min(N, target.mx_rows)})
        return [{"m": tm, "kv": kv, "depth": depth, "o_in_s": o_in_s}
                for tm in heights for kv in (2, 1) for depth in (1, 2, 0)
                for o_in_s in (0, 1)]

    def need(self, problem: AttentionProblem, target: Target) -> str:
        N, d = problem.N, problem.C // problem.heads
        return (f"{2 * N * d} SPAD words for one head's keys and values ({N} tokens x {d}) "
                f"and {2 * target.mx_rows * N} ACC words for two tiles of scores")

    def choose(self, problem: AttentionProblem, target: Target, layer: str) -> dict:
        return super().choose(problem.steady_state(), target, layer)

    def emit(self, problem: AttentionProblem, tiling: dict, buffers: Buffers,
             target: Target) -> list[Instr]:
        p = problem
        return emit_attention(p.B, p.N, p.C, p.heads, p.scale, tiling, buffers["qkv"],
                              buffers["result"], target,
                              bias=None if p.groups is None else buffers["bias"],
                              groups=1 if p.groups is None else p.groups)

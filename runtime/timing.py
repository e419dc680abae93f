"""The timing model, defined once.

The emulator charges every instruction `instruction_cycles(instr, target)` cycles on its
unit; the compiler's tiling and sparsity searches call the same functions on the
instructions they would emit, so what the compiler optimises is what the emulator reports.

`CYCLES` registers one cycle formula per opcode of the ISA table
(tests/test_isa_facts.py checks that every opcode has one). Every formula is written with
integer arithmetic only (`nmc.isa.fieldmath`), so it also works elementwise on numpy
integer arrays: `cycles_of(spec, fields, target)` takes a mapping of field values (ints, or
arrays of the fields of many instructions of one opcode, which is how the emulator decodes
a whole program at once).
"""

from __future__ import annotations

from typing import Any, Callable

from nmc.isa.fieldmath import ceil_div, log2_ceil, lookup, maximum
from nmc.isa.table import (
    GLOAD, GSTORE, HALT, IMATMUL, ISPMATMUL, LOAD, MATMUL, SPMATMUL, STORE, TOPK, VBIN, VRED,
    VROW, VUN, Fields,
    Instr, OpSpec,
)
from nmc.isa.target import Target

WORD_BYTES = 4


def dma_cycles(rows, cols, target: Target):
    """A 2-D transfer: fixed latency, a burst setup per row, then bandwidth-bound."""
    data = ceil_div(rows * cols * WORD_BYTES, target.dma_bytes_per_cycle)
    return target.dma_latency + rows * target.dma_row_overhead + data


def matmul_cycles(m, k, n, target: Target):
    """Output-stationary PE array of mx_rows x mx_cols: one k-step per cycle per pass.
    (`transpose_w` does not change the cost: the array reads W either way round.)"""
    passes = ceil_div(m, target.mx_rows) * ceil_div(n, target.mx_cols)
    return target.mx_latency + passes * k


def spmatmul_cycles(m, k, n, pat_n, pat_m, target: Target):
    """An N:M sparse tile: the array steps only over the kept weights, k*N/M (rounded up)
    k-steps per pass; the index decode is pipelined with it (no extra cycles)."""
    return matmul_cycles(m, ceil_div(k * pat_n, pat_m), n, target)


def topk_cycles(n, target: Target):
    """A sorting network over n scores on the vector lanes: ceil(log2 n)^2 compare-exchange
    steps (bitonic sort), each a pass over ceil(n / lanes) lane groups."""
    depth = log2_ceil(n)
    return target.vec_latency + ceil_div(n, target.vec_lanes) * depth * depth * \
        target.vec_cost["topk"]


def vector_cycles(fn_name: str, rows, cols, target: Target):
    passes = rows * ceil_div(cols, target.vec_lanes)
    return target.vec_latency + passes * target.vec_cost[fn_name]


# --------------------------------------------------------------------------------------
# The cycles of every instruction, from its fields.

CyclesFormula = Callable[[Fields, Target], Any]


def _dma(f: Fields, target: Target):
    return dma_cycles(f["rows"], f["cols"], target)


def _gathered_dma(f: Fields, target: Target):
    return dma_cycles(f["count"], f["block"], target)  # one burst per block, as a row


def _matmul(f: Fields, target: Target):
    return matmul_cycles(f["m"], f["k"], f["n"], target)


def _spmatmul(f: Fields, target: Target):
    # pat_m = 0 is rejected by the emulator's operand check; avoid dividing by it
    return spmatmul_cycles(f["m"], f["k"], f["n"], f["pat_n"], maximum(f["pat_m"], 1), target)


def _topk(f: Fields, target: Target):
    return topk_cycles(f["n"], target)


def _halt(f: Fields, target: Target):
    return 0


def _vector(spec: OpSpec) -> CyclesFormula:
    """The cycles of a vector instruction whose `fn` field picks the cost per pass
    (function numbers must be defined ones)."""
    fn_enum = spec.field_by_name["fn"].enum
    # (number, cost key) of every function, listed once: iterating an enum is slow, and the
    # tile search costs vector instructions one at a time many thousand times
    keys = [(int(e), e.name.lower()) for e in fn_enum]
    size = max(number for number, _ in keys) + 1

    def cycles(f: Fields, target: Target):
        costs = [0] * size
        for number, key in keys:
            costs[number] = target.vec_cost[key]
        passes = f["rows"] * ceil_div(f["cols"], target.vec_lanes)
        return target.vec_latency + passes * lookup(costs, f["fn"])

    return cycles


CYCLES: dict[int, CyclesFormula] = {
    HALT.opcode: _halt,
    LOAD.opcode: _dma, STORE.opcode: _dma,
    GLOAD.opcode: _gathered_dma, GSTORE.opcode: _gathered_dma,
    MATMUL.opcode: _matmul, IMATMUL.opcode: _matmul,  # int8: one k-step a cycle as well
    SPMATMUL.opcode: _spmatmul, ISPMATMUL.opcode: _spmatmul,
    VBIN.opcode: _vector(VBIN), VUN.opcode: _vector(VUN), VROW.opcode: _vector(VROW),
    VRED.opcode: _vector(VRED),
    TOPK.opcode: _topk,
}
"""opcode -> the cycles of an instruction of it on a target."""


def cycles_of(spec: OpSpec, f: Fields, target: Target):
    """The cycles of instruction(s) of `spec` with field values `f` (ints or int arrays)."""
    return CYCLES[spec.opcode](f, target)


def instruction_cycles(instr: Instr, target: Target) -> int:
    return int(cycles_of(instr.spec, instr.fields, target))


QUEUES = 4  # units with an instruction queue (nmc.isa.table.QUEUE_UNITS)


def token_schedule(units: list[int], waits: list[int], signals: list[int],
                   cycles: list[int]):
    """Start and end cycle of every instruction of a token-ordered stream, or None when
    the stream cannot be evaluated in program order.

    The emulator's rule: an instruction starts when its unit is free and every token it
    pops has arrived (tokens arrive when their producer ends). Tokens of queue V->U are
    pushed in V's program order and popped in U's, so the k-th pop matches the k-th push
    whatever the timing, and when every producer comes before its consumer in the stream
    the times follow in one pass. Returns (starts, ends, stall per unit, leftover tokens
    {(src, dst): count}); None if a pop has no push (a deadlock) or a producer comes after
    its consumer (the emulator's event simulation handles those)."""
    n = len(units)
    pushed = [[[] for _ in range(QUEUES)] for _ in range(QUEUES)]  # [src][dst] -> ends
    popped = [[0] * QUEUES for _ in range(QUEUES)]
    starts = [0] * n
    ends = [0] * n
    free = [0] * QUEUES
    stall = [0] * QUEUES
    bits = [tuple(v for v in range(QUEUES) if mask >> v & 1) for mask in range(1 << QUEUES)]
    for i in range(n):
        u = units[i]
        t = free[u]
        for v in bits[waits[i]]:
            queue = pushed[v][u]
            k = popped[v][u]
            if k >= len(queue):
                return None
            popped[v][u] = k + 1
            if queue[k] > t:
                t = queue[k]
        starts[i] = t
        stall[u] += t - free[u]
        e = t + cycles[i]
        ends[i] = e
        free[u] = e
        for v in bits[signals[i]]:
            pushed[u][v].append(e)
    leftover = {(s, d): len(pushed[s][d]) - popped[s][d]
                for s in range(QUEUES) for d in range(QUEUES)
                if len(pushed[s][d]) > popped[s][d]}
    return starts, ends, stall, leftover

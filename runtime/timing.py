"""The timing model, defined once.

The emulator charges every instruction `instruction_cycles(instr, target)` cycles on its
unit; the compiler's tiling and sparsity searches call the same functions on the
instructions they would emit, so what the compiler optimises is what the emulator reports.

Every formula is written with integer arithmetic only, so it also works elementwise on
numpy integer arrays: `cycles_of(mnemonic, fields, target)` takes a mapping of field
values (ints, or arrays of the fields of many instructions of one mnemonic, which is how
the emulator decodes a whole program at once).
"""

from __future__ import annotations

from typing import Any, Mapping

from nmc.isa.table import Instr, VBinFn, VRedFn, VRowFn, VUnFn
from nmc.isa.target import Target

WORD_BYTES = 4


def _ceil_div(a, b):
    return -(-a // b)


def dma_cycles(rows, cols, target: Target):
    """A 2-D transfer: fixed latency, a burst setup per row, then bandwidth-bound."""
    data = _ceil_div(rows * cols * WORD_BYTES, target.dma_bytes_per_cycle)
    return target.dma_latency + rows * target.dma_row_overhead + data


def matmul_cycles(m, k, n, target: Target):
    """Output-stationary PE array of mx_rows x mx_cols: one k-step per cycle per pass.
    (`transpose_w` does not change the cost: the array reads W either way round.)"""
    passes = _ceil_div(m, target.mx_rows) * _ceil_div(n, target.mx_cols)
    return target.mx_latency + passes * k


def spmatmul_cycles(m, k, n, pat_n, pat_m, target: Target):
    """An N:M sparse tile: the array steps only over the kept weights, k*N/M (rounded up)
    k-steps per pass; the index decode is pipelined with it (no extra cycles)."""
    return matmul_cycles(m, _ceil_div(k * pat_n, pat_m), n, target)


def _log2_ceil(n):
    """ceil(log2(n)) for n >= 1 (0 for n <= 1), elementwise on int arrays too."""
    import numpy as np

    return np.ceil(np.log2(np.maximum(n, 1))).astype(np.int64) if not isinstance(n, int) \
        else max(0, (n - 1).bit_length())


def topk_cycles(n, target: Target):
    """A sorting network over n scores on the vector lanes: ceil(log2 n)^2 compare-exchange
    steps (bitonic sort), each a pass over ceil(n / lanes) lane groups."""
    depth = _log2_ceil(n)
    return target.vec_latency + _ceil_div(n, target.vec_lanes) * depth * depth * \
        target.vec_cost["topk"]


def vector_cycles(fn_name: str, rows, cols, target: Target):
    passes = rows * _ceil_div(cols, target.vec_lanes)
    return target.vec_latency + passes * target.vec_cost[fn_name]


_VECTOR_FNS = {"vbin": VBinFn, "vun": VUnFn, "vrow": VRowFn, "vred": VRedFn}


def vector_fn_costs(mnemonic: str, target: Target) -> list[int]:
    """cost[fn] of every function number of a vector mnemonic (for array lookups)."""
    enum = _VECTOR_FNS[mnemonic]
    costs = [0] * (max(int(e) for e in enum) + 1)
    for e in enum:
        costs[int(e)] = target.vec_cost[e.name.lower()]
    return costs


def cycles_of(mnemonic: str, f: Mapping[str, Any], target: Target):
    """The cycles of instruction(s) `mnemonic` with field values `f` (ints or int arrays;
    vector function numbers must be defined ones)."""
    match mnemonic:
        case "load" | "store":
            return dma_cycles(f["rows"], f["cols"], target)
        case "gload" | "gstore":  # one burst per block, as a 2-D transfer's rows
            return dma_cycles(f["count"], f["block"], target)
        case "matmul":
            return matmul_cycles(f["m"], f["k"], f["n"], target)
        case "spmatmul":
            # pat_m = 0 is rejected by the emulator's operand check; avoid dividing by it
            pat_m = f["pat_m"]
            pat_m = max(pat_m, 1) if isinstance(pat_m, int) else pat_m.clip(min=1)
            return spmatmul_cycles(f["m"], f["k"], f["n"], f["pat_n"], pat_m, target)
        case "topk":
            return topk_cycles(f["n"], target)
        case "vbin" | "vun" | "vrow" | "vred":
            fn = f["fn"]
            passes = f["rows"] * _ceil_div(f["cols"], target.vec_lanes)
            if isinstance(fn, int):
                cost = vector_fn_costs(mnemonic, target)[fn]
            else:
                import numpy as np

                cost = np.asarray(vector_fn_costs(mnemonic, target), dtype=np.int64)[fn]
            return target.vec_latency + passes * cost
        case "halt":
            return 0 * f["wait"]
    raise AssertionError(f"no timing for '{mnemonic}'")  # every OpSpec must be covered


DRAM_READERS = ("load", "gload")
DRAM_WRITERS = ("store", "gstore")


def dma_words(mnemonic: str, f: Mapping[str, Any]):
    """Words a DMA instruction moves between DRAM and the chip (ints or int arrays; 0 for
    other instructions): what the run statistics count as DRAM traffic."""
    if mnemonic in ("load", "store"):
        return f["rows"] * f["cols"]
    if mnemonic in ("gload", "gstore"):
        return f["count"] * f["block"]
    return 0


def instruction_cycles(instr: Instr, target: Target) -> int:
    return int(cycles_of(instr.mnemonic, instr.fields, target))


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

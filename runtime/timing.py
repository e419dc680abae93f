"""The timing model, defined once.

The emulator charges every instruction `instruction_cycles(instr, target)` cycles on its
unit; the compiler's tiling and sparsity searches call the same function on the
instructions they would emit, so what the compiler optimises is what the emulator reports.
"""

from __future__ import annotations

from math import ceil

from nmc.isa.table import Instr, VBinFn, VRowFn, VUnFn
from nmc.isa.target import Target

WORD_BYTES = 4


def dma_cycles(rows: int, cols: int, target: Target) -> int:
    """A 2-D transfer: fixed latency, a burst setup per row, then bandwidth-bound."""
    data = ceil(rows * cols * WORD_BYTES / target.dma_bytes_per_cycle)
    return target.dma_latency + rows * target.dma_row_overhead + data


def matmul_cycles(m: int, k: int, n: int, target: Target) -> int:
    """Output-stationary PE array of mx_rows x mx_cols: one k-step per cycle per pass."""
    passes = ceil(m / target.mx_rows) * ceil(n / target.mx_cols)
    return target.mx_latency + passes * k


def vector_cycles(fn_name: str, rows: int, cols: int, target: Target) -> int:
    passes = rows * ceil(cols / target.vec_lanes)
    return target.vec_latency + passes * target.vec_cost[fn_name]


def instruction_cycles(instr: Instr, target: Target) -> int:
    f = instr.fields
    match instr.mnemonic:
        case "load" | "store":
            return dma_cycles(f["rows"], f["cols"], target)
        case "matmul":
            return matmul_cycles(f["m"], f["k"], f["n"], target)
        case "vbin":
            return vector_cycles(VBinFn(f["fn"]).name.lower(), f["rows"], f["cols"], target)
        case "vun":
            return vector_cycles(VUnFn(f["fn"]).name.lower(), f["rows"], f["cols"], target)
        case "vrow":
            return vector_cycles(VRowFn(f["fn"]).name.lower(), f["rows"], f["cols"], target)
        case "halt":
            return 0
    raise AssertionError(f"no timing for '{instr.mnemonic}'")  # every OpSpec must be covered

"""The predicted cost of one nm.linear under an N:M pattern, from the timing model.

`linear_cycles(dims, pattern, target)` is the single function the sparsity search calls.
It is computed from the instructions the linear kernel emits (`estimate_cycles`, the tile
search's objective, which charges every instruction `runtime.timing`'s cycles), so the
search optimises what the emulator reports.

A sparse layer is costed from the N:M kernel of `compiler/kernels/linear.py`
(`emit_linear(..., pattern=...)`, `spmatmul`). Without it (a `linear.py` whose
`emit_linear` takes no `pattern`), it is costed as the dense kernel with each `matmul`
charged as the sparse matrix instruction
(`spmatmul_cycles`: k*N/M k-steps per pass) and each W tile load as the load of its packed
form (k*N/M rows of kept values plus the rows of their in-group index words, as in
`isa.table`'s spmatmul operands); `_sparse_estimate` picks one or the other.
"""

from __future__ import annotations

from dataclasses import dataclass

from nmc.isa.table import Instr, Unit
from nmc.isa.target import Target
from nmc.runtime import timing
from nmc.runtime.timing import instruction_cycles

Pattern = tuple[int, int] | None
"""(N, M), or None for dense."""


@dataclass(frozen=True)
class LinearDims:
    """The shape of one nm.linear: input [M x K] (leading dims flattened), weight [N x K]."""

    M: int
    K: int
    N: int
    has_bias: bool

    @property
    def macs(self) -> int:
        return self.M * self.K * self.N


def is_dense(pattern: Pattern) -> bool:
    return pattern is None or pattern[0] == pattern[1]


def linear_macs(dims: LinearDims, pattern: Pattern) -> float:
    """The MACs ELSA counts: dense MACs x N/M."""
    if is_dense(pattern):
        return float(dims.macs)
    n, m = pattern
    return dims.macs * n / m


def _spmatmul_cycles(m: int, k: int, n: int, pat_n: int, pat_m: int, target: Target) -> int:
    fn = getattr(timing, "spmatmul_cycles", None)
    if fn is not None:
        return int(fn(m, k, n, pat_n, pat_m, target))
    return int(timing.matmul_cycles(m, -(-k * pat_n // pat_m), n, target))


def _estimate(instrs: list[Instr], target: Target, pattern: Pattern) -> int:
    """`kernels.common.estimate_cycles`, with matmuls charged as N:M sparse ones."""
    busy = {unit: 0 for unit in Unit}
    first_load = last_store = 0
    for i, instr in enumerate(instrs):
        cycles = instruction_cycles(instr, target)
        if pattern is not None:
            nxt = instrs[i + 1] if i + 1 < len(instrs) else None
            if instr.mnemonic == "matmul":
                f = instr.fields
                cycles = _spmatmul_cycles(f["m"], f["k"], f["n"], *pattern, target)
            elif (instr.mnemonic == "load" and nxt is not None and nxt.mnemonic == "matmul"
                  and not nxt.fields["transpose_w"]):
                # the W tile [k x n] of the matmul after it (emit_linear loads it last):
                # packed, it is k*N/M rows of kept values plus their index words
                kc = -(-instr.fields["rows"] * pattern[0] // pattern[1])
                per_word = 32 // max(1, (max(pattern[1], 2) - 1).bit_length())
                rows = kc + -(-kc // per_word)
                cycles = int(timing.dma_cycles(rows, instr.fields["cols"], target))
        busy[instr.unit] += cycles
        if instr.unit == Unit.LOAD and not first_load:
            first_load = cycles
        if instr.unit == Unit.STORE:
            last_store = cycles
    return max(busy.values()) + first_load + last_store


def _kernel_instrs(dims: LinearDims, target: Target, pattern: Pattern = None) -> list[Instr]:
    """The linear kernel's instructions for `dims` (dummy DRAM addresses: the cost does not
    depend on them), with the tiling schedule-tiles would choose."""
    from nmc.compiler.kernels.linear import choose_linear_tiling, emit_linear

    extra = {} if pattern is None else {"pattern": pattern}
    tiling = choose_linear_tiling("sparsity-cost", dims.M, dims.K, dims.N, dims.has_bias,
                                  target, **extra)
    return emit_linear(dims.M, dims.K, dims.N, tiling, 0, 0, 0 if dims.has_bias else None,
                       0, target, **extra)


def _sparse_kernel_available() -> bool:
    import inspect

    from nmc.compiler.kernels.linear import emit_linear

    return "pattern" in inspect.signature(emit_linear).parameters


def _sparse_estimate(dims: LinearDims, pattern: tuple[int, int], target: Target) -> int:
    from nmc.compiler.kernels.common import estimate_cycles

    if _sparse_kernel_available():  # the N:M kernel of compiler/kernels/linear.py
        return int(estimate_cycles(_kernel_instrs(dims, target, pattern), target))
    # Fallback while there is no sparse kernel: the dense kernel, re-charged.
    return _estimate(_kernel_instrs(dims, target), target, pattern)


_CACHE: dict[tuple, int] = {}


def _compute(dims: LinearDims, pattern: Pattern, target: Target) -> int:
    from nmc.compiler.kernels.common import estimate_cycles

    if is_dense(pattern):
        return int(estimate_cycles(_kernel_instrs(dims, target), target))
    return _sparse_estimate(dims, pattern, target)


def linear_cycles(dims: LinearDims, pattern: Pattern, target: Target) -> int:
    """Predicted cycles of the linear kernel for `dims` under `pattern` (None: dense)."""
    from nmc.compiler.kernels.common import _target_key

    if not is_dense(pattern):
        pattern = (int(pattern[0]), int(pattern[1]))
    else:
        pattern = None
    key = (dims, pattern, _target_key(target))
    hit = _CACHE.get(key)
    if hit is None:
        hit = _CACHE[key] = _compute(dims, pattern, target)
    return hit

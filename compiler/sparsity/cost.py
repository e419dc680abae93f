"""The predicted cost of one nm.linear under an N:M pattern, from the timing model.

`linear_cycles(problem, pattern, target)` is the single function the ELSA search calls:
the linear kernel's own cost (`kernels.kernel.Kernel.cycles`, as `kernels.registry.
op_cycles` gives it for an op) of the layer with that pattern, under the tiling
schedule-tiles would choose for it, so the search optimises what the tile search ranks
by, and through it what the emulator reports.
"""

from __future__ import annotations

from dataclasses import replace

from nmc.common.nm_format import Pattern, sparse_pattern
from nmc.compiler.kernels.linear import LINEAR, LinearProblem
from nmc.isa.target import Target


def linear_macs(problem: LinearProblem, pattern: Pattern) -> float:
    """The MACs ELSA counts: dense MACs x N/M."""
    pattern = sparse_pattern(pattern)
    if pattern is None:
        return float(problem.macs)
    n, m = pattern
    return problem.macs * n / m


def linear_cycles(problem: LinearProblem, pattern: Pattern, target: Target) -> int:
    """Predicted cycles of the linear kernel for `problem` under `pattern` (None: dense)."""
    return LINEAR.cycles(replace(problem, pattern=sparse_pattern(pattern)).on(target), target,
                         "sparsity-cost")

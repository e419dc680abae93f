"""Shared by the tile-search tests (test_kernels_deit.py, test_nm_backend.py)."""

from __future__ import annotations

from nmc.compiler.kernels.common import _DoesNotFit, estimate_cycles
from nmc.compiler.kernels.kernel import Buffers
from nmc.compiler.kernels.linear import LINEAR, LinearProblem


def emitted_and_costed(problem: LinearProblem, tiling: dict, target) -> tuple:
    """(cycles and length of the emitted kernel, LINEAR.cost of the same tiling without
    emitting it); None on a side that does not fit. The tile search ranks by the second,
    so the two must agree."""
    try:
        instrs = LINEAR.emit(problem, tiling, Buffers.dummy(), target)
        emitted = (estimate_cycles(instrs, target), len(instrs))
    except _DoesNotFit:
        emitted = None
    try:
        costed = tuple(LINEAR.cost(problem, tiling, target))
    except _DoesNotFit:
        costed = None
    return emitted, costed

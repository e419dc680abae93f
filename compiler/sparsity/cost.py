"""The predicted cost of one nm.linear under an N:M pattern, from the timing model.

`linear_cycles(dims, pattern, target)` is the single function the sparsity search calls.
It is the tile search's own objective for the tiling schedule-tiles chooses
(`kernels.linear.linear_cost`: the closed form of `estimate_cycles` over the kernel's
instructions, which charges each `runtime.timing`'s cycles, plus the waits of single
buffers), so the search optimises what the emulator reports.

A sparse layer is costed from the N:M kernel of `compiler/kernels/linear.py`
(`emit_linear(..., pattern=...)`, `spmatmul`), with the tiling schedule-tiles would choose.
"""

from __future__ import annotations

from dataclasses import dataclass

from nmc.isa.target import Target

Pattern = tuple[int, int] | None
"""(N, M), or None for dense."""


@dataclass(frozen=True)
class LinearDims:
    """The shape of one nm.linear: input [M x K] (leading dims flattened), weight [N x K]."""

    M: int
    K: int
    N: int
    has_bias: bool
    activation: str | None = None  # fused into the epilogue (fuse-activations)

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


_CACHE: dict[tuple, int] = {}


def _compute(dims: LinearDims, pattern: Pattern, target: Target) -> int:
    from nmc.compiler.kernels.linear import choose_linear_tiling, linear_cost

    tiling = choose_linear_tiling("sparsity-cost", dims.M, dims.K, dims.N, dims.has_bias,
                                  target, pattern=pattern, activation=dims.activation)
    return int(linear_cost(dims.M, dims.K, dims.N, tiling, dims.has_bias, target,
                           pattern=pattern, activation=dims.activation)[0])


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

"""Which kernel implements each nm op: how to choose its tiling and how to emit it.

`schedule-tiles` calls `choose`, `lower-nm-to-isa` calls `emit`; both see the op only
through this table, so adding an op to the backend means adding one entry here.
"""

from __future__ import annotations

from dataclasses import dataclass
from math import prod
from typing import Callable

from xdsl.ir import Operation, SSAValue

from nmc.compiler.dialects.nm import AddOp, GeluOp, LayerNormOp, LinearOp, tensor_shape
from nmc.compiler.kernels.eltwise import (
    add_compute, choose_rowwise_tiling, emit_rowwise, gelu_compute, layernorm_compute,
)
from nmc.compiler.kernels.linear import choose_linear_tiling, emit_linear
from nmc.isa.table import Instr
from nmc.isa.target import Target

AddrOf = Callable[[SSAValue], int]


@dataclass(frozen=True)
class Kernel:
    choose: Callable[[Operation, Target], dict]
    emit: Callable[[Operation, dict, AddrOf, Target], list[Instr]]
    # operands the kernel wants stored transposed in DRAM (weights: [N, K] -> [K, N])
    transposed: Callable[[Operation], list[SSAValue]] = lambda op: []


def _rows_cols(value: SSAValue) -> tuple[int, int]:
    shape = tensor_shape(value)
    return prod(shape[:-1]), shape[-1]


def _linear_dims(op: LinearOp) -> tuple[int, int, int]:
    M, K = _rows_cols(op.input)
    return M, K, tensor_shape(op.weight)[0]


def _choose_linear(op: LinearOp, target: Target) -> dict:
    return choose_linear_tiling(op.layer_name, *_linear_dims(op), op.bias is not None, target)


def _emit_linear(op: LinearOp, tiling: dict, addr: AddrOf, target: Target) -> list[Instr]:
    bias = addr(op.bias) if op.bias is not None else None
    return emit_linear(*_linear_dims(op), tiling, addr(op.input), addr(op.weight), bias,
                       addr(op.result), target)


def _rowwise(compute_of: Callable[[Operation], Callable], inputs_of, params_of) -> Kernel:
    """A kernel streaming row blocks of the op's inputs through one vector instruction."""

    def choose(op, target):
        M, C = _rows_cols(op.results[0])
        return choose_rowwise_tiling(op.layer_name, M, C, len(inputs_of(op)),
                                     len(params_of(op)), compute_of(op), target)

    def emit(op, tiling, addr, target):
        M, C = _rows_cols(op.results[0])
        return emit_rowwise(M, C, tiling, [addr(v) for v in inputs_of(op)], addr(op.results[0]),
                            compute_of(op), target, [addr(v) for v in params_of(op)])

    return Kernel(choose, emit)


KERNELS: dict[str, Kernel] = {
    LinearOp.name: Kernel(_choose_linear, _emit_linear, lambda op: [op.weight]),
    GeluOp.name: _rowwise(lambda op: gelu_compute(op.approximate.data),
                          lambda op: [op.input], lambda op: []),
    AddOp.name: _rowwise(lambda op: add_compute, lambda op: [op.lhs, op.rhs], lambda op: []),
    LayerNormOp.name: _rowwise(lambda op: layernorm_compute(op.eps_value),
                               lambda op: [op.input], lambda op: [op.gamma, op.beta]),
}

"""Which kernel implements each nm op: how to choose its tiling and how to emit it.

`schedule-tiles` calls `choose`, `lower-nm-to-isa` calls `emit`; both see the op only
through this table, so adding an op to the backend means adding one entry here.
`plan-memory` asks `transposed` (weights the kernel wants stored [K, N]) and
`scratch_words` (DRAM the kernel needs for itself while it runs; its address is the op's
`nm.scratch` attribute, `nm_attrs.scratch_addr`).
"""

from __future__ import annotations

from dataclasses import dataclass
from math import prod
from typing import Callable

from xdsl.ir import Operation, SSAValue

from nmc.compiler.dialects.nm import (
    AddOp, AttentionOp, ConcatOp, GeluOp, LayerNormOp, LinearOp, MeanOp, PatchEmbedOp,
    PermuteRowsOp, SelectOp, tensor_shape,
)
from nmc.compiler.dialects.nm_attrs import scratch_addr
from nmc.compiler.kernels.attention import choose_attention_tiling, emit_attention
from nmc.compiler.kernels.copy import (
    choose_copy_tiling, concat_copies, emit_concat, emit_permute_rows, emit_select,
    permute_rows_copies, select_copies,
)
from nmc.compiler.kernels.eltwise import (
    add_compute, add_row_compute, choose_rowwise_tiling, emit_rowwise, gelu_compute,
    layernorm_compute,
)
from nmc.compiler.kernels.linear import choose_linear_tiling, emit_linear
from nmc.compiler.kernels.mean import choose_mean_tiling, emit_mean
from nmc.compiler.kernels.patch_embed import (
    choose_patch_embed_tiling, emit_patch_embed, im2col_words,
)
from nmc.compiler.dialects.win import GatherOp, MagnitudeOp, RankOp, ScatterOp
from nmc.compiler.kernels.window import (
    WindowTable, choose_gather_tiling, choose_magnitude_tiling, choose_rank_tiling,
    choose_scatter_tiling, emit_gather, emit_magnitude, emit_rank, emit_scatter,
)
from nmc.isa.table import Instr
from nmc.isa.target import Target

AddrOf = Callable[[SSAValue], int]


@dataclass(frozen=True)
class Kernel:
    choose: Callable[[Operation, Target], dict]
    emit: Callable[[Operation, dict, AddrOf, Target], list[Instr]]
    # operands the kernel wants stored transposed in DRAM (weights: [N, K] -> [K, N])
    transposed: Callable[[Operation], list[SSAValue]] = lambda op: []
    # DRAM words of scratch space the kernel needs while it runs (0: none)
    scratch_words: Callable[[Operation], int] = lambda op: 0


def _rows_cols(value: SSAValue) -> tuple[int, int]:
    shape = tensor_shape(value)
    return prod(shape[:-1]), shape[-1]


# ---------------------------------------------------------------------------- linear


def _linear_dims(op: LinearOp) -> tuple[int, int, int]:
    M, K = _rows_cols(op.input)
    return M, K, tensor_shape(op.weight)[0]


def linear_pattern(op: Operation) -> tuple[int, int] | None:
    """(N, M) of an nm.linear's `sparsity` property; None when absent or dense (N = M)."""
    attr = op.properties.get("sparsity")
    if attr is None:
        return None
    values = tuple(int(v) for v in attr.iter_values())
    if len(values) != 2 or values[0] == values[1]:
        return None
    return values[0], values[1]


def _choose_linear(op: LinearOp, target: Target) -> dict:
    return choose_linear_tiling(op.layer_name, *_linear_dims(op), op.bias is not None, target,
                                pattern=linear_pattern(op), activation=op.activation_name)


def _emit_linear(op: LinearOp, tiling: dict, addr: AddrOf, target: Target) -> list[Instr]:
    bias = addr(op.bias) if op.bias is not None else None
    return emit_linear(*_linear_dims(op), tiling, addr(op.input), addr(op.weight), bias,
                       addr(op.result), target, pattern=linear_pattern(op),
                       activation=op.activation_name)


# ---------------------------------------------------------------------------- row-wise


def _rowwise(compute_of: Callable[[Operation], Callable], inputs_of, params_of,
             key_of=lambda op: ()) -> Kernel:
    """A kernel streaming row blocks of the op's inputs through one vector instruction."""

    def choose(op, target):
        M, C = _rows_cols(op.results[0])
        return choose_rowwise_tiling(op.layer_name, M, C, len(inputs_of(op)),
                                     len(params_of(op)), compute_of(op), target,
                                     key=(op.name, *key_of(op)))

    def emit(op, tiling, addr, target):
        M, C = _rows_cols(op.results[0])
        return emit_rowwise(M, C, tiling, [addr(v) for v in inputs_of(op)], addr(op.results[0]),
                            compute_of(op), target, [addr(v) for v in params_of(op)])

    return Kernel(choose, emit)


def _add_operands(op: AddOp) -> tuple[SSAValue, SSAValue]:
    """(full, other): the operand of the result's shape first (addition commutes)."""
    if tensor_shape(op.lhs) == tensor_shape(op.result):
        return op.lhs, op.rhs
    return op.rhs, op.lhs


def _add_periods(op: AddOp) -> tuple[list[SSAValue], list[SSAValue], list[int] | None]:
    """(streamed inputs, parameters, periods) of an add: a broadcast operand of one row is
    a parameter, one of several rows a streamed input with a period."""
    full, other = _add_operands(op)
    M, _ = _rows_cols(op.result)
    rows, _ = _rows_cols(other)
    if rows == M:
        return [full, other], [], None
    if rows == 1:
        return [full], [other], None
    return [full, other], [], [M, rows]


def _choose_add(op: AddOp, target: Target) -> dict:
    M, C = _rows_cols(op.result)
    inputs, params, periods = _add_periods(op)
    compute = add_row_compute if params else add_compute
    return choose_rowwise_tiling(op.layer_name, M, C, len(inputs), len(params), compute,
                                 target, periods, key=(op.name, bool(params)))


def _emit_add(op: AddOp, tiling: dict, addr: AddrOf, target: Target) -> list[Instr]:
    M, C = _rows_cols(op.result)
    inputs, params, periods = _add_periods(op)
    compute = add_row_compute if params else add_compute
    return emit_rowwise(M, C, tiling, [addr(v) for v in inputs], addr(op.result), compute,
                        target, [addr(v) for v in params], periods)


# ---------------------------------------------------------------------------- DeiT ops


def _attention_dims(op: AttentionOp) -> tuple[int, int, int, int]:
    B, N, C3 = tensor_shape(op.qkv)
    return B, N, C3 // 3, op.heads_value


def _choose_attention(op: AttentionOp, target: Target) -> dict:
    return choose_attention_tiling(op.layer_name, *_attention_dims(op), target,
                                   bias=op.bias is not None)


def _emit_attention(op: AttentionOp, tiling: dict, addr: AddrOf, target: Target):
    bias = None if op.bias is None else addr(op.bias)
    groups = 1 if op.bias is None else tensor_shape(op.bias)[0]
    return emit_attention(*_attention_dims(op), op.scale_value, tiling, addr(op.qkv),
                          addr(op.result), target, bias=bias, groups=groups)


def _choose_patch_embed(op: PatchEmbedOp, target: Target) -> dict:
    return choose_patch_embed_tiling(op.layer_name, tensor_shape(op.input),
                                     tensor_shape(op.weight), target)


def _emit_patch_embed(op: PatchEmbedOp, tiling: dict, addr: AddrOf, target: Target):
    return emit_patch_embed(tensor_shape(op.input), tensor_shape(op.weight), tiling,
                            addr(op.input), addr(op.weight), addr(op.bias), addr(op.result),
                            scratch_addr(op), target)


def _patch_embed_scratch(op: PatchEmbedOp) -> int:
    B, Cin, H, W = tensor_shape(op.input)
    return im2col_words(B, Cin, H, W, op.patch_size)


def _concat_shapes(op: ConcatOp) -> list[tuple[int, ...]]:
    return [tensor_shape(v) for v in op.inputs]


def _choose_concat(op: ConcatOp, target: Target) -> dict:
    shapes, axis = _concat_shapes(op), op.axis_value
    return choose_copy_tiling(
        op.layer_name, ("concat", tuple(shapes), axis),
        lambda: concat_copies(shapes, axis, [0] * len(shapes), 0), target)


def _emit_concat(op: ConcatOp, tiling: dict, addr: AddrOf, target: Target):
    return emit_concat(_concat_shapes(op), op.axis_value, tiling, [addr(v) for v in op.inputs],
                       addr(op.result), target)


def _choose_select(op: SelectOp, target: Target) -> dict:
    shape, axis, index = tensor_shape(op.input), op.axis_value, op.index_value
    return choose_copy_tiling(
        op.layer_name, ("select", shape, axis),
        lambda: select_copies(shape, axis, index, 0, 0), target)


def _emit_select(op: SelectOp, tiling: dict, addr: AddrOf, target: Target):
    return emit_select(tensor_shape(op.input), op.axis_value, op.index_value, tiling,
                       addr(op.input), addr(op.result), target)


def _permute_rows_args(op: PermuteRowsOp) -> tuple[list[int], int]:
    return op.row_indices, tensor_shape(op.input)[-1]


def _choose_permute_rows(op: PermuteRowsOp, target: Target) -> dict:
    rows, unit = _permute_rows_args(op)
    return choose_copy_tiling(
        op.layer_name, ("permute_rows", tuple(rows), unit),
        lambda: permute_rows_copies(rows, unit, 0, 0), target)


def _emit_permute_rows(op: PermuteRowsOp, tiling: dict, addr: AddrOf, target: Target):
    rows, unit = _permute_rows_args(op)
    return emit_permute_rows(rows, unit, tiling, addr(op.input), addr(op.result), target)


def _mean_dims(op: MeanOp) -> tuple[int, int, int]:
    shape = tensor_shape(op.input)
    return shape[0], prod(shape[1:-1]), shape[-1]


def _choose_mean(op: MeanOp, target: Target) -> dict:
    return choose_mean_tiling(op.layer_name, *_mean_dims(op), target)


def _emit_mean(op: MeanOp, tiling: dict, addr: AddrOf, target: Target):
    return emit_mean(*_mean_dims(op), tiling, addr(op.input), addr(op.result), target)


KERNELS: dict[str, Kernel] = {
    LinearOp.name: Kernel(_choose_linear, _emit_linear, lambda op: [op.weight]),
    GeluOp.name: _rowwise(lambda op: gelu_compute(op.approximate.data),
                          lambda op: [op.input], lambda op: [],
                          key_of=lambda op: (op.approximate.data,)),
    AddOp.name: Kernel(_choose_add, _emit_add),
    LayerNormOp.name: _rowwise(lambda op: layernorm_compute(op.eps_value),
                               lambda op: [op.input], lambda op: [op.gamma, op.beta]),
    AttentionOp.name: Kernel(_choose_attention, _emit_attention),
    PatchEmbedOp.name: Kernel(_choose_patch_embed, _emit_patch_embed,
                              scratch_words=_patch_embed_scratch),
    ConcatOp.name: Kernel(_choose_concat, _emit_concat),
    SelectOp.name: Kernel(_choose_select, _emit_select),
    PermuteRowsOp.name: Kernel(_choose_permute_rows, _emit_permute_rows),
    MeanOp.name: Kernel(_choose_mean, _emit_mean),
}


# ---------------------------------------------------------------------------- window pruning


def _window_table(op) -> WindowTable:
    """The shapes of a win.gather / win.scatter (kernels.window.WindowTable)."""
    shape, (images, row) = tensor_shape(op.table), tensor_shape(op.indices)
    shared = getattr(op, "is_shared", False)
    return WindowTable(images, op.windows, prod(shape[1:]), row, op.count_value, shared)


def _choose_gather(op: GatherOp, target: Target) -> dict:
    return choose_gather_tiling(op.layer_name, _window_table(op), target)


def _emit_gather(op: GatherOp, tiling: dict, addr: AddrOf, target: Target):
    return emit_gather(_window_table(op), tiling, addr(op.table), addr(op.indices),
                       addr(op.result), target)


def _choose_scatter(op: ScatterOp, target: Target) -> dict:
    return choose_scatter_tiling(op.layer_name, _window_table(op), target)


def _emit_scatter(op: ScatterOp, tiling: dict, addr: AddrOf, target: Target):
    return emit_scatter(_window_table(op), tiling, addr(op.table), addr(op.indices),
                        addr(op.values), addr(op.result), target)


def _choose_magnitude(op: MagnitudeOp, target: Target) -> dict:
    return choose_magnitude_tiling(op.layer_name, *_rows_cols(op.input), target)


def _emit_magnitude(op: MagnitudeOp, tiling: dict, addr: AddrOf, target: Target):
    return emit_magnitude(*_rows_cols(op.input), tiling, addr(op.input), addr(op.result),
                          target)


def _choose_rank(op: RankOp, target: Target) -> dict:
    return choose_rank_tiling(op.layer_name, *tensor_shape(op.input), op.keep_value, target)


def _emit_rank(op: RankOp, tiling: dict, addr: AddrOf, target: Target):
    return emit_rank(*tensor_shape(op.input), op.keep_value, tiling, addr(op.input),
                     addr(op.result), target)


KERNELS.update({
    MagnitudeOp.name: Kernel(_choose_magnitude, _emit_magnitude),
    RankOp.name: Kernel(_choose_rank, _emit_rank),
    GatherOp.name: Kernel(_choose_gather, _emit_gather),
    ScatterOp.name: Kernel(_choose_scatter, _emit_scatter),
})

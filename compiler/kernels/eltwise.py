"""Row-block kernels on the vector unit over [M x C]: nm.gelu, nm.relu, nm.scale (vun),
nm.add, nm.sub, nm.mul (vbin), nm.layer_norm and nm.softmax (vrow).

Each streams blocks of `rows` full rows: load, compute in place, store, with two SPAD
buffers per operand so the next block's load overlaps this block's compute and store.

A broadcast operand of nm.add (position embedding [1, N, D] added to [B, N, D]) is an input
of `period` rows (N) whose row r serves rows r, r + period, ... of the result: the stream
then walks each period separately so a block never wraps around it. An operand of one row
is a parameter instead (loaded once, added with the vector unit's row broadcast).
"""

from __future__ import annotations

from dataclasses import dataclass
from math import prod
from typing import Callable

from xdsl.ir import Operation

from nmc.compiler.dialects.nm import (
    AddOp, GeluOp, LayerNormOp, MulOp, ReluOp, ScaleOp, SoftmaxOp, SubOp, tensor_shape,
)
from nmc.isa.table import Instr, Mem, VBinFn, VRowFn, VUnFn, f32_bits
from nmc.isa.target import Target

from nmc.compiler.kernels.common import (
    Matrix2D, OnChipAllocator, load_block, size_candidates, store_block, tiles,
)
from nmc.compiler.kernels.kernel import Buffers, Kernel


# compute(dst/src buffer, other operand buffers, rows, cols) -> one vector instruction
Compute = Callable[[int, list[int], int, int], Instr]


def emit_rowwise(M: int, C: int, tiling: dict, inputs: list[int], y: int, compute: Compute,
                 target: Target, params: list[int] = (), periods: list[int] | None = None
                 ) -> list[Instr]:
    """Stream `inputs` (DRAM [M x C] each) through `compute`, result to `y`. `params` are
    DRAM vectors of C words loaded once, side by side, before the stream. `periods[i]`
    (default M) is the number of rows of input i, which must divide M: input i is
    broadcast, its row r % periods[i] serving row r."""
    rows = tiling["rows"]
    periods = list(periods) if periods is not None else [M] * len(inputs)
    period = min(periods)  # blocks never cross a multiple of any period
    assert all(M % p == 0 and p % period == 0 for p in periods)
    chip = OnChipAllocator(target)
    param_buf = chip.alloc(Mem.SPAD, len(params) * C) if params else 0
    rings = [chip.ring(Mem.SPAD, rows * C) for _ in inputs]
    srcs = [Matrix2D(addr, p, C) for addr, p in zip(inputs, periods)]
    Y = Matrix2D(y, M, C)

    out = [load_block(Matrix2D(p, 1, C), 0, 0, 1, C, Mem.SPAD, param_buf + i * C)
           for i, p in enumerate(params)]
    for base in range(0, M, period):
        for r0, rr in tiles(period, rows):
            r = base + r0
            bufs = [ring.next() for ring in rings]
            out += [load_block(src, r % p, 0, rr, C, Mem.SPAD, buf)
                    for src, buf, p in zip(srcs, bufs, periods)]
            out.append(compute(bufs[0], bufs[1:] + [param_buf], rr, C))
            out.append(store_block(Y, r, 0, rr, C, Mem.SPAD, bufs[0]))
    return out


def gelu_compute(approximate: str) -> Compute:
    fn = VUnFn.GELU_TANH if approximate == "tanh" else VUnFn.GELU
    return lambda buf, _, rows, cols: Instr.make(
        "vun", fn=fn, dst_mem=Mem.SPAD, dst=buf, src_mem=Mem.SPAD, src=buf, rows=rows, cols=cols)


def unary_compute(fn: VUnFn, imm: float = 0.0) -> Compute:
    """buffer = fn(buffer) (RELU; SCALE by the f32 immediate `imm`), in place."""
    return lambda buf, _, rows, cols: Instr.make(
        "vun", fn=fn, dst_mem=Mem.SPAD, dst=buf, src_mem=Mem.SPAD, src=buf, rows=rows,
        cols=cols, imm=f32_bits(imm))


def softmax_compute() -> Compute:
    """Softmax of each row, in place (the vector unit's row softmax, input scale 1)."""
    return lambda buf, _, rows, cols: Instr.make(
        "vrow", fn=VRowFn.SOFTMAX, dst_mem=Mem.SPAD, dst=buf, src_mem=Mem.SPAD, src=buf,
        rows=rows, cols=cols, imm=f32_bits(1.0))


def binary_compute(fn: VBinFn) -> Compute:
    """buffer (fn)= the second streamed operand, in place."""
    return lambda buf, others, rows, cols: Instr.make(
        "vbin", fn=fn, dst_mem=Mem.SPAD, dst=buf, a_mem=Mem.SPAD, a=buf, b_mem=Mem.SPAD,
        b=others[0], rows=rows, cols=cols)


def binary_row_compute(fn: VBinFn) -> Compute:
    """buffer (fn)= a single row (a parameter loaded once), broadcast over the block's rows."""
    return lambda buf, others, rows, cols: Instr.make(
        "vbin", fn=fn, dst_mem=Mem.SPAD, dst=buf, a_mem=Mem.SPAD, a=buf, b_mem=Mem.SPAD,
        b=others[-1], rows=rows, cols=cols, bcast=1)


# the vector unit's function of each binary nm op
BINARY_FNS: dict[type[Operation], VBinFn] = {
    AddOp: VBinFn.ADD, SubOp: VBinFn.SUB, MulOp: VBinFn.MUL,
}


def layernorm_compute(eps: float) -> Compute:
    return lambda buf, others, rows, cols: Instr.make(
        "vrow", fn=VRowFn.LAYERNORM, dst_mem=Mem.SPAD, dst=buf, src_mem=Mem.SPAD, src=buf,
        param=others[-1], rows=rows, cols=cols, imm=f32_bits(eps))


_COMPUTES: dict[str, Callable[..., Compute]] = {
    "gelu": gelu_compute,
    "unary": unary_compute,
    "softmax": softmax_compute,
    "layernorm": layernorm_compute,
    "binary": binary_compute,
    "binary_row": binary_row_compute,
}


@dataclass(frozen=True)
class RowwiseProblem:
    """A row-wise op over [M x C]: the operands it streams (`inputs`, by their names in
    the op; the first is also the result's buffer), the vectors it loads once
    (`params`), the rows of each input (`periods`, None: M each) and its `compute`: a
    key of `_COMPUTES` and its arguments (e.g. ("gelu", "tanh"))."""

    M: int
    C: int
    compute: tuple
    inputs: tuple[str, ...]
    params: tuple[str, ...] = ()
    periods: tuple[int, ...] | None = None

    @staticmethod
    def of_gelu(op: GeluOp) -> "RowwiseProblem":
        return RowwiseProblem(*_rows_cols(op.result), ("gelu", op.approximate.data), ("input",))

    @staticmethod
    def of_relu(op: ReluOp) -> "RowwiseProblem":
        return RowwiseProblem(*_rows_cols(op.result), ("unary", VUnFn.RELU), ("input",))

    @staticmethod
    def of_scale(op: ScaleOp) -> "RowwiseProblem":
        return RowwiseProblem(*_rows_cols(op.result), ("unary", VUnFn.SCALE, op.scale_value),
                              ("input",))

    @staticmethod
    def of_softmax(op: SoftmaxOp) -> "RowwiseProblem":
        return RowwiseProblem(*_rows_cols(op.result), ("softmax",), ("input",))

    @staticmethod
    def of_layernorm(op: LayerNormOp) -> "RowwiseProblem":
        return RowwiseProblem(*_rows_cols(op.result), ("layernorm", op.eps_value), ("input",),
                              ("gamma", "beta"))

    @staticmethod
    def of_binary(op: AddOp | SubOp | MulOp) -> "RowwiseProblem":
        """lhs (the result's shape: the raising puts a broadcast operand on the right) is
        streamed first; a broadcast rhs of one row is a parameter, one of several rows a
        streamed input with a period."""
        fn = BINARY_FNS[type(op)]
        M, C = _rows_cols(op.result)
        rows, _ = _rows_cols(op.rhs)
        if rows == M:
            return RowwiseProblem(M, C, ("binary", fn), ("lhs", "rhs"))
        if rows == 1:
            return RowwiseProblem(M, C, ("binary_row", fn), ("lhs",), ("rhs",))
        return RowwiseProblem(M, C, ("binary", fn), ("lhs", "rhs"), periods=(M, rows))


def _rows_cols(value) -> tuple[int, int]:
    shape = tensor_shape(value)
    return prod(shape[:-1]), shape[-1]


class RowwiseKernel(Kernel[RowwiseProblem]):
    """Row blocks streamed through one vector instruction (module docstring), ranked by
    the emulator's timing rule."""

    simulate = True

    def __init__(self, problem_of: Callable[[Operation], RowwiseProblem]):
        self._problem_of = problem_of

    def problem(self, op: Operation) -> RowwiseProblem:
        return self._problem_of(op)

    def candidates(self, problem: RowwiseProblem, target: Target) -> list[dict]:
        period = min(problem.periods) if problem.periods else problem.M
        return [{"rows": r} for r in size_candidates(period, 1, limit=period, balanced=64)]

    def need(self, problem: RowwiseProblem, target: Target) -> str:
        C = problem.C
        return (f"{2 * len(problem.inputs) * C + len(problem.params) * C} SPAD words for "
                f"one row of {C}")

    def emit(self, problem: RowwiseProblem, tiling: dict, buffers: Buffers,
             target: Target) -> list[Instr]:
        kind, *args = problem.compute
        return emit_rowwise(problem.M, problem.C, tiling,
                            [buffers[name] for name in problem.inputs], buffers["result"],
                            _COMPUTES[kind](*args), target,
                            [buffers[name] for name in problem.params], problem.periods)

"""Many independent inputs in one walk of the instruction stream (`LoadedProgram.run_batch`).

A run of a compiled program is a fixed sequence of instructions (the fast path's execution
order; the ISA has no branches and timing does not depend on data), so B inputs can go
through it together: every memory becomes B rows (`BatchMachine`), and every instruction's
operation is applied to all rows at once, on [B x rows x cols] views of them. Data-dependent
indices (gathered loads and stores, top-k) are per row. The result of each row is, bit for
bit, the result of running that input alone; how each opcode keeps that promise:

- Exactly rounded elementwise operations (DMA copies, vbin, relu, scale, quantize,
  rescale: IEEE single operations or integer arithmetic) are the same function of each
  element whatever the array's shape.
- Integer matmuls (imatmul, ispmatmul) are exact in any order: one `torch._int_mm` over
  all rows when the weight tile is the same in every row (see "uniform" below), else one
  per row. (int32 accumulation is exact below K = 2^31 / 2^14 = 131072 products.)
- Everything else whose rounding could depend on how the work is split (fp32 matmul as a
  batched sgemm, GELU, exp, layernorm, softmax: vectorised kernels, blocked GEMMs) is
  *verified*: the first time a (function, shape) pair occurs, the batched form and the
  one-row form run on the same random operands; only if every row is bit-identical is the
  batched form used, otherwise the instruction runs once per row through the one-input
  semantics. Rounding orders depend on shapes, not on values, so one probe decides.
- Opcodes without a batched form (gload, gstore, vred, topk) run per row through
  `nmc.runtime.semantics` itself, on the row's memories.

Uniform tiles. A load whose DRAM source the run never writes and no input occupies (the
constants) puts the same data in every row; the tracker follows, in execution order,
which on-chip words hold such row-independent data. A sparse tile whose packed values and
indices are uniform is unpacked once (row 0) instead of once per row, and an int8 tile
multiplies all rows in one GEMM.
"""

from __future__ import annotations

import time
from functools import partial
from typing import Any, Callable

import numpy as np

from nmc.common import nm_format
from nmc.isa.table import Instr, Mem, VRowFn, VUnFn
from nmc.runtime.machine import filled_memory
from nmc.runtime.semantics import (
    VBIN_FUNCTIONS, DataError, Thunk, f32_from_bits, int8_thunk, layernorm_into, matmul_thunk,
    prepare, quantize_into, rescale_into, softmax_into, torch_gelu_into,
)

_ON_CHIP = (int(Mem.SPAD), int(Mem.ACC))


class BatchMachine:
    """The memories of B machines, one row each: [B x words] per memory (`mems[Mem.X]`)."""

    def __init__(self, target, dram_words: int, batch: int, fill: float = 0.0):
        self.batch, self.fill = batch, fill
        self.mems = tuple(filled_memory((batch, words), fill)
                          for words in (dram_words, target.spad_words, target.acc_words))
        self.rows = [tuple(m[b] for m in self.mems) for b in range(batch)]

    def reset(self, dram_ranges: list[tuple[int, int]]) -> None:
        """As `Machine.reset`, in every row."""
        dram, spad, acc = self.mems
        spad.fill(self.fill)
        acc.fill(self.fill)
        for start, end in dram_ranges:
            dram[:, start:end] = self.fill


def _view(mem: np.ndarray, addr: int, rows: int, cols: int, stride: int | None = None):
    """[B x rows x cols] view of every row's block at `addr` (rows `stride` words apart;
    contiguous by default)."""
    item = mem.itemsize
    stride = cols if stride is None or rows <= 1 else stride
    return np.ndarray((mem.shape[0], rows, cols), mem.dtype, mem,
                      addr * item, (mem.strides[0], stride * item, item))


def _block(mems, mem: int, addr: int, rows: int, cols: int) -> np.ndarray:
    return _view(mems[mem], addr, rows, cols)


class UniformLoad:
    """A load of constants: it fills row 0 only, unless a reader needs every row."""

    __slots__ = ("index", "all_rows")

    def __init__(self, index: int):
        self.index = index
        self.all_rows = False


class Uniformity:
    """Which on-chip words hold the same data in every row, followed in execution order
    (see the module docstring): `source[mem][w]` is the index of the `UniformLoad` that
    last wrote word w, or -1. `varying_dram[w]`: DRAM word w may differ between rows (an
    input, or a word the run stores to)."""

    def __init__(self, varying_dram: np.ndarray, sizes: tuple[int, ...]):
        self.varying_dram = varying_dram
        self.source = {m: np.full(sizes[m], -1, np.int64) for m in _ON_CHIP}
        self.loads: list[UniformLoad] = []

    def holds(self, mem: int, start: int, end: int) -> bool:
        return (mem in self.source and end > start
                and bool((self.source[mem][start:end] >= 0).all()))

    def read_rows(self, mem: int, start: int, end: int) -> None:
        """A reader of every row of these words: the loads that wrote them fill every row."""
        if mem in self.source:
            for i in np.unique(self.source[mem][start:end]):
                if i >= 0:
                    self.loads[i].all_rows = True

    def uniform_load(self, instr: Instr) -> UniformLoad | None:
        """The record of `instr` if it is a load of constants."""
        if instr.mnemonic != "load":
            return None
        src = instr.footprint()[0][0]
        if self.varying_dram[src.start:src.end].any():
            return None
        self.loads.append(UniformLoad(len(self.loads)))
        return self.loads[-1]

    def wrote(self, instr: Instr, load: UniformLoad | None) -> None:
        """Update for `instr` having run (`load`: its record if it is a load of constants)."""
        index = load.index if load is not None else -1
        for region in instr.footprint()[1]:
            if region.mem in self.source and region.words:
                self.source[region.mem][region.start:region.end] = index


# ------------------------------------------------------------------------------------------
# Verification of the batched forms whose rounding could depend on the shape


class Verifier:
    """Decides, once per (function, shape), whether to use a batched form: it must be
    bit-identical to the one-row form on every row (module docstring) and, where asked
    (`timed`), not slower than the rows one by one (a batched sgemm can lose to B calls
    of one tile whose weights stay in cache): the better of three timings each."""

    def __init__(self, batch: int):
        self.batch = batch
        self.known: dict[tuple, bool] = {}
        self.rng = np.random.default_rng(0)

    def ok(self, key: tuple, shapes: list[tuple[int, ...]],
           batched: Callable[..., None], single: Callable[..., None],
           shared: tuple[bool, ...] = (), timed: bool = False) -> bool:
        """`shapes`: one-row shapes of the inputs then the output; `batched(*args, out)`
        on [B x ...] arrays (an input marked in `shared` is one array for every row),
        `single(*args, out)` on one row's."""
        key = (*key, shared)
        found = self.known.get(key)
        if found is None:
            shared = shared + (False,) * (len(shapes) - 1 - len(shared))
            args = [self._rows(s)[0] if one else self._rows(s)
                    for s, one in zip(shapes[:-1], shared)]
            out_b = self._rows(shapes[-1])
            out_s = out_b.copy()
            batched(*args, out_b)

            def one_by_one():
                for b in range(self.batch):
                    single(*(a if one else a[b] for a, one in zip(args, shared)), out_s[b])

            one_by_one()
            found = bool(np.array_equal(out_b, out_s, equal_nan=True))
            if found and timed:
                found = best_time(lambda: batched(*args, out_b)) <= best_time(one_by_one)
            self.known[key] = found
        return found

    def _rows(self, shape: tuple[int, ...]) -> np.ndarray:
        """Random [B x shape] operands laid out as the machine's are: each row a block of
        a longer memory row (not one contiguous array)."""
        size = int(np.prod(shape))
        memory = self.rng.standard_normal((self.batch, size + 16)).astype(np.float32)
        return _view(memory, 8, shape[0], int(np.prod(shape[1:])))


def best_time(call: Callable[[], None], repeats: int = 3) -> float:
    """The best of `repeats` timings of `call()`, in seconds."""
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        best = min(best, time.perf_counter() - start)
    return best


def _torch():
    import torch  # lazy, as in nmc.runtime.semantics

    return torch


def _mm_single(a, w, out, accumulate: bool, transpose: bool) -> None:
    """One row: the one-input semantics' matmul (w [n x k] when transposed)."""
    matmul_thunk(a, w.T if transpose else w, out, accumulate)()


def _mm_batched_thunk(a, w, out, accumulate: bool, transpose: bool) -> Thunk:
    """out [B x m x n] (+)= a [B x m x k] @ w ([B x k x n], or one [k x n] for all rows;
    [.. n x k] when transposed), as one batched sgemm (torch.bmm / baddbmm)."""
    torch = _torch()
    ta, to, tw = torch.from_numpy(a), torch.from_numpy(out), torch.from_numpy(w)
    if w.ndim == 2:
        tw = tw.expand(a.shape[0], *w.shape)
    tw = tw.transpose(1, 2) if transpose else tw
    if accumulate:
        return partial(torch.baddbmm, to, ta, tw, out=to)
    return partial(torch.bmm, ta, tw, out=to)


def _mm_batched(a, w, out, accumulate: bool, transpose: bool) -> None:
    _mm_batched_thunk(a, w, out, accumulate, transpose)()


def _mm_rows_thunk(a, w, out, accumulate: bool, transpose: bool) -> Thunk:
    """The one-input matmul on each row in turn (w: one [k x n] for all rows or per row)."""
    thunks = [matmul_thunk(a[b], (w if w.ndim == 2 else w[b]).T if transpose
                           else (w if w.ndim == 2 else w[b]), out[b], accumulate)
              for b in range(len(a))]

    def run():
        for thunk in thunks:
            thunk()

    return run


def _exp(x, out):
    np.exp(x, out=out)


# ------------------------------------------------------------------------------------------
# Preparing one instruction for all rows


class BatchPreparer:
    """Prepared calls of no arguments performing instructions on every row of a
    `BatchMachine` (None: nothing to do). `prepare` must be called in execution order: it
    follows which words are uniform; the calls must run after all are prepared (a load of
    constants learns only then whether a later reader needs every row)."""

    def __init__(self, machine: BatchMachine, varying_dram: np.ndarray):
        self.machine = machine
        self.mems = machine.mems
        self.uniform = Uniformity(varying_dram, tuple(m.shape[1] for m in machine.mems))
        self.verify = Verifier(machine.batch)

    def prepare(self, instr: Instr) -> Thunk | None:
        load = self.uniform.uniform_load(instr)
        if load is not None:
            thunk = _uniform_load(self, instr.fields, load)
        else:
            make = _BATCHED.get(instr.mnemonic)
            thunk = make(self, instr.fields) if make is not None else NotImplemented
            if thunk is NotImplemented:
                thunk = self.per_row(instr)
        self.uniform.wrote(instr, load)
        return thunk

    def runs_elsewhere(self, instr: Instr) -> None:
        """`instr` is performed by another call (a fused GEMM, `nmc.runtime.fusion`): only
        follow what it writes (no longer uniform)."""
        self.uniform.wrote(instr, None)

    def per_row(self, instr: Instr) -> Thunk | None:
        """The one-input semantics on each row's memories in turn."""
        for region in instr.footprint()[0]:
            self.uniform.read_rows(region.mem, region.start, region.end)
        thunks = [prepare(instr.mnemonic, row, instr.fields) for row in self.machine.rows]
        if all(t is None for t in thunks):
            return None

        def run():
            for b, thunk in enumerate(thunks):
                if thunk is not None:
                    try:
                        thunk()
                    except DataError as e:
                        raise DataError(f"input #{b} of the batch: {e}") from None

        return run

    # operands
    def same(self, mem: int, addr: int, words: int) -> bool:
        """Whether these words are uniform (then read them from row 0: `row0`)."""
        return self.uniform.holds(mem, addr, addr + words)

    def row0(self, mem: int, addr: int, rows: int, cols: int) -> np.ndarray:
        return self.mems[mem][0][addr:addr + rows * cols].reshape(rows, cols)

    def rows(self, mem: int, addr: int, rows: int, cols: int) -> np.ndarray:
        """[B x rows x cols]: the block in every row, read as such."""
        self.uniform.read_rows(mem, addr, addr + rows * cols)
        return _block(self.mems, mem, addr, rows, cols)

    def operand(self, mem: int, addr: int, rows: int, cols: int) -> np.ndarray:
        """A read operand that broadcasts against [B x rows x cols]: row 0's block
        ([1 x rows x cols]) where it is uniform, else every row's."""
        if self.same(mem, addr, rows * cols):
            return self.row0(mem, addr, rows, cols)[None]
        return self.rows(mem, addr, rows, cols)

    def result(self, mem: int, addr: int, rows: int, cols: int) -> np.ndarray:
        """[B x rows x cols]: a block the instruction writes in every row."""
        return _block(self.mems, mem, addr, rows, cols)

    def matmul_out(self, f, m: int, n: int) -> np.ndarray:
        """[B x m x n]: a matmul's ACC tile, also read when it accumulates."""
        if f["accumulate"]:
            return self.rows(Mem.ACC, f["out"], m, n)
        return self.result(Mem.ACC, f["out"], m, n)


def _uniform_load(p: BatchPreparer, f, load: UniformLoad):
    rows, cols = f["rows"], f["cols"]
    if not (rows and cols):
        return None
    src = _view(p.mems[Mem.DRAM], f["dram"], rows, cols, f["stride"])
    dst = p.result(f["mem"], f["local"], rows, cols)

    dst0, src0 = dst[0], src[0]

    def run():
        if load.all_rows:
            np.copyto(dst, src)
        else:
            np.copyto(dst0, src0)

    return run


def _dma(p: BatchPreparer, f, store: bool):
    rows, cols = f["rows"], f["cols"]
    if not (rows and cols):
        return None
    dram = _view(p.mems[Mem.DRAM], f["dram"], rows, cols, f["stride"])
    if store:
        return partial(np.copyto, dram, p.rows(f["mem"], f["local"], rows, cols))
    return partial(np.copyto, p.result(f["mem"], f["local"], rows, cols), dram)


def _matmul(p: BatchPreparer, f):
    m, k, n = f["m"], f["k"], f["n"]
    if not (m and n):
        return None
    acc, tr = bool(f["accumulate"]), bool(f["transpose_w"])
    w_shape = (n, k) if tr else (k, n)
    a = p.rows(Mem.SPAD, f["a"], m, k)
    shared_w = p.same(Mem.SPAD, f["w"], k * n)
    w = p.row0(Mem.SPAD, f["w"], *w_shape) if shared_w else p.rows(Mem.SPAD, f["w"], *w_shape)
    out = p.matmul_out(f, m, n)
    if p.verify.ok(("matmul", m, k, n, acc, tr), [(m, k), w_shape, (m, n)],
                   partial(_mm_batched, accumulate=acc, transpose=tr),
                   partial(_mm_single, accumulate=acc, transpose=tr),
                   (False, shared_w), timed=True):
        return _mm_batched_thunk(a, w, out, acc, tr)
    return _mm_rows_thunk(a, w, out, acc, tr)


def _int_gemm(a: np.ndarray, w: np.ndarray, out: np.ndarray, accumulate: bool) -> None:
    """out (int32 words) [B x m x n] (+)= a [B x m x k] (int8) @ w (int8, one [k x n] for
    every row or [B x k x n]), exactly."""
    torch = _torch()
    acc = torch.from_numpy(out.view(np.int32))
    ta = torch.from_numpy(np.ascontiguousarray(a))
    tw = torch.from_numpy(np.ascontiguousarray(w))
    batch, m, k = ta.shape
    if k == 0:
        product = torch.zeros(acc.shape, dtype=torch.int32)
    elif w.ndim == 2:
        product = torch._int_mm(ta.reshape(batch * m, k), tw).reshape(batch, m, -1)
    else:
        product = torch.stack([torch._int_mm(ta[b], tw[b]) for b in range(batch)])
    if accumulate:
        acc.add_(product)
    else:
        acc.copy_(product)


def _imatmul(p: BatchPreparer, f):
    m, k, n = f["m"], f["k"], f["n"]
    if not (m and n):
        return None
    a = p.rows(Mem.SPAD, f["a"], m, k // 4).view(np.int8)
    if p.same(Mem.SPAD, f["w"], k * n // 4):
        w = p.row0(Mem.SPAD, f["w"], k, n // 4).view(np.int8)
    else:
        w = p.rows(Mem.SPAD, f["w"], k, n // 4).view(np.int8)
    acc = bool(f["accumulate"])
    out = p.matmul_out(f, m, n)
    return partial(_int_gemm, a, w, out, acc)


def _spmatmul(p: BatchPreparer, f, int8: bool = False):
    """Sparse tiles: unpacked once when the packed tile is uniform, else per row."""
    m, k, n, pn, pm = f["m"], f["k"], f["n"], f["pat_n"], f["pat_m"]
    if not (m and n):
        return None
    kc = nm_format.compressed_rows(k, pn, pm)
    index_rows = nm_format.index_rows(kc, pm)
    value_cols = n // 4 if int8 else n
    if not (p.same(Mem.SPAD, f["w"], kc * value_cols)
            and p.same(Mem.SPAD, f["idx"], index_rows * n)):
        return NotImplemented
    words = p.row0(Mem.SPAD, f["idx"], index_rows, n).view(np.uint32)
    values = p.row0(Mem.SPAD, f["w"], kc, value_cols)
    acc = bool(f["accumulate"])
    out = p.matmul_out(f, m, n)
    if int8:
        a = p.rows(Mem.SPAD, f["a"], m, k // 4).view(np.int8)

        def run_int8():
            dense = nm_format.unpack_tile(values.view(np.int8).astype(np.float32), words,
                                          k, pn, pm)
            if np.abs(dense).max(initial=0) <= 127:
                _int_gemm(a, dense.astype(np.int8), out, acc)
            else:  # a malformed index stream summed two values: the one-row semantics
                for b in range(len(a)):
                    int8_thunk(a[b], dense, out[b], acc)()

        return run_int8
    a = p.rows(Mem.SPAD, f["a"], m, k)
    batched = partial(_mm_batched, accumulate=acc, transpose=False)
    single = partial(_mm_single, accumulate=acc, transpose=False)
    fits = p.verify.ok(("matmul", m, k, n, acc, False), [(m, k), (k, n), (m, n)],
                       batched, single, (False, True), timed=True)

    def run():
        dense = nm_format.unpack_tile(values, words, k, pn, pm)
        if fits:
            batched(a, dense, out)
        else:
            for b in range(len(a)):
                single(a[b], dense, out[b])

    return run


def _vbin(p: BatchPreparer, f):
    rows, cols = f["rows"], f["cols"]
    if not (rows and cols):
        return None
    a = p.operand(f["a_mem"], f["a"], rows, cols)
    b = p.operand(f["b_mem"], f["b"], 1 if f["bcast"] else rows, cols)
    dst = p.result(f["dst_mem"], f["dst"], rows, cols)
    return partial(VBIN_FUNCTIONS[f["fn"]], a, b, out=dst)


def _vun(p: BatchPreparer, f):
    rows, cols, fn = f["rows"], f["cols"], f["fn"]
    if not (rows and cols):
        return None
    src = p.rows(f["src_mem"], f["src"], rows, cols)
    dst = p.result(f["dst_mem"], f["dst"], rows, cols // 4 if fn == VUnFn.QUANT else cols)
    imm = f32_from_bits(f["imm"])
    if fn == VUnFn.QUANT:
        return partial(quantize_into, src, imm, dst)
    if fn == VUnFn.COPY:
        return partial(np.copyto, dst, src)
    if fn == VUnFn.RELU:
        return partial(np.maximum, src, np.float32(0.0), out=dst)
    if fn == VUnFn.SCALE:
        return partial(np.multiply, src, imm, out=dst)
    if fn == VUnFn.EXP:
        function = _exp
    elif fn in (VUnFn.GELU, VUnFn.GELU_TANH):
        approximate = "tanh" if fn == VUnFn.GELU_TANH else "none"

        def function(x, out):
            # torch writes an out= array that is not contiguous as a new tensor, not in place
            result = np.empty(x.shape, np.float32)
            torch_gelu_into(x, approximate, result)
            np.copyto(out, result)
    else:
        return NotImplemented
    if not p.verify.ok(("vun", fn, rows, cols), [(rows, cols), (rows, cols)],
                       function, function):
        return NotImplemented
    return partial(function, src, dst)


def _vrow(p: BatchPreparer, f):
    rows, cols, fn = f["rows"], f["cols"], f["fn"]
    if not (rows and cols):
        return None
    params_uniform = p.same(Mem.SPAD, f["param"], 2 * cols)
    if fn in (VRowFn.RESCALE, VRowFn.LAYERNORM) and not params_uniform:
        return NotImplemented  # per-row parameters: not what the compiler makes
    src = p.rows(f["src_mem"], f["src"], rows, cols)
    dst = p.result(f["dst_mem"], f["dst"], rows, cols)
    imm = f32_from_bits(f["imm"])
    if fn == VRowFn.RESCALE:  # exact: an int32 add, a conversion and a product, rounded once
        return partial(rescale_into, src, p.row0(Mem.SPAD, f["param"], 1, 2 * cols)[0], dst)
    if fn == VRowFn.SOFTMAX:
        def function(x, out):
            softmax_into(x, imm, out)

        key = ("softmax", rows, cols)
    elif fn == VRowFn.LAYERNORM:
        gamma, beta = p.row0(Mem.SPAD, f["param"], 2, cols)
        eps = float(imm)

        def function(x, out):
            layernorm_into(x, gamma, beta, eps, out)

        key = ("layernorm", rows, cols)
    else:
        return NotImplemented
    if not p.verify.ok(key, [(rows, cols), (rows, cols)], function, function):
        return NotImplemented
    return partial(function, src, dst)


_BATCHED: dict[str, Callable[[BatchPreparer, Any], Thunk | None]] = {
    "load": partial(_dma, store=False),
    "store": partial(_dma, store=True),
    "matmul": _matmul,
    "imatmul": _imatmul,
    "spmatmul": _spmatmul,
    "ispmatmul": partial(_spmatmul, int8=True),
    "vbin": _vbin,
    "vun": _vun,
    "vrow": _vrow,
}

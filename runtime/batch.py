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

from functools import partial
from typing import Any, Callable

import numpy as np

from nmc.common import nm_format
from nmc.isa.table import Instr, Mem, VRowFn, VUnFn
from nmc.runtime.semantics import (
    VBIN_FUNCTIONS, DataError, Thunk, f32_from_bits, int8_thunk, layernorm_into, prepare,
    quantize_into, rescale_into, softmax_into, torch_gelu_into,
)

_ON_CHIP = (int(Mem.SPAD), int(Mem.ACC))


class BatchMachine:
    """The memories of B machines, one row each: [B x words] per memory (`mems[Mem.X]`)."""

    def __init__(self, target, dram_words: int, batch: int, fill: float = 0.0):
        def filled(words: int) -> np.ndarray:
            if fill == 0.0 and not np.signbit(fill):
                return np.zeros((batch, words), np.float32)  # calloc: untouched pages free
            return np.full((batch, words), fill, np.float32)

        self.batch, self.fill = batch, fill
        self.mems = (filled(dram_words), filled(target.spad_words), filled(target.acc_words))
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


class Uniformity:
    """Which on-chip words hold the same data in every row, followed in execution order
    (see the module docstring). `varying_dram[w]`: DRAM word w may differ between rows
    (an input, or a word the run stores to)."""

    def __init__(self, varying_dram: np.ndarray, sizes: tuple[int, ...]):
        self.varying_dram = varying_dram
        self.same = {m: np.zeros(sizes[m], bool) for m in _ON_CHIP}

    def holds(self, mem: int, start: int, end: int) -> bool:
        return mem in self.same and bool(self.same[mem][start:end].all())

    def after(self, instr: Instr) -> None:
        """Update for `instr` having run."""
        reads, writes = instr.footprint()
        uniform = (instr.mnemonic == "load"
                   and not self.varying_dram[reads[0].start:reads[0].end].any())
        for region in writes:
            if region.mem in self.same and region.words:
                self.same[region.mem][region.start:region.end] = uniform


# ------------------------------------------------------------------------------------------
# Verification of the batched forms whose rounding could depend on the shape


class Verifier:
    """Decides, once per (function, shape), whether a batched form is bit-identical to the
    one-row form on every row (module docstring)."""

    def __init__(self, batch: int):
        self.batch = batch
        self.known: dict[tuple, bool] = {}
        self.rng = np.random.default_rng(0)

    def ok(self, key: tuple, shapes: list[tuple[int, ...]],
           batched: Callable[..., None], single: Callable[..., None]) -> bool:
        """`shapes`: one-row shapes of the inputs then the output; `batched(*args, out)`
        on [B x ...] arrays, `single(*args, out)` on one row's."""
        found = self.known.get(key)
        if found is None:
            args = [self._rows(s) for s in shapes[:-1]]
            out_b = self._rows(shapes[-1])
            out_s = out_b.copy()
            batched(*args, out_b)
            for b in range(self.batch):
                single(*(a[b] for a in args), out_s[b])
            found = self.known[key] = bool(np.array_equal(out_b, out_s, equal_nan=True))
        return found

    def _rows(self, shape: tuple[int, ...]) -> np.ndarray:
        """Random [B x shape] operands laid out as the machine's are: each row a block of
        a longer memory row (not one contiguous array)."""
        size = int(np.prod(shape))
        memory = self.rng.standard_normal((self.batch, size + 16)).astype(np.float32)
        return _view(memory, 8, shape[0], int(np.prod(shape[1:])))


def _torch():
    import torch  # lazy, as in nmc.runtime.semantics

    return torch


def _mm_single(a, w, out, accumulate: bool, transpose: bool):
    torch = _torch()
    tw = torch.from_numpy(w).T if transpose else torch.from_numpy(w)
    to = torch.from_numpy(out)
    if accumulate:
        torch.addmm(to, torch.from_numpy(a), tw, out=to)
    else:
        torch.mm(torch.from_numpy(a), tw, out=to)


def _mm_batched(a, w, out, accumulate: bool, transpose: bool):
    torch = _torch()
    tw = torch.from_numpy(w).transpose(1, 2) if transpose else torch.from_numpy(w)
    to = torch.from_numpy(out)
    if accumulate:
        torch.baddbmm(to, torch.from_numpy(a), tw, out=to)
    else:
        torch.bmm(torch.from_numpy(a), tw, out=to)


def _exp(x, out):
    np.exp(x, out=out)


# ------------------------------------------------------------------------------------------
# Preparing one instruction for all rows


class BatchPreparer:
    """Prepared calls of no arguments performing instructions on every row of a
    `BatchMachine` (None: nothing to do), in execution order (`prepare` must be called in
    that order: it follows uniformity)."""

    def __init__(self, machine: BatchMachine, varying_dram: np.ndarray):
        self.machine = machine
        self.mems = machine.mems
        self.uniform = Uniformity(varying_dram, tuple(m.shape[1] for m in machine.mems))
        self.verify = Verifier(machine.batch)

    def prepare(self, instr: Instr) -> Thunk | None:
        make = _BATCHED.get(instr.mnemonic)
        thunk = make(self, instr.fields) if make is not None else None
        if thunk is NotImplemented or make is None:
            thunk = self.per_row(instr)
        self.uniform.after(instr)
        return thunk

    def per_row(self, instr: Instr) -> Thunk | None:
        """The one-input semantics on each row's memories in turn."""
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

    def same(self, mem: int, addr: int, words: int) -> bool:
        return self.uniform.holds(mem, addr, addr + words)


def _dma(p: BatchPreparer, f, store: bool):
    rows, cols = f["rows"], f["cols"]
    if not (rows and cols):
        return None
    dram = _view(p.mems[Mem.DRAM], f["dram"], rows, cols, f["stride"])
    local = _block(p.mems, f["mem"], f["local"], rows, cols)
    return partial(np.copyto, dram, local) if store else partial(np.copyto, local, dram)


def _matmul(p: BatchPreparer, f):
    m, k, n = f["m"], f["k"], f["n"]
    if not (m and n):
        return None
    acc, tr = bool(f["accumulate"]), bool(f["transpose_w"])
    shapes = [(m, k), (n, k) if tr else (k, n), (m, n)]
    if not p.verify.ok(("matmul", m, k, n, acc, tr), shapes,
                       partial(_mm_batched, accumulate=acc, transpose=tr),
                       partial(_mm_single, accumulate=acc, transpose=tr)):
        return NotImplemented
    a = _block(p.mems, Mem.SPAD, f["a"], m, k)
    w = _block(p.mems, Mem.SPAD, f["w"], *((n, k) if tr else (k, n)))
    out = _block(p.mems, Mem.ACC, f["out"], m, n)
    return partial(_mm_batched, a, w, out, accumulate=acc, transpose=tr)


def _int_gemm(a: np.ndarray, w: np.ndarray, out: np.ndarray, accumulate: bool,
              shared_w: bool) -> None:
    """out (int32 words) [B x m x n] (+)= a [B x m x k] (int8) @ w (int8, [k x n] shared
    by every row or [B x k x n]), exactly."""
    torch = _torch()
    acc = torch.from_numpy(out.view(np.int32))
    ta = torch.from_numpy(np.ascontiguousarray(a))
    tw = torch.from_numpy(np.ascontiguousarray(w))
    if shared_w:
        batch, m, k = ta.shape
        product = torch._int_mm(ta.reshape(batch * m, k), tw).reshape(batch, m, -1)
    else:
        product = torch.stack([torch._int_mm(ta[b], tw[b]) for b in range(ta.shape[0])])
    if accumulate:
        acc.add_(product)
    else:
        acc.copy_(product)


def _imatmul(p: BatchPreparer, f):
    m, k, n = f["m"], f["k"], f["n"]
    if not (m and n):
        return None
    a = _block(p.mems, Mem.SPAD, f["a"], m, k // 4).view(np.int8)
    w = _block(p.mems, Mem.SPAD, f["w"], k, n // 4).view(np.int8)
    out = _block(p.mems, Mem.ACC, f["out"], m, n)
    shared = p.same(Mem.SPAD, f["w"], k * n // 4)
    return partial(_int_gemm, a, w[0] if shared else w, out, bool(f["accumulate"]), shared)


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
    spad0 = p.mems[Mem.SPAD][0]
    words = spad0[f["idx"]:f["idx"] + index_rows * n].reshape(index_rows, n).view(np.uint32)
    values = spad0[f["w"]:f["w"] + kc * value_cols].reshape(kc, value_cols)
    out = _block(p.mems, Mem.ACC, f["out"], m, n)
    acc = bool(f["accumulate"])
    if int8:
        a = _block(p.mems, Mem.SPAD, f["a"], m, k // 4).view(np.int8)

        def run_int8():
            dense = nm_format.unpack_tile(values.view(np.int8).astype(np.float32), words,
                                          k, pn, pm)
            if np.abs(dense).max(initial=0) <= 127:
                _int_gemm(a, dense.astype(np.int8), out, acc, True)
            else:  # a malformed index stream summed two values: the one-row semantics
                for b in range(len(a)):
                    int8_thunk(a[b], dense, out[b], acc)()

        return run_int8
    if not p.verify.ok(("matmul", m, k, n, acc, False), [(m, k), (k, n), (m, n)],
                       partial(_mm_batched, accumulate=acc, transpose=False),
                       partial(_mm_single, accumulate=acc, transpose=False)):
        return NotImplemented
    a = _block(p.mems, Mem.SPAD, f["a"], m, k)
    batch = p.machine.batch

    def run():
        dense = nm_format.unpack_tile(values, words, k, pn, pm)
        _mm_batched(a, np.broadcast_to(dense, (batch, k, n)), out, acc, False)

    return run


def _vbin(p: BatchPreparer, f):
    rows, cols = f["rows"], f["cols"]
    if not (rows and cols):
        return None
    a = _block(p.mems, f["a_mem"], f["a"], rows, cols)
    b = _block(p.mems, f["b_mem"], f["b"], 1 if f["bcast"] else rows, cols)
    dst = _block(p.mems, f["dst_mem"], f["dst"], rows, cols)
    return partial(VBIN_FUNCTIONS[f["fn"]], a, b, out=dst)


def _vun(p: BatchPreparer, f):
    rows, cols, fn = f["rows"], f["cols"], f["fn"]
    if not (rows and cols):
        return None
    src = _block(p.mems, f["src_mem"], f["src"], rows, cols)
    dst = _block(p.mems, f["dst_mem"], f["dst"], rows, cols // 4 if fn == VUnFn.QUANT else cols)
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
    src = _block(p.mems, f["src_mem"], f["src"], rows, cols)
    dst = _block(p.mems, f["dst_mem"], f["dst"], rows, cols)
    imm = f32_from_bits(f["imm"])
    if fn == VRowFn.RESCALE:  # exact: an int32 add, a conversion and a product, rounded once
        if not p.same(Mem.SPAD, f["param"], 2 * cols):
            return NotImplemented
        params = p.mems[Mem.SPAD][0][f["param"]:f["param"] + 2 * cols]
        return partial(rescale_into, src, params, dst)
    if fn == VRowFn.SOFTMAX:
        def function(x, out):
            softmax_into(x, imm, out)

        if not p.verify.ok(("softmax", rows, cols), [(rows, cols), (rows, cols)],
                           function, function):
            return NotImplemented
        return partial(function, src, dst)
    if fn == VRowFn.LAYERNORM:
        if not p.same(Mem.SPAD, f["param"], 2 * cols):
            return NotImplemented  # gamma and beta differ per row: not what compilers make
        spad0 = p.mems[Mem.SPAD][0]
        gamma = spad0[f["param"]:f["param"] + cols]
        beta = spad0[f["param"] + cols:f["param"] + 2 * cols]
        eps = float(imm)

        def norm(x, out):
            layernorm_into(x, gamma, beta, eps, out)

        if not p.verify.ok(("layernorm", rows, cols), [(rows, cols), (rows, cols)],
                           norm, norm):
            return NotImplemented
        return partial(norm, src, dst)
    return NotImplemented


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

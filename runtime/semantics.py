"""Functional semantics of every opcode.

Each semantic function takes the machine's memories (a tuple indexed by `Mem`) and the
instruction's decoded fields, and performs the instruction as one numpy operation on views
of those memories (no per-element Python loops). Operands are contiguous row-major
[rows x cols] blocks on chip; only DMA touches DRAM, with a row stride.

Numerics: every result is float32. Matmul multiplies and accumulates in float32 (one BLAS
sgemm per instruction, torch's; accumulate = sgemm with beta = 1), except `imatmul` and
`ispmatmul`: int8 operands (four to a word, read through int8 views of the words), int32
results (the ACC words' bits), computed exactly by an integer GEMM (`torch._int_mm`: int8
operands, int32 accumulation, wrapping as the hardware's adder; a sum of products is exact
in any order, so no tiling or batching changes it). `vun quant` and `vrow rescale` convert between fp32 and the integers with
the rounding of docs/INT8.md.
GELU, layernorm and softmax are computed by torch itself (`torch.nn.functional.gelu`, exact
erf or tanh form; `layer_norm`; `softmax` of the f32 product src * imm), float32 kernels
that match the reference models bit for bit (an earlier float64 formulation was as exact
but 5x slower; the emulator's time on a ViT is largely these row functions and the tile
sgemms). The window scores (`vred`) are float64 sums rounded once: they decide which
windows are kept, so they are computed as exactly as is cheap. NaN and Inf propagate as
they do in PyTorch (max and relu propagate NaN).

`SEMANTICS` maps every mnemonic of `nmc.isa.table.OPS` to its function; the module refuses
to import if an opcode has none. `operand_error(instr)` rejects field values that encode
but have no meaning (a vector operand in DRAM, an undefined function number).

`prepare(mnemonic, mems, fields)` is the same semantics split in two for the emulator's hot
loop: it resolves the operands to numpy views once (when the program is decoded) and
returns a callable of no arguments that performs the instruction (or None for one that
does nothing), so running an instruction is one call on prepared views. Both forms compute
the same function with the same numpy/torch operations; the tests run both.
"""

from __future__ import annotations

from functools import partial, wraps
from typing import Callable, Mapping, TypeVar

import numpy as np

from nmc.common import nm_format
from nmc.isa.table import OPS, Instr, Mem, VBinFn, VRedFn, VRowFn, VUnFn, bits_f32

Mems = tuple[np.ndarray, ...]
T = TypeVar("T")
Semantics = Callable[[Mems, Mapping[str, int]], None]

_ON_CHIP = (Mem.SPAD, Mem.ACC)


def f32_from_bits(bits: int) -> np.float32:
    return np.float32(bits_f32(bits))


def _block(mems: Mems, mem: int, addr: int, rows: int, cols: int) -> np.ndarray:
    """A [rows x cols] view of the contiguous block at `addr` in `mem`."""
    return mems[mem][addr : addr + rows * cols].reshape(rows, cols)


def _dram_view(dram: np.ndarray, addr: int, rows: int, cols: int, stride: int) -> np.ndarray:
    """A [rows x cols] view of DRAM rows `stride` words apart, starting at `addr` (the
    footprint bounds checks guarantee it lies inside DRAM)."""
    if stride == cols or rows <= 1:
        return dram[addr : addr + rows * cols].reshape(rows, cols)
    item = dram.itemsize
    return np.ndarray((rows, cols), dram.dtype, dram, addr * item, (stride * item, item))


# --------------------------------------------------------------------------------------
# DMA


def _halt(mems: Mems, f: Mapping[str, int]) -> None:
    pass


def _load(mems: Mems, f: Mapping[str, int]) -> None:
    rows, cols = f["rows"], f["cols"]
    if rows and cols:
        src = _dram_view(mems[Mem.DRAM], f["dram"], rows, cols, f["stride"])
        _block(mems, f["mem"], f["local"], rows, cols)[...] = src


def _store(mems: Mems, f: Mapping[str, int]) -> None:
    rows, cols = f["rows"], f["cols"]
    if rows and cols:
        # A stride smaller than cols makes rows overlap in DRAM: later rows win.
        dst = _dram_view(mems[Mem.DRAM], f["dram"], rows, cols, f["stride"])
        dst[...] = _block(mems, f["mem"], f["local"], rows, cols)


class DataError(Exception):
    """A value the program computed cannot be used as it says (e.g. a gather index out of
    its table): the emulator reports it as an EmulatorError at the instruction's pc."""


def _indices(mems: Mems, f: Mapping[str, int]) -> np.ndarray:
    """The `count` block indices of a gathered/scattered DMA, checked: integers in
    [0, limit)."""
    raw = mems[Mem.SPAD][f["idx"] : f["idx"] + f["count"]]
    ints = raw.astype(np.int64, copy=True) if np.all(np.isfinite(raw)) else None
    if ints is None or np.any(ints != raw) or np.any((ints < 0) | (ints >= f["limit"])):
        bad = next(float(v) for v in raw if not (np.isfinite(v) and v == int(v)
                                                  and 0 <= v < f["limit"]))
        raise DataError(f"block index {bad!r} is not an integer in [0, {f['limit']}) "
                        f"(indices at SPAD [{f['idx']}, {f['idx'] + f['count']}))")
    return ints


def _table(mems: Mems, f: Mapping[str, int]) -> np.ndarray:
    """The DRAM table of a gathered/scattered DMA as [limit x block] rows `stride` apart."""
    return _dram_view(mems[Mem.DRAM], f["dram"], f["limit"], f["block"], f["stride"])


def _gload(mems: Mems, f: Mapping[str, int]) -> None:
    if f["count"] and f["block"]:
        idx = _indices(mems, f)
        dst = _block(mems, f["mem"], f["local"], f["count"], f["block"])
        np.take(_table(mems, f), idx, axis=0, out=dst)


def _gstore(mems: Mems, f: Mapping[str, int]) -> None:
    if f["count"] and f["block"]:
        idx = _indices(mems, f)
        # repeated indices: the last block written wins, as a sequence of stores would do
        _table(mems, f)[idx] = _block(mems, f["mem"], f["local"], f["count"], f["block"])


# --------------------------------------------------------------------------------------
# Matrix unit


def _matmul_operands(mems: Mems, f: Mapping[str, int]):
    m, k, n = f["m"], f["k"], f["n"]
    a = _block(mems, Mem.SPAD, f["a"], m, k)
    if f["transpose_w"]:
        w = _block(mems, Mem.SPAD, f["w"], n, k).T  # a transposed view: BLAS reads it as is
    else:
        w = _block(mems, Mem.SPAD, f["w"], k, n)
    return a, w, _block(mems, Mem.ACC, f["out"], m, n)


def matmul_thunk(a: np.ndarray, w: np.ndarray, out: np.ndarray, accumulate: bool):
    """out = a @ w, or out += a @ w, as one sgemm (beta = 1 when accumulating) by torch's
    BLAS on views of the memories. torch, not numpy: GELU already runs in torch, and two
    BLAS thread pools (numpy's OpenBLAS, torch's OpenMP) busy-waiting for each other's
    cores make every switch between them cost milliseconds."""
    import torch  # lazy: `nmc disasm` and friends never pay for it

    ta, tw, to = torch.from_numpy(a), torch.from_numpy(w), torch.from_numpy(out)
    if accumulate:
        return partial(torch.addmm, to, ta, tw, out=to)
    return partial(torch.mm, ta, tw, out=to)


def _int8(block: np.ndarray) -> np.ndarray:
    """The int8 elements of a [rows x words] block of packed words: [rows x 4*words]."""
    return block.view(np.int8)


def int8_thunk(a: np.ndarray, w: np.ndarray, out: np.ndarray, accumulate: bool):
    """out (int32 words) = a @ w, or out += a @ w, exactly, for int8 operands a [m x k]
    and w [k x n] (w may be an integer-valued float tile: an unpacked sparse one)."""
    import torch

    acc = torch.from_numpy(out.view(np.int32))
    ta = torch.from_numpy(a)

    def run():
        tw = torch.from_numpy(w)
        if ta.shape[1] == 0:  # no products: a sum of zero terms
            product = torch.zeros((ta.shape[0], tw.shape[1]), dtype=torch.int32)
        elif tw.dtype != torch.int8:
            # a malformed index stream can sum two kept values past the int8 range: those
            # tiles multiply in float64, exact for integers below 2^53
            if tw.abs().max() > 127:
                wide = torch.mm(ta.to(torch.float64), tw.to(torch.float64))
                product = wide.to(torch.int64).to(torch.int32)  # wraps, as the adder
            else:
                product = torch._int_mm(ta, tw.to(torch.int8))
        else:
            product = torch._int_mm(ta, tw)
        if accumulate:
            acc.add_(product)
        else:
            acc.copy_(product)

    return run


def _i8_matmul_operands(mems: Mems, f: Mapping[str, int]):
    m, k, n = f["m"], f["k"], f["n"]
    a = _int8(_block(mems, Mem.SPAD, f["a"], m, k // 4))
    w = _int8(_block(mems, Mem.SPAD, f["w"], k, n // 4))
    return a, w, _block(mems, Mem.ACC, f["out"], m, n)


def _matmul(mems: Mems, f: Mapping[str, int]) -> None:
    if f["m"] and f["n"]:
        _prep_matmul(mems, f)()


def _imatmul(mems: Mems, f: Mapping[str, int]) -> None:
    if f["m"] and f["n"]:
        _prep_imatmul(mems, f)()


def _spmatmul(mems: Mems, f: Mapping[str, int], int8: bool = False) -> None:
    """N:M sparse tile: expand the packed kept values to the dense W tile
    (`nm_format.unpack_tile`: rows no kept weight selects hold 0) and multiply as one
    sgemm (torch, as `matmul`)."""
    m, k, n, pn, pm = f["m"], f["k"], f["n"], f["pat_n"], f["pat_m"]
    if not (m and n):
        return
    kc = nm_format.compressed_rows(k, pn, pm)
    words = _block(mems, Mem.SPAD, f["idx"], nm_format.index_rows(kc, pm), n).view(np.uint32)
    out = _block(mems, Mem.ACC, f["out"], m, n)
    if int8:  # the int8 values expand exactly into a float tile of integers
        w = _int8(_block(mems, Mem.SPAD, f["w"], kc, n // 4)).astype(np.float32)
        dense = nm_format.unpack_tile(w, words, k, pn, pm)
        a = _int8(_block(mems, Mem.SPAD, f["a"], m, k // 4))
        int8_thunk(a, dense, out, bool(f["accumulate"]))()
        return
    w = _block(mems, Mem.SPAD, f["w"], kc, n)
    dense = nm_format.unpack_tile(w, words, k, pn, pm)
    a = _block(mems, Mem.SPAD, f["a"], m, k)
    matmul_thunk(a, dense, out, bool(f["accumulate"]))()


# --------------------------------------------------------------------------------------
# Vector unit

VBIN_FUNCTIONS: dict[int, np.ufunc] = {
    VBinFn.ADD: np.add,
    VBinFn.SUB: np.subtract,
    VBinFn.MUL: np.multiply,
    VBinFn.MAX: np.maximum,  # propagates NaN, like torch.maximum
}


def _vbin(mems: Mems, f: Mapping[str, int]) -> None:
    rows, cols = f["rows"], f["cols"]
    if not (rows and cols):
        return
    a = _block(mems, f["a_mem"], f["a"], rows, cols)
    b = _block(mems, f["b_mem"], f["b"], 1 if f["bcast"] else rows, cols)
    dst = _block(mems, f["dst_mem"], f["dst"], rows, cols)
    VBIN_FUNCTIONS[f["fn"]](a, b, out=dst)  # ufuncs copy overlapping operands first


def torch_gelu_into(x: np.ndarray, approximate: str, out: np.ndarray) -> None:
    """out = gelu(x), by torch (so it matches the reference models bit for bit), written
    straight into `out` (a contiguous block)."""
    import torch  # lazy: only programs with GELU pay for importing torch

    with torch.no_grad():
        torch._C._nn.gelu(torch.from_numpy(np.ascontiguousarray(x)), approximate=approximate,
                          out=torch.from_numpy(out))


def quantize_into(src: np.ndarray, inv_scale: np.float32, dst: np.ndarray) -> None:
    """dst (int8, four to a word) = clamp(round_half_even(src * inv_scale), -128, 127),
    the product in fp32 (docs/INT8.md); NaN becomes 0."""
    with np.errstate(all="ignore"):
        q = np.rint(np.multiply(src, inv_scale, dtype=np.float32))
        q = np.nan_to_num(np.clip(q, -128, 127), nan=0.0)
    dst.view(np.int8).reshape(q.shape)[...] = q.astype(np.int8)


def rescale_into(src: np.ndarray, param: np.ndarray, dst: np.ndarray) -> None:
    """dst = f32(src_i32 + bias_i32) * scale, per column: `param` holds (bias bits, scale)
    pairs; the int32 sum wraps like the hardware's adder, its conversion to f32 and the
    product round to nearest even (docs/INT8.md)."""
    pairs = param.reshape(-1, 2)
    bias, scale = pairs[:, 0].view(np.int32), pairs[:, 1]
    total = src.view(np.int32) + bias  # int32 (wraps on overflow, as a 32-bit adder)
    np.multiply(total.astype(np.float32), scale, out=dst)


def _gelu_into(src: np.ndarray, fn: int, dst: np.ndarray) -> None:
    torch_gelu_into(src, "tanh" if fn == VUnFn.GELU_TANH else "none", dst)


def _on_blocks(body: Callable[..., T]) -> Callable[[Mems, Mapping[str, int]], T | None]:
    """A unary or row instruction's semantics (or preparation) from `body(mems, f, src,
    dst)` on its [rows x cols] source and destination blocks; an empty block does nothing
    (None)."""

    @wraps(body)
    def on_blocks(mems: Mems, f: Mapping[str, int]) -> T | None:
        rows, cols = f["rows"], f["cols"]
        if not (rows and cols):
            return None
        return body(mems, f, _block(mems, f["src_mem"], f["src"], rows, cols),
                    _block(mems, f["dst_mem"], f["dst"], rows, cols))

    return on_blocks


def _on_vun_blocks(body: Callable[..., T]) -> Callable[[Mems, Mapping[str, int]], T | None]:
    """`_on_blocks` for vun, whose QUANT destination is [rows x cols/4] words (int8)."""

    @wraps(body)
    def on_blocks(mems: Mems, f: Mapping[str, int]) -> T | None:
        rows, cols = f["rows"], f["cols"]
        if not (rows and cols):
            return None
        dst_cols = cols // 4 if f["fn"] == VUnFn.QUANT else cols
        return body(mems, f, _block(mems, f["src_mem"], f["src"], rows, cols),
                    _block(mems, f["dst_mem"], f["dst"], rows, dst_cols))

    return on_blocks


@_on_vun_blocks
def _vun(mems: Mems, f: Mapping[str, int], src: np.ndarray, dst: np.ndarray) -> None:
    fn = f["fn"]
    if fn == VUnFn.QUANT:
        quantize_into(src, f32_from_bits(f["imm"]), dst)
    elif fn == VUnFn.COPY:
        dst[...] = src
    elif fn in (VUnFn.GELU, VUnFn.GELU_TANH):
        _gelu_into(src, fn, dst)
    elif fn == VUnFn.RELU:
        np.maximum(src, np.float32(0.0), out=dst)  # relu(NaN) = NaN, as in torch
    elif fn == VUnFn.EXP:
        np.exp(src, out=dst)
    elif fn == VUnFn.SCALE:
        np.multiply(src, f32_from_bits(f["imm"]), out=dst)
    else:  # operand_error() rejects it before a program runs
        raise AssertionError(f"vun: no semantics for fn {fn}")


def layernorm_into(x: np.ndarray, gamma: np.ndarray, beta: np.ndarray, eps: float,
               out: np.ndarray) -> None:
    """out = layernorm of the rows of x: PyTorch's own float32 kernel, as GELU."""
    import torch
    import torch.nn.functional as F

    t = torch.from_numpy
    y = F.layer_norm(t(x), (x.shape[-1],), t(np.ascontiguousarray(gamma)),
                     t(np.ascontiguousarray(beta)), eps)
    t(out).copy_(y)


def softmax_into(x: np.ndarray, scale: np.float32, out: np.ndarray) -> None:
    """out = softmax of the rows of x * scale (an f32 multiply), PyTorch's float32 kernel."""
    import torch

    torch.from_numpy(out).copy_(torch.softmax(torch.from_numpy(x).mul(float(scale)), -1))


@_on_blocks
def _vrow(mems: Mems, f: Mapping[str, int], src: np.ndarray, dst: np.ndarray) -> None:
    cols = f["cols"]
    fn = f["fn"]
    if fn == VRowFn.LAYERNORM:
        p = f["param"]
        spad = mems[Mem.SPAD]
        gamma, beta = spad[p : p + cols], spad[p + cols : p + 2 * cols]
        with np.errstate(all="ignore"):  # NaN/Inf propagate silently, as in torch
            layernorm_into(src, gamma, beta, float(f32_from_bits(f["imm"])), dst)
    elif fn == VRowFn.SOFTMAX:
        with np.errstate(all="ignore"):
            softmax_into(src, f32_from_bits(f["imm"]), dst)
    elif fn == VRowFn.RESCALE:
        rescale_into(src, mems[Mem.SPAD][f["param"] : f["param"] + 2 * cols], dst)
    else:  # operand_error() rejects it before a program runs
        raise AssertionError(f"vrow: no semantics for fn {fn}")


def _vred(mems: Mems, f: Mapping[str, int]) -> None:
    """Row reductions in float64, rounded once (scores decide which windows are kept, so
    they are computed as exactly as is cheap)."""
    rows, cols = f["rows"], f["cols"]
    if not (rows and cols):
        return
    src = _block(mems, f["src_mem"], f["src"], rows, cols).astype(np.float64)
    dst = mems[f["dst_mem"]][f["dst"] : f["dst"] + rows]
    with np.errstate(all="ignore"):
        if f["fn"] == VRedFn.MEAN_ABS:
            np.copyto(dst, np.abs(src).mean(axis=1), casting="same_kind")
        elif f["fn"] == VRedFn.L2:
            np.copyto(dst, np.sqrt(np.square(src).sum(axis=1)), casting="same_kind")
        else:  # operand_error() rejects it before a program runs
            raise AssertionError(f"vred: no semantics for fn {f['fn']}")


def _topk(mems: Mems, f: Mapping[str, int]) -> None:
    n, k = f["n"], f["k"]
    if not k:
        return
    scores = mems[f["src_mem"]][f["src"] : f["src"] + n]
    # descending, stable, NaN first: keys (NaN?, -score, index), the last key primary
    order = np.lexsort((np.arange(n), -np.nan_to_num(scores, nan=0.0), ~np.isnan(scores)))
    mems[f["dst_mem"]][f["dst"] : f["dst"] + k] = order[:k]


# --------------------------------------------------------------------------------------
# Prepared form: operands resolved to views once, the instruction a call of no arguments.

Thunk = Callable[[], object]


def _prep_load(mems: Mems, f: Mapping[str, int]) -> Thunk | None:
    rows, cols = f["rows"], f["cols"]
    if not (rows and cols):
        return None
    src = _dram_view(mems[Mem.DRAM], f["dram"], rows, cols, f["stride"])
    return partial(np.copyto, _block(mems, f["mem"], f["local"], rows, cols), src)


def _prep_store(mems: Mems, f: Mapping[str, int]) -> Thunk | None:
    rows, cols = f["rows"], f["cols"]
    if not (rows and cols):
        return None
    dst = _dram_view(mems[Mem.DRAM], f["dram"], rows, cols, f["stride"])
    return partial(np.copyto, dst, _block(mems, f["mem"], f["local"], rows, cols))


def _prep_matmul(mems: Mems, f: Mapping[str, int]) -> Thunk | None:
    if not (f["m"] and f["n"]):
        return None
    return matmul_thunk(*_matmul_operands(mems, f), bool(f["accumulate"]))


def _prep_imatmul(mems: Mems, f: Mapping[str, int]) -> Thunk | None:
    if not (f["m"] and f["n"]):
        return None
    return int8_thunk(*_i8_matmul_operands(mems, f), bool(f["accumulate"]))


def _prep_vbin(mems: Mems, f: Mapping[str, int]) -> Thunk | None:
    rows, cols = f["rows"], f["cols"]
    if not (rows and cols):
        return None
    a = _block(mems, f["a_mem"], f["a"], rows, cols)
    b = _block(mems, f["b_mem"], f["b"], 1 if f["bcast"] else rows, cols)
    dst = _block(mems, f["dst_mem"], f["dst"], rows, cols)
    return partial(VBIN_FUNCTIONS[f["fn"]], a, b, out=dst)


@_on_vun_blocks
def _prep_vun(mems: Mems, f: Mapping[str, int], src: np.ndarray, dst: np.ndarray) -> Thunk:
    fn = f["fn"]
    if fn == VUnFn.QUANT:
        return partial(quantize_into, src, f32_from_bits(f["imm"]), dst)
    if fn == VUnFn.COPY:
        return partial(np.copyto, dst, src)
    if fn == VUnFn.RELU:
        return partial(np.maximum, src, np.float32(0.0), out=dst)
    if fn == VUnFn.EXP:
        return partial(np.exp, src, out=dst)
    if fn == VUnFn.SCALE:
        return partial(np.multiply, src, f32_from_bits(f["imm"]), out=dst)
    if fn in (VUnFn.GELU, VUnFn.GELU_TANH):
        return partial(_gelu_into, src, fn, dst)
    return lambda: _vun(mems, f)  # operand_error() rejects undefined functions


@_on_blocks
def _prep_vrow(mems: Mems, f: Mapping[str, int], src: np.ndarray, dst: np.ndarray) -> Thunk:
    cols = f["cols"]
    imm = f32_from_bits(f["imm"])
    if f["fn"] == VRowFn.SOFTMAX:
        return partial(softmax_into, src, imm, dst)
    if f["fn"] == VRowFn.LAYERNORM:
        p = f["param"]
        spad = mems[Mem.SPAD]
        gamma, beta = spad[p : p + cols], spad[p + cols : p + 2 * cols]
        return partial(layernorm_into, src, gamma, beta, float(imm), dst)
    if f["fn"] == VRowFn.RESCALE:
        return partial(rescale_into, src, mems[Mem.SPAD][f["param"] : f["param"] + 2 * cols],
                       dst)
    return lambda: _vrow(mems, f)


_PREPARE: dict[str, Callable[[Mems, Mapping[str, int]], Thunk | None]] = {
    "load": _prep_load,
    "store": _prep_store,
    "matmul": _prep_matmul,
    "imatmul": _prep_imatmul,
    "vbin": _prep_vbin,
    "vun": _prep_vun,
    "vrow": _prep_vrow,
}


def prepare(mnemonic: str, mems: Mems, f: Mapping[str, int]) -> Thunk | None:
    """A call of no arguments that performs the instruction on `mems` (None: a no-op).
    The instruction must have passed `operand_error` and the footprint bounds checks.
    Mnemonics without a prepared form fall back to their `SEMANTICS` function."""
    prep = _PREPARE.get(mnemonic)
    if prep is None:
        sem = SEMANTICS[mnemonic]
        return lambda: sem(mems, f)
    return prep(mems, f)


# --------------------------------------------------------------------------------------
# Dispatch, checked against the ISA table at import time.

SEMANTICS: dict[str, Semantics] = {
    "halt": _halt,
    "load": _load,
    "store": _store,
    "matmul": _matmul,
    "spmatmul": _spmatmul,
    "imatmul": _imatmul,
    "ispmatmul": partial(_spmatmul, int8=True),
    "vbin": _vbin,
    "vun": _vun,
    "vrow": _vrow,
    "gload": _gload,
    "gstore": _gstore,
    "vred": _vred,
    "topk": _topk,
}

_missing = [op.mnemonic for op in OPS if op.mnemonic not in SEMANTICS]
_stale = sorted(set(SEMANTICS) - {op.mnemonic for op in OPS})
if _missing or _stale:
    raise RuntimeError(
        "nmc.runtime.semantics is out of date with nmc.isa.table: "
        f"no semantics for {_missing}, semantics for unknown opcodes {_stale}"
    )

# Fields naming a memory that must be on chip, and enum fields whose value must be defined
# (also checked, in array form, by nmc.runtime.fastpath), and the mnemonics whose other
# field values have further constraints (checked by `operand_error` alone).
ONCHIP_FIELDS: dict[str, tuple[str, ...]] = {
    "load": ("mem",),
    "store": ("mem",),
    "vbin": ("dst_mem", "a_mem", "b_mem"),
    "vun": ("dst_mem", "src_mem"),
    "vrow": ("dst_mem", "src_mem"),
    "gload": ("mem",),
    "gstore": ("mem",),
    "vred": ("dst_mem", "src_mem"),
    "topk": ("dst_mem", "src_mem"),
}
FN_ENUMS = {"vbin": VBinFn, "vun": VUnFn, "vrow": VRowFn, "vred": VRedFn}
VALUE_CHECKED = ("spmatmul", "imatmul", "ispmatmul", "vun", "topk")


INT8_MATRIX = ("imatmul", "ispmatmul")


def datapath_error(mnemonic: str, target) -> str | None:
    """Why `target`'s datapath cannot run instructions of `mnemonic` (an int8 matmul on a
    matrix unit of fp32 operands), or None."""
    if mnemonic in INT8_MATRIX and not target.int8:
        return (f"target '{target.name}' has a matrix unit of {target.matrix_operands} "
                f"operands: it has no int8 matmul")
    return None


def operand_error(instr: Instr) -> str | None:
    """Why `instr` has no meaning (a field value the ISA leaves undefined), or None."""
    f = instr.fields
    for name in ONCHIP_FIELDS.get(instr.mnemonic, ()):
        if f[name] not in _ON_CHIP:
            what = Mem(f[name]).name if f[name] in Mem._value2member_map_ else str(f[name])
            return f"field '{name}' = {what}: the operand must be in SPAD or ACC"
    if instr.mnemonic in ("imatmul", "ispmatmul") and (f["k"] % 4 or f["n"] % 4):
        return f"int8 operands pack 4 to a word: k = {f['k']}, n = {f['n']} must be multiples of 4"
    if instr.mnemonic == "vun" and f["fn"] == VUnFn.QUANT and f["cols"] % 4:
        return f"vun quant packs 4 int8 to a word: cols = {f['cols']} is not a multiple of 4"
    if instr.mnemonic in ("spmatmul", "ispmatmul"):
        pn, pm = f["pat_n"], f["pat_m"]
        if not (2 <= pm and 0 < pn <= pm):
            return f"N:M pattern {pn}:{pm} needs 0 < N <= M and M >= 2"
        if f["k"] % pm:
            return f"k = {f['k']} is not a multiple of M = {pm}"
    if instr.mnemonic == "topk" and f["k"] > f["n"]:
        return f"k = {f['k']} is more than n = {f['n']} scores"
    enum = FN_ENUMS.get(instr.mnemonic)
    if enum is not None and f["fn"] not in enum._value2member_map_:
        return f"field 'fn' = {f['fn']} is not a {enum.__name__}"
    return None

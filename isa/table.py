"""The nmc accelerator ISA, defined once, as data.

Everything else is derived from the tables in this file: the binary encoder/decoder
(`nmc.isa.encoding`), the lark assembly grammar and the disassembler (`nmc.isa.asm`), the
xDSL `isa` dialect (`nmc.isa.dialect`), the emulator's dispatch (`nmc.runtime`) and the
compiler's dependency analysis (`footprint`). Adding an instruction means adding one
`OpSpec` here (and its semantics in the emulator); nothing else lists opcodes or fields.

Machine model (docs/ISA.md is generated from this file by `python -m nmc.isa.doc`):
- Memories, addressed in 32-bit words (fp32 elements): DRAM, SPAD (scratchpad, operands of
  the matrix and vector units), ACC (accumulator, results of the matrix unit).
- Units, each executing its own queue in order: LOAD (DMA DRAM->on-chip), STORE (DMA
  on-chip->DRAM), MATRIX, VECTOR. A CONTROL pseudo-unit holds `halt`.
- Dependency tokens (a generalisation of TVM VTA's four token bits to four units): every
  instruction has a `wait` mask and a `signal` mask, one bit per unit. Before it starts, an
  instruction on unit U pops one token from the queue (V -> U) for every bit V of `wait`;
  when it finishes it pushes one token to the queue (U -> V) for every bit V of `signal`.
"""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass, field
from typing import Callable, Mapping

WORD_BITS = 256
"""Every instruction is one fixed-width 256-bit (32-byte) little-endian word."""
WORD_BYTES = WORD_BITS // 8


class Unit(enum.IntEnum):
    LOAD = 0
    STORE = 1
    MATRIX = 2
    VECTOR = 3
    CONTROL = 4  # not a queue of its own: `halt` ends the instruction stream


QUEUE_UNITS = (Unit.LOAD, Unit.STORE, Unit.MATRIX, Unit.VECTOR)
"""Units that own an instruction queue; a token mask has one bit per unit, in this order."""


class Mem(enum.IntEnum):
    DRAM = 0
    SPAD = 1
    ACC = 2


class VBinFn(enum.IntEnum):
    ADD = 0
    SUB = 1
    MUL = 2
    MAX = 3


class VUnFn(enum.IntEnum):
    COPY = 0
    GELU = 1  # exact (erf) GELU, as torch.nn.GELU(approximate="none")
    GELU_TANH = 2  # torch.nn.GELU(approximate="tanh")
    RELU = 3
    EXP = 4
    SCALE = 5  # dst = src * imm


class VRowFn(enum.IntEnum):
    LAYERNORM = 0  # dst = (src - mean) / sqrt(var + imm) * P[0:cols] + P[cols:2*cols]
    SOFTMAX = 1  # dst = softmax(src * imm) along each row; P unused


class VRedFn(enum.IntEnum):
    MEAN_ABS = 0  # dst[r] = mean over the row of |src[r, :]|
    L2 = 1  # dst[r] = sqrt(sum over the row of src[r, :]^2)


@dataclass(frozen=True)
class Field:
    """One operand field of an instruction word.

    `kind` says how the assembler and disassembler spell the value: "uint" (a non-negative
    integer), "mask" (a token mask over QUEUE_UNITS), "f32" (the raw bits of an IEEE-754
    single, written as a float), or "enum" (a name from `enum`).
    """

    name: str
    bits: int
    kind: str = "uint"
    enum: type[enum.IntEnum] | None = None
    doc: str = ""

    @property
    def max_value(self) -> int:
        return (1 << self.bits) - 1


def f32_bits(value: float) -> int:
    """The raw IEEE-754 single-precision bits of `value`: how "f32" fields are stored."""
    return struct.unpack("<I", struct.pack("<f", value))[0]


def bits_f32(bits: int) -> float:
    """The float held by the raw bits of an "f32" field."""
    return struct.unpack("<f", struct.pack("<I", bits))[0]


# The fields every instruction starts with, in this order.
OPCODE_BITS = 8
COMMON_FIELDS: tuple[Field, ...] = (
    Field("wait", 4, "mask", doc="units whose token this instruction pops before it starts"),
    Field("signal", 4, "mask", doc="units this instruction pushes a token to when it ends"),
)


@dataclass(frozen=True)
class Region:
    """A range of words one instruction may touch: [start, start + length) in `mem`.

    For strided 2-D transfers the region is the bounding range, which is what the
    dependency analysis needs (it may be conservative) and what bounds checks need (it is
    exactly the extent touched).
    """

    mem: Mem
    start: int
    length: int

    @property
    def end(self) -> int:
        return self.start + self.length


Footprint = tuple[tuple[Region, ...], tuple[Region, ...]]  # (reads, writes)


@dataclass(frozen=True)
class OpSpec:
    opcode: int
    mnemonic: str
    unit: Unit
    fields: tuple[Field, ...]
    footprint: Callable[[Mapping[str, int]], Footprint]
    doc: str = ""
    field_by_name: dict[str, Field] = field(init=False, compare=False, repr=False)

    def __post_init__(self):
        object.__setattr__(self, "field_by_name", {f.name: f for f in self.all_fields})
        used = OPCODE_BITS + sum(f.bits for f in self.all_fields)
        assert used <= WORD_BITS, f"{self.mnemonic}: {used} bits do not fit a {WORD_BITS}-bit word"

    @property
    def all_fields(self) -> tuple[Field, ...]:
        return COMMON_FIELDS + self.fields


# --------------------------------------------------------------------------------------
# Field helpers: the same operand shapes recur across opcodes.

ADDR_BITS = 32  # every address field, on-chip or DRAM
DIM_BITS = 16  # rows / cols / m / n / k


def _addr(name: str, doc: str) -> Field:
    return Field(name, ADDR_BITS, doc=doc)


def _mem(name: str, doc: str) -> Field:
    return Field(name, 2, "enum", Mem, doc)


def _dim(name: str, doc: str) -> Field:
    return Field(name, DIM_BITS, doc=doc)


def _strided(mem: Mem, start: int, rows: int, cols: int, stride: int) -> Region:
    length = 0 if rows == 0 or cols == 0 else (rows - 1) * stride + cols
    return Region(mem, start, length)


def _dense(mem: int, start: int, words: int) -> Region:
    return Region(Mem(mem), start, words)


# --------------------------------------------------------------------------------------
# Footprints: which words each instruction reads and writes, from its decoded fields.


def _load_footprint(f: Mapping[str, int]) -> Footprint:
    reads = (_strided(Mem.DRAM, f["dram"], f["rows"], f["cols"], f["stride"]),)
    writes = (_dense(f["mem"], f["local"], f["rows"] * f["cols"]),)
    return reads, writes


def _store_footprint(f: Mapping[str, int]) -> Footprint:
    reads, writes = _load_footprint(f)
    return writes, reads


def _matmul_footprint(f: Mapping[str, int]) -> Footprint:
    m, k, n = f["m"], f["k"], f["n"]  # W is k*n words whether or not it is transposed
    reads = [_dense(Mem.SPAD, f["a"], m * k), _dense(Mem.SPAD, f["w"], k * n)]
    if f["accumulate"]:
        reads.append(_dense(Mem.ACC, f["out"], m * n))
    return tuple(reads), (_dense(Mem.ACC, f["out"], m * n),)


def nm_index_bits(m: int) -> int:
    """Bits of one in-group index of an N:M pattern: ceil(log2(M)) (at least 1)."""
    return max(1, (max(int(m), 2) - 1).bit_length())


def nm_indices_per_word(m: int) -> int:
    """In-group indices packed into one 32-bit word (index i of a word at bits i*b..)."""
    return 32 // nm_index_bits(m)


def nm_compressed_rows(k: int, n: int, m: int) -> int:
    """Rows of the compressed W of a spmatmul: k * N / M (k is a multiple of M)."""
    return (int(k) * int(n)) // max(int(m), 1)


def nm_index_rows(kc: int, m: int) -> int:
    """Rows of index words covering `kc` compressed rows: indices are packed down the
    columns, word row r holding compressed rows r*P .. r*P+P-1 (P = nm_indices_per_word)."""
    p = nm_indices_per_word(m)
    return -(-int(kc) // p)


def _spmatmul_footprint(f: Mapping[str, int]) -> Footprint:
    m, k, n = f["m"], f["k"], f["n"]
    kc = nm_compressed_rows(k, f["pat_n"], f["pat_m"])
    reads = [_dense(Mem.SPAD, f["a"], m * k), _dense(Mem.SPAD, f["w"], kc * n),
             _dense(Mem.SPAD, f["idx"], nm_index_rows(kc, f["pat_m"]) * n)]
    if f["accumulate"]:
        reads.append(_dense(Mem.ACC, f["out"], m * n))
    return tuple(reads), (_dense(Mem.ACC, f["out"], m * n),)


def _vbin_footprint(f: Mapping[str, int]) -> Footprint:
    words = f["rows"] * f["cols"]
    b_words = f["cols"] if f["bcast"] else words
    reads = (_dense(f["a_mem"], f["a"], words), _dense(f["b_mem"], f["b"], b_words))
    return reads, (_dense(f["dst_mem"], f["dst"], words),)


def _vun_footprint(f: Mapping[str, int]) -> Footprint:
    words = f["rows"] * f["cols"]
    return (_dense(f["src_mem"], f["src"], words),), (_dense(f["dst_mem"], f["dst"], words),)


def _vrow_footprint(f: Mapping[str, int]) -> Footprint:
    words = f["rows"] * f["cols"]
    reads = [_dense(f["src_mem"], f["src"], words)]
    if f["fn"] == VRowFn.LAYERNORM:
        reads.append(_dense(Mem.SPAD, f["param"], 2 * f["cols"]))
    return tuple(reads), (_dense(f["dst_mem"], f["dst"], words),)


def _table_region(f: Mapping[str, int]) -> Region:
    """The DRAM extent of a gathered/scattered DMA: all `limit` blocks an index may name
    (the indices are data, so this bound is what the dependency analysis can know)."""
    return _strided(Mem.DRAM, f["dram"], f["limit"], f["block"], f["stride"])


def _gathered(f: Mapping[str, int]) -> tuple[Region, Region]:
    """The on-chip side of a gathered/scattered DMA: the packed blocks, and the indices."""
    return (_dense(f["mem"], f["local"], f["count"] * f["block"]),
            _dense(Mem.SPAD, f["idx"], f["count"]))


def _gload_footprint(f: Mapping[str, int]) -> Footprint:
    packed, idx = _gathered(f)
    return (_table_region(f), idx), (packed,)


def _gstore_footprint(f: Mapping[str, int]) -> Footprint:
    packed, idx = _gathered(f)
    return (packed, idx), (_table_region(f),)


def _vred_footprint(f: Mapping[str, int]) -> Footprint:
    reads = (_dense(f["src_mem"], f["src"], f["rows"] * f["cols"]),)
    return reads, (_dense(f["dst_mem"], f["dst"], f["rows"]),)


def _topk_footprint(f: Mapping[str, int]) -> Footprint:
    return ((_dense(f["src_mem"], f["src"], f["n"]),),
            (_dense(f["dst_mem"], f["dst"], f["k"]),))


def _no_footprint(f: Mapping[str, int]) -> Footprint:
    return (), ()


# --------------------------------------------------------------------------------------
# The instruction set.

_DMA_FIELDS = (
    _mem("mem", "on-chip memory (spad or acc)"),
    _addr("local", "on-chip word address; the block is stored contiguously, row-major"),
    _addr("dram", "DRAM word address of the first element"),
    _dim("rows", "rows of the 2-D block"),
    _dim("cols", "words per row"),
    Field("stride", 24, doc="DRAM words between the starts of consecutive rows"),
)

_VEC_SHAPE = (_dim("rows", "rows"), _dim("cols", "words per row; operands are contiguous"))

# Gathered / scattered DMA: whole blocks picked by indices that a program computes (window
# pruning: the kept windows of a feature map). Indices are f32 words holding integers.
_GATHER_FIELDS = (
    _mem("mem", "on-chip memory (spad or acc) of the packed blocks"),
    _addr("local", "on-chip word address of the packed blocks, block i at local + i*block"),
    _addr("dram", "DRAM word address of block 0 of the table"),
    _addr("idx", "spad address of `count` indices (f32 words holding integers 0..limit-1)"),
    _dim("count", "blocks moved"),
    Field("block", 24, doc="words per block"),
    Field("stride", 24, doc="DRAM words between the starts of consecutive table blocks"),
    _dim("limit", "blocks in the table: every index must be below it"),
)

OPS: tuple[OpSpec, ...] = (
    OpSpec(0x01, "halt", Unit.CONTROL, (), _no_footprint, "end of the instruction stream"),
    OpSpec(0x02, "load", Unit.LOAD, _DMA_FIELDS, _load_footprint,
           "2-D strided DMA from DRAM into a contiguous on-chip block"),
    OpSpec(0x03, "store", Unit.STORE, _DMA_FIELDS, _store_footprint,
           "2-D strided DMA from a contiguous on-chip block to DRAM"),
    OpSpec(0x04, "gload", Unit.LOAD, _GATHER_FIELDS, _gload_footprint,
           "gathered DMA: block i of the on-chip destination is DRAM table block idx[i]"),
    OpSpec(0x05, "gstore", Unit.STORE, _GATHER_FIELDS, _gstore_footprint,
           "scattered DMA: DRAM table block idx[i] becomes block i of the on-chip source"),
    OpSpec(
        0x10, "matmul", Unit.MATRIX,
        (
            _addr("a", "spad address of A, [m x k] row-major"),
            _addr("w", "spad address of W: [k x n] row-major, or [n x k] with transpose_w"),
            _addr("out", "acc address of OUT, [m x n] row-major"),
            _dim("m", "rows of A and OUT"),
            _dim("k", "reduction length"),
            _dim("n", "columns of W and OUT"),
            Field("accumulate", 1, doc="1: OUT += A.W; 0: OUT = A.W"),
            Field("transpose_w", 1,
                  doc="1: W is stored [n x k] row-major and the product is A.W^T "
                      "(attention scores q.k^T)"),
        ),
        _matmul_footprint,
        "dense matrix tile on the matrix unit",
    ),
    OpSpec(
        0x11, "spmatmul", Unit.MATRIX,
        (
            _addr("a", "spad address of A, [m x k] row-major (dense activations)"),
            _addr("w", "spad address of the kept weights of W: [k*N/M x n] row-major; "
                       "compressed row r belongs to group r / N (rows r*M/N.. of dense W)"),
            _addr("idx", "spad address of the in-group indices of W's kept weights: "
                         "[ceil(k*N/M / P) x n] 32-bit words, P = 32 / ceil(log2 M); word "
                         "(r, j) holds the indices of compressed rows r*P+i at bits "
                         "i*b .. i*b+b-1 (b = ceil(log2 M))"),
            _addr("out", "acc address of OUT, [m x n] row-major"),
            _dim("m", "rows of A and OUT"),
            _dim("k", "reduction length of the dense product (a multiple of M)"),
            _dim("n", "columns of W and OUT"),
            Field("pat_n", 8, doc="N of the N:M pattern: weights kept per group"),
            Field("pat_m", 8, doc="M of the N:M pattern: group length along k (>= 2)"),
            Field("accumulate", 1, doc="1: OUT += A.W; 0: OUT = A.W"),
        ),
        _spmatmul_footprint,
        "N:M structured-sparse matrix tile: OUT (+)= A.W with W stored as kept values "
        "plus in-group indices; element (r, j) of W multiplies "
        "A[:, (r / N) * M + idx(r, j)]",
    ),
    OpSpec(
        0x20, "vbin", Unit.VECTOR,
        (
            Field("fn", 4, "enum", VBinFn, "the elementwise function"),
            _mem("dst_mem", "memory of dst"), _addr("dst", "destination"),
            _mem("a_mem", "memory of a"), _addr("a", "first operand"),
            _mem("b_mem", "memory of b"), _addr("b", "second operand"),
            *_VEC_SHAPE,
            Field("bcast", 1, doc="1: b is one row of cols words, broadcast over all rows"),
        ),
        _vbin_footprint,
        "dst = fn(a, b), elementwise over a [rows x cols] block",
    ),
    OpSpec(
        0x21, "vun", Unit.VECTOR,
        (
            Field("fn", 4, "enum", VUnFn, "the elementwise function"),
            _mem("dst_mem", "memory of dst"), _addr("dst", "destination"),
            _mem("src_mem", "memory of src"), _addr("src", "source"),
            *_VEC_SHAPE,
            Field("imm", 32, "f32", doc="scalar operand (SCALE)"),
        ),
        _vun_footprint,
        "dst = fn(src), elementwise over a [rows x cols] block",
    ),
    OpSpec(
        0x22, "vrow", Unit.VECTOR,
        (
            Field("fn", 4, "enum", VRowFn, "the row function"),
            _mem("dst_mem", "memory of dst"), _addr("dst", "destination"),
            _mem("src_mem", "memory of src"), _addr("src", "source"),
            _addr("param", "spad address of per-column parameters (layernorm: gamma then beta)"),
            *_VEC_SHAPE,
            Field("imm", 32, "f32", doc="scalar (layernorm: eps; softmax: input scale)"),
        ),
        _vrow_footprint,
        "a function of whole rows (normalisation, softmax) over a [rows x cols] block",
    ),
    OpSpec(
        0x23, "vred", Unit.VECTOR,
        (
            Field("fn", 4, "enum", VRedFn, "the reduction"),
            _mem("dst_mem", "memory of dst"), _addr("dst", "destination: rows words"),
            _mem("src_mem", "memory of src"), _addr("src", "source"),
            *_VEC_SHAPE,
        ),
        _vred_footprint,
        "dst[r] = fn(src[r, :]): each row of a [rows x cols] block reduced to one word "
        "(window scores: mean |x| per token, then the L2 norm per window)",
    ),
    OpSpec(
        0x24, "topk", Unit.VECTOR,
        (
            _mem("dst_mem", "memory of dst"), _addr("dst", "destination: k indices"),
            _mem("src_mem", "memory of src"), _addr("src", "source: n scores"),
            _dim("n", "scores"),
            _dim("k", "indices written (k <= n)"),
        ),
        _topk_footprint,
        "dst = the indices (as f32 integers) of the k largest of n scores, largest first; "
        "ties go to the lower index and NaN ranks above every number (torch.sort "
        "descending, stable)",
    ),
)

OP_BY_OPCODE: dict[int, OpSpec] = {op.opcode: op for op in OPS}
OP_BY_MNEMONIC: dict[str, OpSpec] = {op.mnemonic: op for op in OPS}
assert len(OP_BY_OPCODE) == len(OPS) and len(OP_BY_MNEMONIC) == len(OPS)


@dataclass(frozen=True)
class Instr:
    """One decoded instruction: its spec and the value of every field (ints; f32 fields
    hold their raw bits, so encode/decode round trips are exact)."""

    spec: OpSpec
    fields: Mapping[str, int]

    @staticmethod
    def make(mnemonic: str, **values: int) -> "Instr":
        """Build an instruction; fields left out are 0. Raises ValueError on unknown
        fields or values that do not fit."""
        spec = OP_BY_MNEMONIC.get(mnemonic)
        if spec is None:
            raise ValueError(f"unknown mnemonic '{mnemonic}'")
        unknown = set(values) - set(spec.field_by_name)
        if unknown:
            raise ValueError(f"{mnemonic}: unknown field(s) {', '.join(sorted(unknown))}")
        fields = {}
        for f in spec.all_fields:
            v = int(values.get(f.name, 0))
            if not 0 <= v <= f.max_value:
                raise ValueError(f"{mnemonic}: field '{f.name}'={v} does not fit {f.bits} bits")
            fields[f.name] = v
        return Instr(spec, fields)

    @property
    def mnemonic(self) -> str:
        return self.spec.mnemonic

    @property
    def unit(self) -> Unit:
        return self.spec.unit

    def __getitem__(self, name: str) -> int:
        return self.fields[name]

    def footprint(self) -> Footprint:
        return self.spec.footprint(self.fields)

    def with_fields(self, **values: int) -> "Instr":
        return Instr.make(self.mnemonic, **{**self.fields, **values})

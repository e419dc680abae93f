"""The nmc accelerator ISA, defined once, as data.

Everything else is derived from the tables in this file: the binary encoder/decoder
(`nmc.isa.encoding`), the lark assembly grammar and the disassembler (`nmc.isa.asm`), the
xDSL `isa` dialect (`nmc.isa.dialect`), the emulator's dispatch (`nmc.runtime`) and the
compiler's dependency analysis (`footprint`). Adding an instruction means adding one
`OpSpec` here (and its semantics in the emulator and its cycles in `nmc.runtime.timing`);
nothing else lists opcodes or fields.

Machine model (docs/ISA.md is generated from this file by `python -m nmc.isa.doc`):
- Memories, addressed in 32-bit words (fp32 elements): DRAM, SPAD (scratchpad, operands of
  the matrix and vector units), ACC (accumulator, results of the matrix unit). int8 data
  (the operands of `imatmul` / `ispmatmul`, `vun quant`'s result) packs four elements to
  a word, element i of a word in byte i (little-endian); int32 accumulators are one word
  each (docs/INT8.md).
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
from typing import Any, Callable, Mapping

from nmc.common import nm_format
from nmc.isa.fieldmath import ceil_div, where
from nmc.isa.footprint import Footprint, Region

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
    QUANT = 6  # dst (int8, 4 per word) = clamp(round_half_even(src * imm), -128, 127)


class VRowFn(enum.IntEnum):
    LAYERNORM = 0  # dst = (src - mean) / sqrt(var + imm) * P[0:cols] + P[cols:2*cols]
    SOFTMAX = 1  # dst = softmax(src * imm) along each row; P unused
    RESCALE = 2  # dst = f32(src_i32 + P[2c]_i32) * P[2c+1]: int32 results -> fp32 (docs/INT8.md)


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


Fields = Mapping[str, Any]
"""Field values by name: ints, or int arrays holding one field of many instructions."""

# The fields every instruction starts with, in this order.
OPCODE_BITS = 8
COMMON_FIELDS: tuple[Field, ...] = (
    Field("wait", 4, "mask", doc="units whose token this instruction pops before it starts"),
    Field("signal", 4, "mask", doc="units this instruction pushes a token to when it ends"),
)


@dataclass(frozen=True)
class OpSpec:
    """One instruction: its encoding, and the facts about it that every consumer derives
    from here, each a formula over the field values (ints, or int arrays holding the fields
    of many instructions: see `nmc.isa.fieldmath`):

    - `footprint`: the regions it reads and writes, exactly (strided where the DMA is); the
      emulator's bounds and race checks and insert-tokens' hazards come from it.
    - `macs`: the multiply-accumulates it performs (the run statistics' matrix work).
    - `dram_traffic`: (words it reads from DRAM, words it writes to DRAM).

    Its cycles depend on the target: `nmc.runtime.timing` registers them per opcode.
    tests/test_isa_facts.py checks that every instruction has all of them.
    """

    opcode: int
    mnemonic: str
    unit: Unit
    fields: tuple[Field, ...]
    doc: str
    footprint: Callable[[Fields], Footprint] = field(kw_only=True)
    macs: Callable[[Fields], Any] = field(kw_only=True)
    dram_traffic: Callable[[Fields], tuple[Any, Any]] = field(kw_only=True)
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


def _dst_src(dst_doc: str = "destination", src_doc: str = "source") -> tuple[Field, ...]:
    """The operands of a vector instruction from one block to another."""
    return (_mem("dst_mem", "memory of dst"), _addr("dst", dst_doc),
            _mem("src_mem", "memory of src"), _addr("src", src_doc))


# --------------------------------------------------------------------------------------
# Footprints: which words each instruction reads and writes, from its decoded fields.
# Written for arrays too: a region an instruction touches only sometimes is always listed,
# with no words when it is not touched (`Instr.footprint` leaves those out).


def _strided(mem, start, rows, cols, stride) -> Region:
    return Region(mem, start, cols, rows, stride)


def _dense(mem, start, words) -> Region:
    return Region(mem, start, words)


def _only_if(cond, words):
    """`words` where `cond` holds, else none."""
    return words * (cond != 0)


def _load_footprint(f: Fields) -> Footprint:
    reads = (_strided(Mem.DRAM, f["dram"], f["rows"], f["cols"], f["stride"]),)
    writes = (_dense(f["mem"], f["local"], f["rows"] * f["cols"]),)
    return reads, writes


def _store_footprint(f: Fields) -> Footprint:
    reads, writes = _load_footprint(f)
    return writes, reads


def _operand_words(elements, int8: bool):
    """Words of `elements` matrix operands: four to a word when int8 (the packed
    dimension, k of A and n of W, is a multiple of 4)."""
    return ceil_div(elements, 4) if int8 else elements


def _matmul_footprint(f: Fields, int8: bool = False) -> Footprint:
    m, k, n = f["m"], f["k"], f["n"]  # W is k*n elements whether or not it is transposed
    reads = (_dense(Mem.SPAD, f["a"], _operand_words(m * k, int8)),
             _dense(Mem.SPAD, f["w"], _operand_words(k * n, int8)),
             _dense(Mem.ACC, f["out"], _only_if(f["accumulate"], m * n)))
    return reads, (_dense(Mem.ACC, f["out"], m * n),)


def _spmatmul_footprint(f: Fields, int8: bool = False) -> Footprint:
    m, k, n = f["m"], f["k"], f["n"]
    kc = nm_format.compressed_rows(k, f["pat_n"], f["pat_m"])
    reads = (_dense(Mem.SPAD, f["a"], _operand_words(m * k, int8)),
             _dense(Mem.SPAD, f["w"], _operand_words(kc * n, int8)),
             _dense(Mem.SPAD, f["idx"], nm_format.index_rows(kc, f["pat_m"]) * n),
             _dense(Mem.ACC, f["out"], _only_if(f["accumulate"], m * n)))
    return reads, (_dense(Mem.ACC, f["out"], m * n),)


def _vbin_footprint(f: Fields) -> Footprint:
    words = f["rows"] * f["cols"]
    b_words = where(f["bcast"], f["cols"], words)
    reads = (_dense(f["a_mem"], f["a"], words), _dense(f["b_mem"], f["b"], b_words))
    return reads, (_dense(f["dst_mem"], f["dst"], words),)


def _vun_footprint(f: Fields) -> Footprint:
    words = f["rows"] * f["cols"]
    dst_words = where(f["fn"] == VUnFn.QUANT, ceil_div(words, 4), words)  # int8: 4 a word
    return (_dense(f["src_mem"], f["src"], words),), (_dense(f["dst_mem"], f["dst"], dst_words),)


def _vrow_footprint(f: Fields) -> Footprint:
    words = f["rows"] * f["cols"]
    reads = (_dense(f["src_mem"], f["src"], words),
             _dense(Mem.SPAD, f["param"], _only_if(
                 (f["fn"] == VRowFn.LAYERNORM) | (f["fn"] == VRowFn.RESCALE), 2 * f["cols"])))
    return reads, (_dense(f["dst_mem"], f["dst"], words),)


def _table_region(f: Fields) -> Region:
    """The DRAM side of a gathered/scattered DMA: all `limit` blocks an index may name
    (the indices are data, so this bound is what the dependency analysis can know)."""
    return _strided(Mem.DRAM, f["dram"], f["limit"], f["block"], f["stride"])


def _gathered(f: Fields) -> tuple[Region, Region]:
    """The on-chip side of a gathered/scattered DMA: the packed blocks, and the indices."""
    return (_dense(f["mem"], f["local"], f["count"] * f["block"]),
            _dense(Mem.SPAD, f["idx"], f["count"]))


def _gload_footprint(f: Fields) -> Footprint:
    packed, idx = _gathered(f)
    return (_table_region(f), idx), (packed,)


def _gstore_footprint(f: Fields) -> Footprint:
    packed, idx = _gathered(f)
    return (packed, idx), (_table_region(f),)


def _vred_footprint(f: Fields) -> Footprint:
    reads = (_dense(f["src_mem"], f["src"], f["rows"] * f["cols"]),)
    return reads, (_dense(f["dst_mem"], f["dst"], f["rows"]),)


def _topk_footprint(f: Fields) -> Footprint:
    return ((_dense(f["src_mem"], f["src"], f["n"]),),
            (_dense(f["dst_mem"], f["dst"], f["k"]),))


def _no_footprint(f: Fields) -> Footprint:
    return (), ()


# --------------------------------------------------------------------------------------
# Work: the multiply-accumulates of the matrix unit and the words the DMA moves.


def _matmul_macs(f: Fields):
    return f["m"] * f["k"] * f["n"]


def _spmatmul_macs(f: Fields):
    """The MACs of the kept weights only."""
    return f["m"] * nm_format.compressed_rows(f["k"], f["pat_n"], f["pat_m"]) * f["n"]


def _no_macs(f: Fields):
    return 0


def _block_words(f: Fields):
    """The words a 2-D DMA moves."""
    return f["rows"] * f["cols"]


def _gathered_words(f: Fields):
    """The words a gathered/scattered DMA moves: its blocks, not the whole table."""
    return f["count"] * f["block"]


def _no_traffic(f: Fields):
    return 0, 0


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

# Matrix tiles: OUT (+)= A.W, A [m x k], W [k x n], OUT [m x n] in ACC.
_OUT = _addr("out", "acc address of OUT, [m x n] row-major")
_ACCUMULATE = Field("accumulate", 1, doc="1: OUT += A.W; 0: OUT = A.W")


def _matrix_dims(k_doc: str) -> tuple[Field, ...]:
    return _dim("m", "rows of A and OUT"), _dim("k", k_doc), _dim("n", "columns of W and OUT")


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


def _dma_op(opcode: int, mnemonic: str, unit: Unit, fields: tuple[Field, ...], doc: str,
            footprint, words: Callable[[Fields], Any]) -> OpSpec:
    """A DMA instruction: the LOAD unit moves `words` from DRAM, the STORE unit to DRAM."""
    if unit == Unit.LOAD:
        traffic = lambda f: (words(f), 0)  # noqa: E731
    else:
        traffic = lambda f: (0, words(f))  # noqa: E731
    return OpSpec(opcode, mnemonic, unit, fields, doc,
                  footprint=footprint, macs=_no_macs, dram_traffic=traffic)


def _block_op(opcode: int, mnemonic: str, fn: Field, doc: str, footprint, *,
              dst_doc: str = "destination", before_shape: tuple[Field, ...] = (),
              after_shape: tuple[Field, ...] = ()) -> OpSpec:
    """A vector instruction computing block dst from block src of [rows x cols] words."""
    fields = (fn, *_dst_src(dst_doc), *before_shape, *_VEC_SHAPE, *after_shape)
    return OpSpec(opcode, mnemonic, Unit.VECTOR, fields, doc,
                  footprint=footprint, macs=_no_macs, dram_traffic=_no_traffic)


HALT = OpSpec(0x01, "halt", Unit.CONTROL, (), "end of the instruction stream",
              footprint=_no_footprint, macs=_no_macs, dram_traffic=_no_traffic)
LOAD, STORE, GLOAD, GSTORE = (
    _dma_op(opcode, mnemonic, unit, fields, doc, footprint, words)
    for opcode, mnemonic, unit, fields, footprint, words, doc in (
        (0x02, "load", Unit.LOAD, _DMA_FIELDS, _load_footprint, _block_words,
         "2-D strided DMA from DRAM into a contiguous on-chip block"),
        (0x03, "store", Unit.STORE, _DMA_FIELDS, _store_footprint, _block_words,
         "2-D strided DMA from a contiguous on-chip block to DRAM"),
        (0x04, "gload", Unit.LOAD, _GATHER_FIELDS, _gload_footprint, _gathered_words,
         "gathered DMA: block i of the on-chip destination is DRAM table block idx[i]"),
        (0x05, "gstore", Unit.STORE, _GATHER_FIELDS, _gstore_footprint, _gathered_words,
         "scattered DMA: DRAM table block idx[i] becomes block i of the on-chip source"),
    )
)
MATMUL = OpSpec(
    0x10, "matmul", Unit.MATRIX,
    (
        _addr("a", "spad address of A, [m x k] row-major"),
        _addr("w", "spad address of W: [k x n] row-major, or [n x k] with transpose_w"),
        _OUT, *_matrix_dims("reduction length"), _ACCUMULATE,
        Field("transpose_w", 1,
              doc="1: W is stored [n x k] row-major and the product is A.W^T "
                  "(attention scores q.k^T)"),
    ),
    "dense matrix tile on the matrix unit",
    footprint=_matmul_footprint, macs=_matmul_macs, dram_traffic=_no_traffic,
)
SPMATMUL = OpSpec(
    0x11, "spmatmul", Unit.MATRIX,
    (
        _addr("a", "spad address of A, [m x k] row-major (dense activations)"),
        _addr("w", "spad address of the kept weights of W: [k*N/M x n] row-major; "
                   "compressed row r belongs to group r / N (rows r*M/N.. of dense W)"),
        _addr("idx", "spad address of the in-group indices of W's kept weights: "
                     "[ceil(k*N/M / P) x n] 32-bit words, P = 32 / ceil(log2 M); word "
                     "(r, j) holds the indices of compressed rows r*P+i at bits "
                     "i*b .. i*b+b-1 (b = ceil(log2 M))"),
        _OUT, *_matrix_dims("reduction length of the dense product (a multiple of M)"),
        Field("pat_n", 8, doc="N of the N:M pattern: weights kept per group"),
        Field("pat_m", 8, doc="M of the N:M pattern: group length along k (>= 2)"),
        _ACCUMULATE,
    ),
    "N:M structured-sparse matrix tile: OUT (+)= A.W with W stored as kept values "
    "plus in-group indices; element (r, j) of W multiplies "
    "A[:, (r / N) * M + idx(r, j)]",
    footprint=_spmatmul_footprint, macs=_spmatmul_macs, dram_traffic=_no_traffic,
)
_INT8_DOC = ("int8 A [m x k] (four to a word along k) and W (four to a word along n; k and "
             "n multiples of 4), OUT int32, accumulated exactly (docs/INT8.md): ")
IMATMUL = OpSpec(
    0x12, "imatmul", Unit.MATRIX,
    (
        _addr("a", "spad address of A, [m x k/4] words (int8, 4 a word)"),
        _addr("w", "spad address of W, [k x n/4] words (int8, 4 a word)"),
        _addr("out", "acc address of OUT, [m x n] int32 words row-major"),
        *_matrix_dims("reduction length (a multiple of 4)"), _ACCUMULATE,
    ),
    _INT8_DOC + "the int8 form of matmul",
    footprint=lambda f: _matmul_footprint(f, True), macs=_matmul_macs,
    dram_traffic=_no_traffic,
)
ISPMATMUL = OpSpec(
    0x13, "ispmatmul", Unit.MATRIX,
    tuple(f for f in SPMATMUL.fields),
    _INT8_DOC + "the int8 form of spmatmul: the kept values are int8 (4 a word along n), "
                "their index words as in spmatmul",
    footprint=lambda f: _spmatmul_footprint(f, True), macs=_spmatmul_macs,
    dram_traffic=_no_traffic,
)
VBIN = OpSpec(
    0x20, "vbin", Unit.VECTOR,
    (
        Field("fn", 4, "enum", VBinFn, "the elementwise function"),
        _mem("dst_mem", "memory of dst"), _addr("dst", "destination"),
        _mem("a_mem", "memory of a"), _addr("a", "first operand"),
        _mem("b_mem", "memory of b"), _addr("b", "second operand"),
        *_VEC_SHAPE,
        Field("bcast", 1, doc="1: b is one row of cols words, broadcast over all rows"),
    ),
    "dst = fn(a, b), elementwise over a [rows x cols] block",
    footprint=_vbin_footprint, macs=_no_macs, dram_traffic=_no_traffic,
)
VUN = _block_op(0x21, "vun", Field("fn", 4, "enum", VUnFn, "the elementwise function"),
                "dst = fn(src), elementwise over a [rows x cols] block", _vun_footprint,
                after_shape=(Field("imm", 32, "f32",
                                   doc="scalar operand (SCALE; QUANT: 1 / the scale)"),))
VROW = _block_op(
    0x22, "vrow", Field("fn", 4, "enum", VRowFn, "the row function"),
    "a function of whole rows (normalisation, softmax) over a [rows x cols] block",
    _vrow_footprint,
    before_shape=(_addr("param", "spad address of per-column parameters "
                                 "(layernorm: gamma then beta; rescale: (int32 bias, f32 "
                                 "scale) per column)"),),
    after_shape=(Field("imm", 32, "f32", doc="scalar (layernorm: eps; softmax: input scale)"),),
)
VRED = _block_op(
    0x23, "vred", Field("fn", 4, "enum", VRedFn, "the reduction"),
    "dst[r] = fn(src[r, :]): each row of a [rows x cols] block reduced to one word "
    "(window scores: mean |x| per token, then the L2 norm per window)",
    _vred_footprint, dst_doc="destination: rows words",
)
TOPK = OpSpec(
    0x24, "topk", Unit.VECTOR,
    (
        *_dst_src(dst_doc="destination: k indices", src_doc="source: n scores"),
        _dim("n", "scores"),
        _dim("k", "indices written (k <= n)"),
    ),
    "dst = the indices (as f32 integers) of the k largest of n scores, largest first; "
    "ties go to the lower index and NaN ranks above every number (torch.sort "
    "descending, stable)",
    footprint=_topk_footprint, macs=_no_macs, dram_traffic=_no_traffic,
)

OPS: tuple[OpSpec, ...] = (HALT, LOAD, STORE, GLOAD, GSTORE, MATMUL, SPMATMUL, IMATMUL,
                           ISPMATMUL, VBIN, VUN, VROW, VRED, TOPK)

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
        """The regions it reads and writes that hold at least one word. Raises ValueError
        when a memory field names no memory."""
        reads, writes = self.spec.footprint(self.fields)
        return _touched(reads), _touched(writes)

    def with_fields(self, **values: int) -> "Instr":
        return Instr.make(self.mnemonic, **{**self.fields, **values})


_MEMS = frozenset(int(m) for m in Mem)


def _touched(regions: tuple[Region, ...]) -> tuple[Region, ...]:
    touched = tuple(r for r in regions if r.words > 0)
    for r in touched:
        if r.mem not in _MEMS:
            raise ValueError(f"{r.mem} is not a valid Mem")
    return touched

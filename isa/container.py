"""The prog.bin container: a compiled program and everything needed to run and debug it.

The byte layout is specified in docs/PROGRAM_FORMAT.md. This module is the only code that
knows it. A prog.bin comes from disk and is executed by the emulator, so the reader trusts
nothing: every malformation is a `ProgramFormatError` with a one-line message naming the
file and what is wrong, raised before any instruction runs (decoding errors of the
instruction section are `DecodeError`s). The writer runs the same `validate_program` check
as the reader, so it never produces a file the reader rejects, and writes atomically.

Serialisation is canonical (fixed section order, sorted-key compact JSON), so equal programs
give identical bytes; the assembler's round-trip guarantee relies on this.
"""

from __future__ import annotations

import json
import math
import os
import struct
import zlib
from dataclasses import dataclass, field
from enum import IntEnum
from pathlib import Path
from typing import Any, Literal

import numpy as np

from nmc.isa.encoding import DecodeError, decode_stream, encode_stream
from nmc.common.errors import NmcError
from nmc.common.fileio import atomic_write_bytes
from nmc.common.json_strict import parse_json
from nmc.isa.table import Instr

MAGIC = b"NMCPROG\0"
FORMAT_VERSION = 1
TARGET_NAME_BYTES = 32
SYMBOL_KINDS = ("input", "output")
SYMBOL_DTYPES = ("f32",)
MAX_SYMBOL_RANK = 32  # numpy's limit (NPY_MAXDIMS) before numpy 2

_HEADER = struct.Struct("<8sHHI32sQI")  # magic, version, flags, target id, name, dram_words, nsections
_SECTION = struct.Struct("<IQQI")  # kind, offset, size, crc32
_CONST_HEAD = struct.Struct("<QQ")  # dram addr, word count
_F32 = np.dtype("<f4")


class ProgramFormatError(NmcError):
    """A prog.bin (or a Program about to be written) that is malformed, or a prog.bin file
    that cannot be read or written (the message then carries the OS's reason)."""


class Section(IntEnum):
    INSTR = 1
    CONST = 2
    SYMBOLS = 3
    DEBUG = 4
    META = 5


@dataclass(frozen=True)
class Symbol:
    """A named program input or output: a dense row-major f32 tensor at `addr` in DRAM."""

    name: str
    kind: Literal["input", "output"]
    shape: tuple[int, ...]
    dtype: Literal["f32"] = "f32"
    addr: int = 0

    @property
    def words(self) -> int:
        return math.prod(self.shape)


@dataclass(frozen=True)
class LayerRange:
    """Instructions [start_pc, end_pc) were generated for model layer `name` (of `kind`)."""

    name: str
    kind: str
    start_pc: int
    end_pc: int


@dataclass(eq=False)
class Program:
    """A compiled program. `constants` are (DRAM word address, 1-D float32 array) pairs that
    the loader writes to DRAM before execution."""

    target_name: str
    target_id: int
    dram_words: int
    instructions: list[Instr] = field(default_factory=list)
    constants: list[tuple[int, np.ndarray]] = field(default_factory=list)
    symbols: list[Symbol] = field(default_factory=list)
    debug: list[LayerRange] = field(default_factory=list)
    meta: dict[str, Any] = field(default_factory=dict)

    def __eq__(self, other: object) -> bool:
        # Constants compare by their exact bits (NaN payloads included).
        if not isinstance(other, Program):
            return NotImplemented
        return (
            (self.target_name, self.target_id, self.dram_words, self.instructions)
            == (other.target_name, other.target_id, other.dram_words, other.instructions)
            and _const_key(self.constants) == _const_key(other.constants)
            and (self.symbols, self.debug, self.meta) == (other.symbols, other.debug, other.meta)
        )


def _const_key(constants) -> list[tuple[int, bytes]]:
    return [(int(a), np.asarray(d, dtype=_F32).tobytes()) for a, d in constants]


# --------------------------------------------------------------------------------------
# Validation shared by the writer and the reader.


def _is_int(v: object) -> bool:
    return isinstance(v, (int, np.integer)) and not isinstance(v, bool)


def validate_program(p: Program) -> None:
    """Raise ProgramFormatError (message without a file name) unless `p` can be stored and
    run: header fields in range, constants and symbols inside DRAM, constants not
    overlapping, debug ranges inside the instruction stream, meta JSON-serialisable."""
    name = p.target_name
    if not isinstance(name, str) or not name or "\0" in name:
        raise ProgramFormatError(f"target name {name!r} must be a non-empty string without NUL")
    try:
        encoded = name.encode("utf-8")
    except UnicodeEncodeError:
        raise ProgramFormatError(f"target name {name!r} is not encodable as UTF-8") from None
    if len(encoded) > TARGET_NAME_BYTES:
        raise ProgramFormatError(
            f"target name '{name}' is {len(encoded)} bytes (at most {TARGET_NAME_BYTES})"
        )
    if not _is_int(p.target_id) or not 0 <= p.target_id < 1 << 32:
        raise ProgramFormatError(f"target id {p.target_id!r} does not fit 32 bits")
    if not _is_int(p.dram_words) or not 0 <= p.dram_words < 1 << 64:
        raise ProgramFormatError(f"dram_words {p.dram_words!r} does not fit 64 bits")
    _validate_constants(p)
    _validate_symbols(p)
    _validate_debug(p)
    if not isinstance(p.meta, dict) or not all(isinstance(k, str) for k in p.meta):
        raise ProgramFormatError("meta must be a dict with string keys")
    try:
        canonical_json(p.meta)
    except (TypeError, ValueError, RecursionError) as e:
        raise ProgramFormatError(f"meta is not JSON-serialisable: {e}") from None


def _validate_constants(p: Program) -> None:
    spans = []
    for i, c in enumerate(p.constants):
        if not isinstance(c, tuple) or len(c) != 2:
            raise ProgramFormatError(f"constant #{i} is not an (addr, data) pair")
        addr, data = c
        if not _is_int(addr) or addr < 0:
            raise ProgramFormatError(f"constant #{i}: address {addr!r} is not a word address")
        if not isinstance(data, np.ndarray) or data.dtype != np.float32 or data.ndim != 1:
            raise ProgramFormatError(f"constant #{i} at {addr:#x}: data must be a 1-D float32 array")
        end = addr + data.size
        if end > p.dram_words:
            raise ProgramFormatError(
                f"constant #{i} [{addr:#x}, {end:#x}) lies outside DRAM ({p.dram_words:#x} words)"
            )
        if data.size:
            spans.append((addr, end, i))
    spans.sort()
    for (_, end_a, i), (start_b, _, j) in zip(spans, spans[1:]):
        if start_b < end_a:
            raise ProgramFormatError(f"constants #{i} and #{j} overlap at DRAM word {start_b:#x}")


def _validate_symbols(p: Program) -> None:
    seen = set()
    for s in p.symbols:
        if not isinstance(s, Symbol):
            raise ProgramFormatError(f"symbol {s!r} is not a Symbol")
        what = f"symbol '{s.name}'"
        if not isinstance(s.name, str) or not s.name:
            raise ProgramFormatError(f"symbol name {s.name!r} must be a non-empty string")
        if s.kind not in SYMBOL_KINDS:
            raise ProgramFormatError(f"{what} has kind {s.kind!r} (expected input or output)")
        if (s.kind, s.name) in seen:
            raise ProgramFormatError(f"duplicate {s.kind} {what}")
        seen.add((s.kind, s.name))
        if s.dtype not in SYMBOL_DTYPES:
            raise ProgramFormatError(f"{what} has dtype {s.dtype!r} (expected f32)")
        if not isinstance(s.shape, tuple) or not all(_is_int(d) and d >= 0 for d in s.shape):
            raise ProgramFormatError(f"{what} has bad shape {s.shape!r}")
        if len(s.shape) > MAX_SYMBOL_RANK:
            raise ProgramFormatError(
                f"{what} has {len(s.shape)} dimensions (at most {MAX_SYMBOL_RANK})"
            )
        if not _is_int(s.addr) or s.addr < 0:
            raise ProgramFormatError(f"{what} has bad address {s.addr!r}")
        if s.addr + s.words > p.dram_words:
            raise ProgramFormatError(
                f"{what} [{s.addr:#x}, {s.addr + s.words:#x}) lies outside DRAM "
                f"({p.dram_words:#x} words)"
            )
        # An empty tensor (a 0 dimension) occupies no words, but its other dimensions must
        # still be sizes an array can have: bounded like the words of a non-empty one.
        if math.prod(d for d in s.shape if d) > max(p.dram_words, 1):
            raise ProgramFormatError(
                f"{what} has shape {list(s.shape)}, larger than DRAM ({p.dram_words:#x} words)"
            )


def _validate_debug(p: Program) -> None:
    n = len(p.instructions)
    for r in p.debug:
        if not isinstance(r, LayerRange):
            raise ProgramFormatError(f"debug entry {r!r} is not a LayerRange")
        if not isinstance(r.name, str) or not isinstance(r.kind, str):
            raise ProgramFormatError(f"debug entry {r!r}: name and kind must be strings")
        ok = _is_int(r.start_pc) and _is_int(r.end_pc) and 0 <= r.start_pc <= r.end_pc <= n
        if not ok:
            raise ProgramFormatError(
                f"layer '{r.name}' pc range [{r.start_pc}, {r.end_pc}) is not inside "
                f"the {n} instructions"
            )


# --------------------------------------------------------------------------------------
# JSON sections: canonical text out, strict parsing in.


def canonical_json(value: Any) -> str:
    """The one JSON spelling used for prog.bin sections (and `.meta` in assembly)."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False)


def _symbols_json(p: Program) -> list:
    return [
        {"name": s.name, "kind": s.kind, "shape": [int(d) for d in s.shape], "dtype": s.dtype,
         "addr": int(s.addr)}
        for s in p.symbols
    ]


def _debug_json(p: Program) -> list:
    return [
        {"name": r.name, "kind": r.kind, "start_pc": int(r.start_pc), "end_pc": int(r.end_pc)}
        for r in p.debug
    ]


def _records(value: Any, section: str, keys: dict[str, type]) -> list[dict]:
    """Check a JSON list of objects with exactly `keys` (of the given JSON types)."""
    if not isinstance(value, list):
        raise ProgramFormatError(f"section {section}: expected a JSON list")
    for i, rec in enumerate(value):
        if not isinstance(rec, dict) or set(rec) != set(keys):
            raise ProgramFormatError(
                f"section {section}: entry #{i} must be an object with keys {', '.join(keys)}"
            )
        for k, t in keys.items():
            v = rec[k]
            if not isinstance(v, t) or isinstance(v, bool):
                raise ProgramFormatError(
                    f"section {section}: entry #{i} field '{k}' must be {t.__name__}, got {v!r}"
                )
    return value


def _parse_symbols(value: Any) -> list[Symbol]:
    recs = _records(value, "SYMBOLS", {"name": str, "kind": str, "shape": list, "dtype": str, "addr": int})
    out = []
    for rec in recs:
        shape = rec["shape"]
        if not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape):
            raise ProgramFormatError(f"symbol '{rec['name']}' has bad shape {shape!r}")
        out.append(Symbol(rec["name"], rec["kind"], tuple(shape), rec["dtype"], rec["addr"]))
    return out


def _parse_debug(value: Any) -> list[LayerRange]:
    recs = _records(value, "DEBUG", {"name": str, "kind": str, "start_pc": int, "end_pc": int})
    return [LayerRange(r["name"], r["kind"], r["start_pc"], r["end_pc"]) for r in recs]


def _parse_meta(value: Any) -> dict:
    if not isinstance(value, dict):
        raise ProgramFormatError("section META: expected a JSON object")
    return value


# --------------------------------------------------------------------------------------
# Writing.


def _const_bytes(p: Program) -> bytes:
    parts = []
    for addr, data in p.constants:
        parts.append(_CONST_HEAD.pack(int(addr), data.size))
        parts.append(data.astype(_F32, copy=False).tobytes())
    return b"".join(parts)


def program_to_bytes(p: Program) -> bytes:
    """The canonical prog.bin bytes of `p`. Raises ProgramFormatError if `p` is invalid
    and EncodeError if an instruction cannot be encoded."""
    validate_program(p)
    sections = [
        (Section.INSTR, encode_stream(p.instructions)),
        (Section.CONST, _const_bytes(p)),
        (Section.SYMBOLS, canonical_json(_symbols_json(p)).encode("ascii")),
        (Section.DEBUG, canonical_json(_debug_json(p)).encode("ascii")),
        (Section.META, canonical_json(p.meta).encode("ascii")),
    ]
    offset = _HEADER.size + _SECTION.size * len(sections)
    table = []
    for kind, body in sections:
        table.append(_SECTION.pack(kind, offset, len(body), zlib.crc32(body)))
        offset += len(body)
    header = _HEADER.pack(
        MAGIC, FORMAT_VERSION, 0, p.target_id,
        p.target_name.encode("utf-8"), p.dram_words, len(sections),
    )
    return b"".join([header, *table, *(body for _, body in sections)])


def write_program(p: Program, path: str | os.PathLike) -> None:
    """Validate and write `p` to `path` atomically (see nmc.common.fileio)."""
    atomic_write_bytes(path, program_to_bytes(p))  # validates before touching the disk


# --------------------------------------------------------------------------------------
# Reading.


def _header(data: bytes) -> tuple[str, int, int, int]:
    if data[: len(MAGIC)] != MAGIC:
        if MAGIC.startswith(data[: len(MAGIC)]):
            raise ProgramFormatError(f"truncated header ({len(data)} of {_HEADER.size} bytes)")
        raise ProgramFormatError(f"wrong magic {data[:8]!r} (not a prog.bin, expected {MAGIC!r})")
    if len(data) < _HEADER.size:
        raise ProgramFormatError(f"truncated header ({len(data)} of {_HEADER.size} bytes)")
    _, version, flags, target_id, raw_name, dram_words, count = _HEADER.unpack_from(data)
    if version != FORMAT_VERSION:
        raise ProgramFormatError(
            f"unsupported format version {version} (this nmc reads version {FORMAT_VERSION})"
        )
    if flags != 0:
        raise ProgramFormatError(f"unsupported flags {flags:#06x} (expected 0)")
    name_bytes = raw_name.rstrip(b"\0")
    if not name_bytes or b"\0" in name_bytes:
        raise ProgramFormatError("target name in header is empty or not NUL-padded")
    try:
        name = name_bytes.decode("utf-8")
    except UnicodeDecodeError:
        raise ProgramFormatError("target name in header is not valid UTF-8") from None
    return name, target_id, dram_words, count


def _sections(data: bytes, count: int) -> dict[Section, bytes]:
    """The body of every section, after checking that the sections tile the rest of the
    file exactly (in bounds, no overlap, no gap, nothing trailing) and match their CRCs."""
    table_end = _HEADER.size + _SECTION.size * count
    if table_end > len(data):
        raise ProgramFormatError(
            f"truncated section table ({count} sections need {table_end} bytes, "
            f"file has {len(data)})"
        )
    entries = []
    seen: set[Section] = set()
    for i in range(count):
        kind_id, offset, size, crc = _SECTION.unpack_from(data, _HEADER.size + i * _SECTION.size)
        if kind_id not in Section._value2member_map_:
            raise ProgramFormatError(f"section #{i} has unknown kind {kind_id}")
        kind = Section(kind_id)
        if kind in seen:
            raise ProgramFormatError(f"duplicate {kind.name} section")
        seen.add(kind)
        if offset < table_end or offset + size > len(data):
            raise ProgramFormatError(
                f"section {kind.name} [{offset}, {offset + size}) out of bounds "
                f"(sections must lie in [{table_end}, {len(data)}))"
            )
        entries.append((offset, size, kind, crc))
    if Section.INSTR not in seen:
        raise ProgramFormatError("missing INSTR section")
    entries.sort()
    covered = table_end
    for offset, size, kind, _ in entries:
        if offset < covered:
            raise ProgramFormatError(f"section {kind.name} at offset {offset} overlaps the previous section")
        if offset > covered:
            raise ProgramFormatError(f"{offset - covered} unaccounted bytes at offset {covered}")
        covered = offset + size
    if covered != len(data):
        raise ProgramFormatError(f"{len(data) - covered} trailing bytes after the last section")
    bodies = {}
    for offset, size, kind, crc in entries:
        body = data[offset : offset + size]
        if zlib.crc32(body) != crc:
            raise ProgramFormatError(f"checksum mismatch in section {kind.name}")
        bodies[kind] = body
    return bodies


def _json_section(bodies: dict[Section, bytes], kind: Section, empty: Any) -> Any:
    if kind not in bodies:
        return empty
    try:
        return parse_json(bodies[kind].decode("utf-8"))
    except UnicodeDecodeError:
        raise ProgramFormatError(f"bad JSON in section {kind.name}: not UTF-8") from None
    except ValueError as e:
        raise ProgramFormatError(f"bad JSON in section {kind.name}: {e}") from None


def _constants(body: bytes) -> list[tuple[int, np.ndarray]]:
    out, pos = [], 0
    while pos < len(body):
        if pos + _CONST_HEAD.size > len(body):
            raise ProgramFormatError(
                f"section CONST: truncated header of constant #{len(out)} at byte {pos}"
            )
        addr, count = _CONST_HEAD.unpack_from(body, pos)
        pos += _CONST_HEAD.size
        if count > (len(body) - pos) // 4:
            raise ProgramFormatError(
                f"section CONST: constant #{len(out)} at {addr:#x} claims {count} words, "
                f"only {(len(body) - pos) // 4} remain"
            )
        out.append((addr, np.frombuffer(body, _F32, count, pos).astype(np.float32)))
        pos += 4 * count
    return out


def _parse(data: bytes) -> Program:
    name, target_id, dram_words, count = _header(data)
    bodies = _sections(data, count)
    p = Program(
        target_name=name,
        target_id=target_id,
        dram_words=dram_words,
        instructions=decode_stream(bodies[Section.INSTR]),
        constants=_constants(bodies.get(Section.CONST, b"")),
        symbols=_parse_symbols(_json_section(bodies, Section.SYMBOLS, [])),
        debug=_parse_debug(_json_section(bodies, Section.DEBUG, [])),
        meta=_parse_meta(_json_section(bodies, Section.META, {})),
    )
    validate_program(p)
    return p


def program_from_bytes(data: bytes, source: str = "<bytes>") -> Program:
    """Parse and validate a prog.bin. Raises ProgramFormatError (DecodeError for a bad
    instruction word), its message prefixed with `source`."""
    try:
        return _parse(bytes(data))
    except DecodeError as e:
        raise DecodeError(f"{source}: section INSTR: {e}") from None
    except ProgramFormatError as e:
        raise ProgramFormatError(f"{source}: {e}") from None


def read_program(path: str | os.PathLike) -> Program:
    """Read and validate the prog.bin at `path`."""
    try:
        with open(path, "rb") as f:
            # The magic first: a file that is not a prog.bin (or /dev/zero, a terminal...)
            # is refused before reading the rest of it.
            data = f.read(len(MAGIC))
            if data == MAGIC:
                data += f.read()
    except OSError as e:
        raise ProgramFormatError(f"cannot read {path}: {e.strerror or e}") from None
    return program_from_bytes(data, str(path))

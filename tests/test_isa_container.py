"""prog.bin: round trips, the byte layout of docs/PROGRAM_FORMAT.md, and that every
malformed file is rejected with a ProgramFormatError/DecodeError that says what is wrong."""

import json
import os
import struct
import zlib

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from isa_strategies import programs
from nmc.common.fileio import OutputError
from nmc.isa.container import (
    LayerRange,
    Program,
    ProgramFormatError,
    Symbol,
    program_from_bytes,
    program_to_bytes,
    read_program,
    write_program,
)
from nmc.isa.encoding import DecodeError, encode
from nmc.common.errors import NmcError
from nmc.isa.table import Instr

# The layout, restated from docs/PROGRAM_FORMAT.md (not imported, so the tests check it).
HEADER = struct.Struct("<8sHHI32sQI")
ENTRY = struct.Struct("<IQQI")
INSTR, CONST, SYMBOLS, DEBUG, META = 1, 2, 3, 4, 5
NAMES = {1: "INSTR", 2: "CONST", 3: "SYMBOLS", 4: "DEBUG", 5: "META"}


def sample_program() -> Program:
    return Program(
        target_name="sta-ref",
        target_id=1,
        dram_words=4096,
        instructions=[
            Instr.make("load", signal=0b0100, mem=1, dram=0x100, rows=2, cols=8, stride=8),
            Instr.make("matmul", wait=0b0001, m=2, k=8, n=4, w=16),
            Instr.make("halt"),
        ],
        constants=[(0x100, np.arange(16, dtype=np.float32)), (0x200, np.array([np.nan, -0.0], np.float32))],
        symbols=[Symbol("x", "input", (2, 8), "f32", 0x100), Symbol("y", "output", (2, 4), "f32", 0x300)],
        debug=[LayerRange("fc1", "linear", 0, 2)],
        meta={"opt_level": 2, "model": "vit.pt"},
    )


def split(data: bytes):
    """(header tuple, [[kind, body], ...]) of a well-formed file."""
    header = list(HEADER.unpack_from(data))
    sections = []
    for i in range(header[-1]):
        kind, off, size, _ = ENTRY.unpack_from(data, HEADER.size + i * ENTRY.size)
        sections.append([kind, data[off : off + size]])
    return header, sections


def build(header, sections, fix_crc=True) -> bytes:
    """A file from parts, laid out as the writer does (CRCs recomputed unless told not to)."""
    header = list(header)
    header[-1] = len(sections)
    offset = HEADER.size + ENTRY.size * len(sections)
    table, bodies = [], []
    for kind, body, *crc in sections:
        table.append(ENTRY.pack(kind, offset, len(body), zlib.crc32(body) if fix_crc or not crc else crc[0]))
        bodies.append(body)
        offset += len(body)
    return HEADER.pack(*header) + b"".join(table) + b"".join(bodies)


def edit_section(data: bytes, kind: int, fn) -> bytes:
    header, sections = split(data)
    for s in sections:
        if s[0] == kind:
            s[1] = fn(s[1])
    return build(header, sections)


def edit_header(data: bytes, **changes) -> bytes:
    names = ["magic", "version", "flags", "target_id", "name", "dram_words", "count"]
    header = list(HEADER.unpack_from(data))
    for k, v in changes.items():
        header[names.index(k)] = v
    return HEADER.pack(*header) + data[HEADER.size :]


@pytest.fixture
def good() -> bytes:
    return program_to_bytes(sample_program())


# --------------------------------------------------------------------------------------
# Round trips and layout.


@given(programs())
@settings(suppress_health_check=[HealthCheck.too_slow])
def test_bytes_round_trip(p):
    data = program_to_bytes(p)
    q = program_from_bytes(data)
    assert q == p
    assert program_to_bytes(q) == data


def test_layout_is_as_documented(good):
    p = sample_program()
    magic, version, flags, tid, name, dram, count = HEADER.unpack_from(good)
    assert (magic, version, flags, tid, dram, count) == (b"NMCPROG\0", 1, 0, 1, 4096, 5)
    assert name == b"sta-ref" + bytes(25)
    header, sections = split(good)
    assert [k for k, _ in sections] == [INSTR, CONST, SYMBOLS, DEBUG, META]
    bodies = dict((k, b) for k, b in sections)
    assert bodies[INSTR] == b"".join(encode(i) for i in p.instructions)
    assert bodies[CONST][:16] == struct.pack("<QQ", 0x100, 16)
    assert bodies[CONST][16:80] == np.arange(16, dtype="<f4").tobytes()
    assert json.loads(bodies[SYMBOLS])[0] == {"name": "x", "kind": "input", "shape": [2, 8], "dtype": "f32", "addr": 0x100}
    assert json.loads(bodies[DEBUG]) == [{"name": "fc1", "kind": "linear", "start_pc": 0, "end_pc": 2}]
    assert json.loads(bodies[META]) == {"opt_level": 2, "model": "vit.pt"}
    assert build(header, sections) == good  # no padding, sections back to back


def test_constants_keep_exact_bits(good):
    q = program_from_bytes(good)
    assert q.constants[1][1].view(np.uint32).tolist() == [0x7FC00000, 0x80000000]
    assert q.constants[0][1].dtype == np.float32


def test_optional_sections_may_be_missing(good):
    header, sections = split(good)
    q = program_from_bytes(build(header, [s for s in sections if s[0] == INSTR]))
    assert q.constants == [] and q.symbols == [] and q.debug == [] and q.meta == {}
    assert q.instructions == sample_program().instructions


def test_write_and_read(tmp_path):
    path = tmp_path / "prog.bin"
    write_program(sample_program(), path)
    assert read_program(path) == sample_program()
    assert os.listdir(tmp_path) == ["prog.bin"]


def test_write_is_atomic_on_failure(tmp_path, monkeypatch):
    path = tmp_path / "prog.bin"
    write_program(sample_program(), path)
    before = path.read_bytes()

    def broken_fsync(fd):
        raise OSError(5, "simulated I/O error")

    p = sample_program()
    p.meta = {"changed": True}
    monkeypatch.setattr(os, "fsync", broken_fsync)
    with pytest.raises(OutputError, match=r"^cannot write .*prog.bin: simulated I/O error$"):
        write_program(p, path)
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["prog.bin"]  # the temporary file is gone


def test_write_into_missing_directory(tmp_path):
    with pytest.raises(OutputError, match=r"^cannot write .*/no/such/prog.bin: No such file or directory$"):
        write_program(sample_program(), tmp_path / "no" / "such" / "prog.bin")


def test_write_is_atomic_on_interrupt(tmp_path, monkeypatch):
    path = tmp_path / "prog.bin"
    real_write = os.write

    def interrupted(fd, data):
        real_write(fd, bytes(data[:10]))
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "write", interrupted)
    with pytest.raises(KeyboardInterrupt):
        write_program(sample_program(), path)
    assert os.listdir(tmp_path) == []


def test_invalid_program_is_never_written(tmp_path):
    path = tmp_path / "prog.bin"
    p = sample_program()
    p.constants.append((4095, np.zeros(2, np.float32)))
    with pytest.raises(ProgramFormatError, match=r"constant #2 \[0xfff, 0x1001\) lies outside DRAM \(0x1000 words\)"):
        write_program(p, path)
    assert os.listdir(tmp_path) == []


def test_read_missing_file(tmp_path):
    with pytest.raises(ProgramFormatError, match=r"cannot read .*nope.bin: No such file"):
        read_program(tmp_path / "nope.bin")


def test_error_names_the_file(tmp_path, good):
    path = tmp_path / "bad.bin"
    path.write_bytes(good[:-1])
    with pytest.raises(ProgramFormatError, match=rf"^{path}: 1 trailing bytes|^{path}: section META"):
        read_program(path)


# --------------------------------------------------------------------------------------
# Writer-side validation (the same checks guard the reader).


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda p: setattr(p, "target_name", "x" * 33), "target name 'x+' is 33 bytes"),
        (lambda p: setattr(p, "target_name", ""), "target name '' must be a non-empty string"),
        (lambda p: setattr(p, "target_id", 1 << 32), "target id 4294967296 does not fit 32 bits"),
        (lambda p: p.constants.append((0x108, np.zeros(1, np.float32))), r"constants #0 and #2 overlap at DRAM word 0x108"),
        (lambda p: p.constants.append((0, np.zeros((2, 2), np.float32))), "data must be a 1-D float32 array"),
        (lambda p: p.symbols.append(Symbol("x", "input", (1,), "f32", 0)), "duplicate input symbol 'x'"),
        (lambda p: p.symbols.append(Symbol("z", "weird", (1,), "f32", 0)), "symbol 'z' has kind 'weird'"),
        (lambda p: p.symbols.append(Symbol("z", "input", (64, 65), "f32", 0)), r"symbol 'z' \[0x0, 0x1040\) lies outside DRAM"),
        (lambda p: p.symbols.append(Symbol("z", "input", (-1,), "f32", 0)), r"symbol 'z' has bad shape \(-1,\)"),
        (lambda p: p.debug.append(LayerRange("l", "k", 2, 4)), r"layer 'l' pc range \[2, 4\) is not inside the 3 instructions"),
        (lambda p: setattr(p, "meta", {"x": {1, 2}}), "meta is not JSON-serialisable"),
        (lambda p: setattr(p, "meta", {"x": float("nan")}), "meta is not JSON-serialisable"),
        (lambda p: setattr(p, "meta", {1: 2}), "meta must be a dict with string keys"),
    ],
)
def test_writer_rejects_invalid_program(change, message):
    p = sample_program()
    change(p)
    with pytest.raises(ProgramFormatError, match=message):
        program_to_bytes(p)


# --------------------------------------------------------------------------------------
# Reader-side rejections: one test per class of malformation, checking type and message.

SRC = "prog.bin"


def rejects(data: bytes, message: str, error=ProgramFormatError):
    with pytest.raises(error) as info:
        program_from_bytes(data, SRC)
    text = str(info.value)
    assert "\n" not in text
    assert text.startswith(f"{SRC}: "), text
    assert message in text, text


def test_empty_file():
    rejects(b"", "truncated header (0 of 60 bytes)")


def test_truncated_header(good):
    rejects(good[:30], "truncated header (30 of 60 bytes)")
    rejects(good[:5], "truncated header (5 of 60 bytes)")


def test_wrong_magic(good):
    rejects(b"\x7fELF" + good[4:], "wrong magic b'\\x7fELFROG\\x00' (not a prog.bin")


def test_unsupported_version(good):
    rejects(edit_header(good, version=2), "unsupported format version 2 (this nmc reads version 1)")


def test_unsupported_flags(good):
    rejects(edit_header(good, flags=4), "unsupported flags 0x0004 (expected 0)")


def test_bad_target_name(good):
    rejects(edit_header(good, name=bytes(32)), "target name in header is empty or not NUL-padded")
    rejects(edit_header(good, name=b"a\0b"), "target name in header is empty or not NUL-padded")
    rejects(edit_header(good, name=b"\xff\xfe"), "target name in header is not valid UTF-8")


def test_truncated_section_table(good):
    rejects(good[:70], "truncated section table (5 sections need 180 bytes, file has 70)")
    rejects(edit_header(good, count=1 << 30), "truncated section table (1073741824 sections need")


def test_section_out_of_bounds(good):
    header, sections = split(good)
    data = bytearray(build(header, sections))
    struct.pack_into("<Q", data, HEADER.size + 4 * ENTRY.size + 12, 10**6)  # META size
    rejects(bytes(data), "section META [")
    rejects(bytes(data), "out of bounds (sections must lie in [180, ")
    struct.pack_into("<Q", data, HEADER.size + 4 + 0, 3)  # INSTR offset inside the header
    rejects(bytes(data), "section INSTR [3, 99) out of bounds")


def test_overlapping_sections(good):
    data = bytearray(good)
    _, off, size, crc = ENTRY.unpack_from(good, HEADER.size + ENTRY.size)  # CONST
    struct.pack_into("<Q", data, HEADER.size + ENTRY.size + 4, off - 8)
    rejects(bytes(data), "section CONST at offset 268 overlaps the previous section")


def test_gap_and_trailing_bytes(good):
    rejects(good + b"\0", "1 trailing bytes after the last section")
    data = bytearray(good)
    _, off, _, _ = ENTRY.unpack_from(good, HEADER.size + 4 * ENTRY.size)  # META
    struct.pack_into("<Q", data, HEADER.size + 4 * ENTRY.size + 4, off + 1)
    struct.pack_into("<Q", data, HEADER.size + 4 * ENTRY.size + 12, len(good) - off - 1)
    rejects(bytes(data), f"1 unaccounted bytes at offset {off}")


@pytest.mark.parametrize("kind", [INSTR, CONST, SYMBOLS, DEBUG, META], ids=NAMES.get)
def test_checksum_mismatch(good, kind):
    _, off, size, _ = next(
        e for i in range(5) if (e := ENTRY.unpack_from(good, HEADER.size + i * ENTRY.size))[0] == kind
    )
    data = bytearray(good)
    data[off + size // 2] ^= 0x10
    rejects(bytes(data), f"checksum mismatch in section {NAMES[kind]}")


def test_unknown_duplicate_and_missing_sections(good):
    header, sections = split(good)
    rejects(build(header, sections + [[99, b""]]), "section #5 has unknown kind 99")
    rejects(build(header, sections + [[INSTR, b""]]), "duplicate INSTR section")
    rejects(build(header, sections[1:]), "missing INSTR section")


def test_instruction_stream_errors(good):
    rejects(edit_section(good, INSTR, lambda b: b + b"\0" * 5), "section INSTR: pc 3: instruction stream of 101 bytes is not a multiple of 32", DecodeError)
    bad = bytes([0xEE]) + bytes(31)
    rejects(edit_section(good, INSTR, lambda b: b[:32] + bad + b[64:]), "section INSTR: pc 1: unknown opcode 0xee", DecodeError)
    rejects(edit_section(good, INSTR, lambda b: b[:64] + b"\x01" + bytes(30) + b"\x80"), "section INSTR: pc 2: halt: unused bits [16, 256) are not zero", DecodeError)


def test_truncated_constants(good):
    rejects(edit_section(good, CONST, lambda b: b + b"\0" * 9), "section CONST: truncated header of constant #2 at byte")
    rejects(edit_section(good, CONST, lambda b: b[:-1]), "section CONST: constant #1 at 0x200 claims 2 words, only 1 remain")


def test_constant_and_symbol_outside_dram(good):
    rejects(edit_header(good, dram_words=0x201), "constant #1 [0x200, 0x202) lies outside DRAM (0x201 words)")
    rejects(edit_header(good, dram_words=0x300), "symbol 'y' [0x300, 0x308) lies outside DRAM (0x300 words)")


def json_edit(text: str):
    return lambda _: text.encode()


@pytest.mark.parametrize(
    "kind, text, message",
    [
        (SYMBOLS, "[", "bad JSON in section SYMBOLS: Expecting value"),
        (DEBUG, '[{"a":1,"a":2}]', "bad JSON in section DEBUG: duplicate key 'a'"),
        (META, '{"x":NaN}', "bad JSON in section META: NaN is not JSON"),
        (META, '{"x":1e999}', "bad JSON in section META: number 1e999 overflows a double"),
        (META, "[1]", "section META: expected a JSON object"),
        (META, "[" * 100000, "bad JSON in section META: nested too deeply"),
        (SYMBOLS, "{}", "section SYMBOLS: expected a JSON list"),
        (SYMBOLS, '[{"name":"x"}]', "section SYMBOLS: entry #0 must be an object with keys name, kind, shape, dtype, addr"),
        (SYMBOLS, '[{"name":"x","kind":"input","shape":[2],"dtype":"f32","addr":"0"}]', "section SYMBOLS: entry #0 field 'addr' must be int, got '0'"),
        (SYMBOLS, '[{"name":"x","kind":"input","shape":[2,-1],"dtype":"f32","addr":0}]', "symbol 'x' has bad shape [2, -1]"),
        (SYMBOLS, '[{"name":"x","kind":"input","shape":[true],"dtype":"f32","addr":0}]', "symbol 'x' has bad shape [True]"),
        (SYMBOLS, '[{"name":"x","kind":"input","shape":[1],"dtype":"f16","addr":0}]', "symbol 'x' has dtype 'f16' (expected f32)"),
        (DEBUG, '[{"name":"l","kind":"k","start_pc":2,"end_pc":1}]', "layer 'l' pc range [2, 1) is not inside the 3 instructions"),
    ],
)
def test_bad_json_sections(good, kind, text, message):
    rejects(edit_section(good, kind, json_edit(text)), message)


def test_json_section_not_utf8(good):
    rejects(edit_section(good, META, lambda b: b"\xff"), "bad JSON in section META: not UTF-8")


def test_errors_are_nmc_errors():
    assert issubclass(ProgramFormatError, NmcError)


# --------------------------------------------------------------------------------------
# Fuzzing: mutated files are read or rejected cleanly, never with another exception.


@st.composite
def mutations(draw, data: bytes) -> bytes:
    buf = bytearray(data)
    for _ in range(draw(st.integers(1, 3))):
        op = draw(st.sampled_from(["flip", "truncate", "insert", "delete", "section"]))
        if not buf:
            break
        pos = draw(st.integers(0, len(buf) - 1))
        if op == "flip":
            buf[pos] ^= 1 << draw(st.integers(0, 7))
        elif op == "truncate":
            del buf[pos:]
        elif op == "insert":
            buf[pos:pos] = draw(st.binary(min_size=1, max_size=8))
        elif op == "delete":
            del buf[pos : pos + draw(st.integers(1, 8))]
        else:  # corrupt a section body but fix its CRC, to reach the inner parsers
            try:
                header, sections = split(bytes(buf))
            except struct.error:
                continue
            if not sections:
                continue
            s = sections[draw(st.integers(0, len(sections) - 1))]
            if s[1]:
                body = bytearray(s[1])
                i = draw(st.integers(0, len(body) - 1))
                body[i] = draw(st.integers(0, 255))
                s[1] = bytes(body)
            try:
                buf = bytearray(build(header, sections))
            except struct.error:
                continue
    return bytes(buf)


FUZZ_BASE = program_to_bytes(sample_program())


@given(mutations(FUZZ_BASE))
@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_fuzz_mutated_files(data):
    try:
        p = program_from_bytes(data, "fuzz.bin")
    except (ProgramFormatError, DecodeError) as e:
        assert str(e).startswith("fuzz.bin: ") and "\n" not in str(e)
    else:
        assert isinstance(p, Program)
        program_to_bytes(p)  # whatever reads back is a valid program

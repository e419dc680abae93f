"""Bad prog.bin files given to `nmc run` / `nmc disasm`: truncated, wrong magic, version,
checksum, target; hand-edited instruction streams (out-of-range addresses, unknown opcode,
missing halt, a token protocol that deadlocks). Each is one line `nmc: error: ...` with exit
status 1, naming the pc and the decoded instruction where there is one; never an
IndexError or an endless run (issue 4, class "prog.bin")."""

from __future__ import annotations

import os
import re
import struct
from pathlib import Path

import pytest

from nmc.isa.container import read_program
from robust_helpers import (
    HEADER, SECTION, built, expect_error, expect_process_error, fix_crcs, run_nmc, sections,
    target_toml,
)

INSTR, CONST, SYMBOLS, DEBUG, META = 1, 2, 3, 4, 5


@pytest.fixture()
def prog(tmp_path_factory) -> bytes:
    return (built(tmp_path_factory) / "prog.bin").read_bytes()


@pytest.fixture()
def x(tmp_path_factory) -> Path:
    return built(tmp_path_factory) / "x.npy"


def _write(tmp_path: Path, data: bytes, name: str = "bad.bin") -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


def _run_error(capsys, path: Path, x: Path, *fragments: str, extra=()) -> str:
    out = path.parent / "y.npy"
    line = expect_error(capsys, ["run", path, "--input", x, "-o", out, *extra], *fragments)
    assert not out.exists()
    return line


def _both_error(capsys, path: Path, x: Path, *fragments: str) -> None:
    """`nmc run` and `nmc disasm` reject the file alike."""
    _run_error(capsys, path, x, *fragments)
    expect_error(capsys, ["disasm", path, "-o", path.parent / "p.s"], *fragments)
    assert not (path.parent / "p.s").exists()


# ------------------------------------------------------------------------ container


@pytest.mark.parametrize("keep, message", [
    (0, "truncated header (0 of 60 bytes)"),
    (5, "truncated header (5 of 60 bytes)"),
    (59, "truncated header (59 of 60 bytes)"),
    (60, "truncated section table (5 sections need 180 bytes, file has 60)"),
    (179, "truncated section table"),
    (-1, "out of bounds"),
    (-300, "out of bounds"),
], ids=lambda v: str(v))
def test_truncated(capsys, tmp_path, prog, x, keep, message):
    path = _write(tmp_path, prog[:keep] if keep >= 0 else prog[:keep])
    _both_error(capsys, path, x, f"{path}: ", message)


def test_wrong_magic(capsys, tmp_path, prog, x):
    path = _write(tmp_path, b"\x7fELF\x02\x01\x01\x00" + prog[8:])
    _both_error(capsys, path, x, f"{path}: wrong magic", "not a prog.bin")


def test_text_file(capsys, tmp_path, x, tmp_path_factory):
    """A common mistake: passing the assembly text to `nmc run`."""
    path = built(tmp_path_factory) / "prog.s"
    _run_error(capsys, path, x, "wrong magic", "not a prog.bin")


@pytest.mark.parametrize("version", [0, 2, 0xFFFF])
def test_wrong_version(capsys, tmp_path, prog, x, version):
    data = bytearray(prog)
    struct.pack_into("<H", data, 8, version)
    _both_error(capsys, _write(tmp_path, bytes(data)), x,
                f"unsupported format version {version} (this nmc reads version 1)")


def test_unknown_flags(capsys, tmp_path, prog, x):
    data = bytearray(prog)
    struct.pack_into("<H", data, 10, 4)
    _both_error(capsys, _write(tmp_path, bytes(data)), x, "unsupported flags 0x0004")


@pytest.mark.parametrize("kind, name", [(INSTR, "INSTR"), (CONST, "CONST"), (SYMBOLS, "SYMBOLS"),
                                        (DEBUG, "DEBUG"), (META, "META")])
def test_checksum_mismatch(capsys, tmp_path, prog, x, kind, name):
    _, offset, size = sections(prog)[kind]
    data = bytearray(prog)
    data[offset + size // 2] ^= 0x10
    _both_error(capsys, _write(tmp_path, bytes(data)), x, f"checksum mismatch in section {name}")


def test_trailing_bytes(capsys, tmp_path, prog, x):
    _both_error(capsys, _write(tmp_path, prog + b"\0" * 7), x,
                "7 trailing bytes after the last section")


def test_empty_file_directory_and_missing_file(capsys, tmp_path, x):
    _run_error(capsys, _write(tmp_path, b""), x, "truncated header (0 of 60 bytes)")
    _run_error(capsys, tmp_path, x, f"cannot read {tmp_path}: Is a directory")
    _run_error(capsys, tmp_path / "none.bin", x, "No such file or directory")


# ------------------------------------------------------------------------ targets


def test_target_mismatch(capsys, tmp_path, prog, x):
    other = target_toml(tmp_path / "other.toml", {'name = "sta_ref"': 'name = "other"',
                                                  "id = 1 ": "id = 2 "})
    _run_error(capsys, _write(tmp_path, prog), x,
               "program was built for target 'sta_ref' (id 1) but is being run on target "
               "'other' (id 2)", extra=["--target", other])


def test_target_with_the_same_name_but_another_id(capsys, tmp_path, prog, x):
    other = target_toml(tmp_path / "other.toml", {"id = 1 ": "id = 9 "})
    _run_error(capsys, _write(tmp_path, prog), x, "built for target 'sta_ref' (id 1)",
               "(id 9)", extra=["--target", other])


def test_target_too_small_for_the_program(capsys, tmp_path, prog, x):
    small = target_toml(tmp_path / "small.toml", {"dram_words = 268435456": "dram_words = 1024"})
    _run_error(capsys, _write(tmp_path, prog), x, "program needs ",
               "DRAM words but target 'sta_ref' has 1024", extra=["--target", small])


@pytest.mark.parametrize("name", [b"evil.toml", b"../targets/sta_ref", b"/etc/passwd"])
def test_recorded_target_name_is_never_a_path(capsys, tmp_path, prog, x, monkeypatch, name):
    """The target name in the header selects a built-in target; it cannot make `nmc run`
    read a file unless --target names it."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "evil.toml").write_text("not toml at all [")
    data = bytearray(prog)
    struct.pack_into("<32s", data, 16, name)
    _run_error(capsys, _write(tmp_path, bytes(data)), x,
               f"was built for target '{name.decode()}': unknown target", "--target")


# ------------------------------------------------------------------------ instruction streams


def _edit_asm(tmp_path: Path, tmp_path_factory, edit) -> Path:
    """Hand-edit the assembly of the built program and assemble it (which fixes the
    checksums: the kind of edit a user would make)."""
    from nmc.cli import main

    text = (built(tmp_path_factory) / "prog.s").read_text()
    (tmp_path / "edit.s").write_text(edit(text))
    assert main(["asm", str(tmp_path / "edit.s"), "-o", str(tmp_path / "edit.bin")]) == 0
    return tmp_path / "edit.bin"


def _first(pattern: str, text: str) -> re.Match:
    m = re.search(pattern, text, re.MULTILINE)
    assert m, pattern
    return m


def test_out_of_range_spad_address(capsys, tmp_path, tmp_path_factory, x):
    def edit(text):
        m = _first(r"^load .*local=(0x[0-9a-f]+).*# (\d+)$", text)
        return text[:m.start(1)] + "0xfffffff0" + text[m.end(1):]

    path = _edit_asm(tmp_path, tmp_path_factory, edit)
    line = _run_error(capsys, path, x, "out-of-bounds access to SPAD [4294967280, ",
                      "(size 65536) at pc 0: load ", "local=0xfffffff0")
    assert "IndexError" not in line


def test_out_of_range_dram_address(capsys, tmp_path, tmp_path_factory, x):
    def edit(text):
        m = _first(r"^store .*dram=(0x[0-9a-f]+)", text)
        return text[:m.start(1)] + "0x7fff0000" + text[m.end(1):]

    path = _edit_asm(tmp_path, tmp_path_factory, edit)
    size = read_program(path).dram_words  # the program's DRAM: the error's bound
    _run_error(capsys, path, x, "out-of-bounds access to DRAM [2147418112, ", f"(size {size})",
               ": store ", "dram=0x7fff0000")


def test_operand_in_the_wrong_memory(capsys, tmp_path, tmp_path_factory, x):
    def edit(text):
        m = _first(r"^vrow .*(src_mem=spad)", text)
        return text[:m.start(1)] + "src_mem=dram" + text[m.end(1):]

    path = _edit_asm(tmp_path, tmp_path_factory, edit)
    _run_error(capsys, path, x, "vrow: field 'src_mem' = DRAM: the operand must be in SPAD or "
               "ACC at pc ", ": vrow ")


def test_unknown_opcode(capsys, tmp_path, prog, x):
    _, offset, _ = sections(prog)[INSTR]
    data = bytearray(prog)
    data[offset + 2 * 32] = 0xEE  # opcode byte of pc 2
    path = _write(tmp_path, fix_crcs(bytes(data)))
    _both_error(capsys, path, x, f"{path}: section INSTR: pc 2: unknown opcode 0xee (known: ")


def test_nonzero_unused_bits(capsys, tmp_path, prog, x):
    _, offset, _ = sections(prog)[INSTR]
    data = bytearray(prog)
    data[offset + 3 * 32 + 31] = 0x80  # the top bit of pc 3
    _both_error(capsys, _write(tmp_path, fix_crcs(bytes(data))), x,
                "section INSTR: pc 3: ", "unused bits", "are not zero")


def test_instruction_stream_cut_mid_word(capsys, tmp_path, prog, x):
    """An INSTR section that is not a whole number of words (table and CRC consistent)."""
    i, offset, size = sections(prog)[INSTR]
    body = prog[offset:offset + size - 5]
    data = bytearray(prog[:offset] + body + prog[offset + size:])
    count = HEADER.unpack_from(data)[6]
    for j in range(count):
        at = HEADER.size + j * SECTION.size
        kind, off, sz, crc = SECTION.unpack_from(data, at)
        SECTION.pack_into(data, at, kind, off - 5 if off > offset else off,
                          sz - 5 if kind == INSTR else sz, crc)
    _both_error(capsys, _write(tmp_path, fix_crcs(bytes(data))), x,
                "section INSTR: pc ", "is not a multiple of 32 (27 trailing bytes)")


def test_missing_halt(capsys, tmp_path, tmp_path_factory, x):
    path = _edit_asm(tmp_path, tmp_path_factory,
                     lambda text: re.sub(r"^halt.*$", "", text, flags=re.MULTILINE))
    _run_error(capsys, path, x, "program has no halt (it has ", "the stream must end with halt",
               "; the last is at pc ", ": store ")


def test_deadlock(capsys, tmp_path, tmp_path_factory, x):
    """The first load waits for a token from the vector unit, whose first instruction waits
    for that load's queue: nothing can start."""
    def edit(text):
        m = _first(r"^load (wait=-)", text)
        return text[:m.start(1)] + "wait=vector" + text[m.end(1):]

    path = _edit_asm(tmp_path, tmp_path_factory, edit)
    line = _run_error(capsys, path, x, "deadlock: no unit can start its next instruction",
                      "load waits for a token from vector at pc 0: load wait=vector")
    assert "vector waits for a token from load at pc " in line


def test_halt_with_token_masks(capsys, tmp_path, tmp_path_factory, x):
    path = _edit_asm(tmp_path, tmp_path_factory,
                     lambda text: re.sub(r"^halt.*$", "halt wait=load", text, flags=re.MULTILINE))
    _run_error(capsys, path, x, "halt belongs to no unit queue", "masks must be 0 at pc ",
               ": halt wait=load")


def test_instruction_budget(capsys, tmp_path, prog, x):
    _run_error(capsys, _write(tmp_path, prog), x,
               "instruction budget of 5 exceeded before halt at pc 5: ",
               extra=["--max-instructions", "5"])


def test_console_script_reports_corruption_without_traceback(tmp_path, prog, x):
    _, offset, _ = sections(prog)[INSTR]
    data = bytearray(prog)
    data[offset] = 0xEE
    path = _write(tmp_path, fix_crcs(bytes(data)))
    proc = run_nmc("run", path, "--input", x)
    expect_process_error(proc, "section INSTR: pc 0: unknown opcode 0xee")
    proc = run_nmc("disasm", _write(tmp_path, prog[:100], "cut.bin"))
    expect_process_error(proc, "truncated section table")


@pytest.mark.skipif(not os.path.exists("/dev/zero"), reason="needs /dev/zero")
def test_endless_device_files_are_refused_at_the_magic(capsys, tmp_path, x):
    _run_error(capsys, Path("/dev/zero"), x, "/dev/zero: wrong magic b'\\x00")
    expect_error(capsys, ["disasm", "/dev/urandom"], "/dev/urandom: wrong magic")

"""Outputs are written atomically: prog.bin (`compile`, `asm`), IR dumps (`--dump-ir`), the
`-o` of `run`, `disasm`, `export` and `opt`. An interruption (Ctrl-C, SIGTERM) or an error in
the middle of emission or of the write leaves the old file intact and no partial or
temporary file; Ctrl-C exits with status 130, SIGTERM with 143, a closed stdout pipe with
141 (issue 4, class "outputs")."""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from nmc.isa.container import read_program

from robust_helpers import (
    SMALL, built, check_one_line, cli, expect_error, run_nmc, temp_files,
)

OLD = b"the old file\n"


@pytest.fixture()
def d(tmp_path_factory) -> Path:
    return built(tmp_path_factory)


def _old(path: Path) -> Path:
    path.write_bytes(OLD)
    return path


def _interrupted(capsys, argv) -> None:
    rc, _out, err = cli(capsys, *argv)
    assert rc == 130, err
    assert err.strip().splitlines()[-1] == "nmc: interrupted" and "Traceback" not in err


class _Boom:
    """Raise `exc` on the n-th call of the wrapped function from nmc (earlier calls, and
    calls from anything else, e.g. pytest, go through)."""

    def __init__(self, real, n: int, exc: BaseException, partial: bool = False):
        self.real, self.n, self.exc, self.partial, self.calls = real, n, exc, partial, 0

    def __call__(self, *args, **kwargs):
        if not sys._getframe(1).f_globals.get("__name__", "").startswith("nmc."):
            return self.real(*args, **kwargs)
        self.calls += 1
        if self.calls == self.n:
            if self.partial:  # os.write: put half of the bytes down first
                fd, data = args
                self.real(fd, bytes(data[: len(data) // 2]))
            raise self.exc
        return self.real(*args, **kwargs)


# ------------------------------------------------------------------------ compile


def test_compile_interrupted_during_emission(capsys, tmp_path, d, monkeypatch):
    import nmc.isa.container as container

    out = _old(tmp_path / "prog.bin")
    monkeypatch.setattr(container, "encode_stream",
                        _Boom(container.encode_stream, 1, KeyboardInterrupt()))
    _interrupted(capsys, ["compile", d / "model.pt", "-o", out])
    assert out.read_bytes() == OLD and temp_files(tmp_path) == []


def test_compile_exception_during_emission(capsys, tmp_path, d, monkeypatch):
    """A bug (not a user error) while emitting: one `nmc: internal error` line, exit 70, the
    old file intact; --debug raises it with its traceback."""
    import nmc.isa.container as container

    out = _old(tmp_path / "prog.bin")
    monkeypatch.setattr(container, "encode_stream",
                        _Boom(container.encode_stream, 1, RuntimeError("boom")))
    rc, _, err = cli(capsys, "compile", d / "model.pt", "-o", out)
    assert rc == 70
    check_one_line(err, "nmc: internal error: RuntimeError: boom (this is a bug in nmc; "
                   "rerun with --debug for the traceback)", prefix="nmc: internal error: ")
    assert out.read_bytes() == OLD and temp_files(tmp_path) == []
    monkeypatch.setattr(container, "encode_stream",
                        _Boom(container.encode_stream, 1, RuntimeError("boom")))
    with pytest.raises(RuntimeError, match="boom"):
        cli(capsys, "--debug", "compile", d / "model.pt", "-o", out)
    assert out.read_bytes() == OLD and temp_files(tmp_path) == []


@pytest.mark.parametrize("where", ["write", "fsync", "replace"])
def test_compile_interrupted_while_writing(capsys, tmp_path, d, monkeypatch, where):
    out = _old(tmp_path / "prog.bin")
    real = getattr(os, where)
    monkeypatch.setattr(os, where, _Boom(real, 1, KeyboardInterrupt(), partial=where == "write"))
    _interrupted(capsys, ["compile", d / "model.pt", "-o", out])
    monkeypatch.undo()
    assert out.read_bytes() == OLD and temp_files(tmp_path) == []


def test_compile_disk_full(capsys, tmp_path, d, monkeypatch):
    out = _old(tmp_path / "prog.bin")
    monkeypatch.setattr(os, "write", _Boom(os.write, 1, OSError(errno.ENOSPC, "No space left on "
                                                                "device"), partial=True))
    expect_error(capsys, ["compile", d / "model.pt", "-o", out],
                 f"cannot write {out}: No space left on device")
    monkeypatch.undo()
    assert out.read_bytes() == OLD and temp_files(tmp_path) == []


def test_compile_writes_a_complete_program(capsys, tmp_path, d):
    out = _old(tmp_path / "prog.bin")
    rc, _, err = cli(capsys, "compile", d / "model.pt", "-o", out)
    assert rc == 0, err
    assert out.read_bytes() == (d / "prog.bin").read_bytes()
    read_program(out)
    assert temp_files(tmp_path) == []


def test_dump_ir_interrupted_midway(capsys, tmp_path, d, monkeypatch):
    out = _old(tmp_path / "prog.bin")
    ir = tmp_path / "ir"
    ir.mkdir()
    _old(ir / "02-schedule-tiles.mlir")  # from an earlier run
    monkeypatch.setattr(os, "replace", _Boom(os.replace, 3, KeyboardInterrupt()))
    _interrupted(capsys, ["compile", d / "model.pt", "-o", out, "--dump-ir", ir])
    monkeypatch.undo()
    assert sorted(p.name for p in ir.iterdir()) == [
        "00-input.mlir", "01-raise-torch-to-nm.mlir", "02-schedule-tiles.mlir"]
    assert (ir / "02-schedule-tiles.mlir").read_bytes() == OLD  # the old dump, whole
    assert '"nm.linear"(' in (ir / "01-raise-torch-to-nm.mlir").read_text()  # a new one, whole
    assert temp_files(ir) == [] and out.read_bytes() == OLD


def test_dump_ir_directory_that_cannot_be_created(capsys, tmp_path, d):
    out = tmp_path / "prog.bin"
    _old(tmp_path / "file")
    expect_error(capsys, ["compile", d / "model.pt", "-o", out, "--dump-ir", tmp_path / "file"],
                 f"--dump-ir: cannot create directory {tmp_path / 'file'}: File exists")
    assert not out.exists()


def test_output_path_errors_come_before_the_compile(capsys, tmp_path, d):
    expect_error(capsys, ["compile", d / "model.pt", "-o", tmp_path / "no" / "p.bin"],
                 f"cannot write {tmp_path / 'no' / 'p.bin'}: No such file or directory")
    expect_error(capsys, ["compile", d / "model.pt", "-o", tmp_path],
                 f"cannot write {tmp_path}: Is a directory")


# ------------------------------------------------------------------------ run, disasm, asm, export


def test_run_output_interrupted(capsys, tmp_path, d, monkeypatch):
    out = _old(tmp_path / "y.npy")
    monkeypatch.setattr(os, "write", _Boom(os.write, 1, KeyboardInterrupt(), partial=True))
    _interrupted(capsys, ["run", d / "prog.bin", "--input", d / "x.npy", "-o", out])
    monkeypatch.undo()
    assert out.read_bytes() == OLD and temp_files(tmp_path) == []


def test_run_error_leaves_the_output_alone(capsys, tmp_path, d):
    out = _old(tmp_path / "y.npy")
    np.save(tmp_path / "bad.npy", np.zeros((2, 2), np.float32))
    expect_error(capsys, ["run", d / "prog.bin", "--input", tmp_path / "bad.npy", "-o", out],
                 "has shape (2, 2)")
    assert out.read_bytes() == OLD


def test_run_output_npz_and_too_many_outputs(capsys, tmp_path, d):
    rc, _, err = cli(capsys, "run", d / "prog.bin", "--input", d / "x.npy",
                     "-o", tmp_path / "y.npz")
    assert rc == 0, err
    assert list(np.load(tmp_path / "y.npz")) == ["output"]


def test_disasm_output_interrupted(capsys, tmp_path, d, monkeypatch):
    out = _old(tmp_path / "prog.s")
    monkeypatch.setattr(os, "fsync", _Boom(os.fsync, 1, KeyboardInterrupt()))
    _interrupted(capsys, ["disasm", d / "prog.bin", "-o", out])
    monkeypatch.undo()
    assert out.read_bytes() == OLD and temp_files(tmp_path) == []


def test_asm_error_leaves_the_old_program(capsys, tmp_path, d):
    out = _old(tmp_path / "prog.bin")
    src = tmp_path / "bad.s"
    src.write_text((d / "prog.s").read_text().replace("halt", "hlt"))
    expect_error(capsys, ["asm", src, "-o", out], f"{src}:", "unknown mnemonic 'hlt'")
    assert out.read_bytes() == OLD and temp_files(tmp_path) == []


def test_export_interrupted(capsys, tmp_path, monkeypatch):
    out = _old(tmp_path / "model.pt")
    monkeypatch.setattr(os, "replace", _Boom(os.replace, 1, KeyboardInterrupt()))
    _interrupted(capsys, ["export", "mlp_block", *SMALL, "-o", out])
    monkeypatch.undo()
    assert out.read_bytes() == OLD and temp_files(tmp_path) == []


def test_opt_output_is_not_written_on_error(capsys, tmp_path):
    out = _old(tmp_path / "out.mlir")
    src = tmp_path / "in.mlir"
    src.write_text("garbage {\n")
    expect_error(capsys, ["opt", "-p", "schedule-tiles", src, "-o", out], f"{src}:1:")
    assert out.read_bytes() == OLD


# ------------------------------------------------------------------------ real processes

_SIGNAL_SCRIPT = textwrap.dedent("""
    import os, signal, sys
    real_fsync = os.fsync
    def fsync(fd):
        os.kill(os.getpid(), getattr(signal, sys.argv[1]))  # arrives in the middle of the write
        real_fsync(fd)
    os.fsync = fsync
    from nmc.cli import main
    sys.exit(main(sys.argv[2:]))
""")


def _sigint_default() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@pytest.mark.parametrize("sig, status, message", [
    ("SIGINT", 130, "nmc: interrupted"), ("SIGTERM", 143, "nmc: terminated")])
def test_signal_in_the_middle_of_writing_prog_bin(tmp_path, d, sig, status, message):
    out = _old(tmp_path / "prog.bin")
    proc = subprocess.run(
        [sys.executable, "-c", _SIGNAL_SCRIPT, sig, "compile", str(d / "model.pt"),
         "-o", str(out)],
        capture_output=True, text=True, timeout=900,  # a loaded 2-core machine is slow
        # as a foreground command gets it: a shell without job control starts background
        # commands (`make test &`) with SIGINT ignored, and Python then keeps ignoring it
        preexec_fn=_sigint_default,
    )
    assert proc.returncode == status, proc.stderr
    assert proc.stderr.strip().splitlines()[-1] == message and "Traceback" not in proc.stderr
    assert out.read_bytes() == OLD and temp_files(tmp_path) == []


@pytest.mark.parametrize("argv", [["export", "--list"], ["disasm", "{prog}"]])
def test_closed_stdout_pipe(d, argv):
    """`nmc export --list | head -0`: exit 141 quietly, no BrokenPipeError traceback."""
    argv = [a.format(prog=d / "prog.bin") for a in argv]
    proc = subprocess.Popen([sys.executable, "-m", "nmc.cli", *argv],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.close()  # before the child writes anything
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == 141, err
    assert err == ""


def test_console_script_keeps_the_old_file_on_error(tmp_path, d):
    out = _old(tmp_path / "prog.bin")
    src = tmp_path / "bad.s"
    src.write_text(".target sta_ref 1\n.dram_words 16\nload local=0x1ffffffff\nhalt\n")
    proc = run_nmc("asm", src, "-o", out)
    assert proc.returncode == 1
    check_one_line(proc.stderr, f"{src}:3:", "does not fit 32 bits")
    assert out.read_bytes() == OLD and temp_files(tmp_path) == []

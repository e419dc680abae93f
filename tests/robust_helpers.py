"""Shared by tests/test_robust_*.py: run `nmc` in-process or as a real subprocess and check
that an error is exactly one line `nmc: error: ...` with the right exit status, and build the
small model and program the tests corrupt.
"""

from __future__ import annotations

import os
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import pytest

from nmc.cli import main
from nmc.isa.target import TARGETS_DIR

REF_TOML = (TARGETS_DIR / "sta_ref.toml").read_text()
SMALL = ["--set", "dim=32", "--set", "hidden=48", "--set", "tokens=9"]
"""mlp_block at a size that compiles in a second: input x [1, 9, 32]."""

_BUILT: dict[str, Path] = {}


def cli(capsys: pytest.CaptureFixture, *argv) -> tuple[int, str, str]:
    """(exit status, stdout, stderr) of `nmc ARGV` run in this process."""
    capsys.readouterr()  # drop what came before (e.g. `built` writing its files)
    rc = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


def expect_error(capsys: pytest.CaptureFixture, argv, *fragments: str, status: int = 1) -> str:
    """Run `nmc ARGV`; check it fails with `status` and prints one line `nmc: error: ...`
    containing every fragment; return that line."""
    rc, _out, err = cli(capsys, *argv)
    assert rc == status, f"exit status {rc}, stderr: {err!r}"
    return check_one_line(err, *fragments)


def check_one_line(err: str, *fragments: str, prefix: str = "nmc: error: ") -> str:
    assert "Traceback" not in err, err
    lines = err.strip("\n").split("\n")
    assert len(lines) == 1, f"expected one line on stderr, got {len(lines)}:\n{err}"
    line = lines[0]
    assert line.startswith(prefix), line
    for fragment in fragments:
        assert fragment in line, f"{fragment!r} not in {line!r}"
    return line


def line_of(path: str | Path, marker: str) -> int:
    """Line number (1-based) of the line of the file `path` that ends with `# <marker>`
    (a test file marks the source lines its errors must name)."""
    for i, line in enumerate(Path(path).read_text().splitlines(), 1):
        if line.rstrip().endswith(f"# {marker}"):
            return i
    raise AssertionError(marker)


def run_nmc(*argv, cwd: Path | None = None, timeout: float = 300,
            stdin: str | None = None) -> subprocess.CompletedProcess:
    """`python -m nmc.cli ARGV` as a real process (no pytest capture, no monkeypatch)."""
    return subprocess.run(
        [sys.executable, "-m", "nmc.cli", *map(str, argv)],
        capture_output=True, text=True, cwd=cwd, timeout=timeout, input=stdin,
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
    )


def expect_process_error(proc: subprocess.CompletedProcess, *fragments: str,
                         status: int = 1) -> str:
    assert proc.returncode == status, (proc.returncode, proc.stderr)
    return check_one_line(proc.stderr, *fragments)


def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory holding model.pt (small mlp_block), prog.bin, prog.s and x.npy; built
    once per test process, never modified by the tests (they copy what they corrupt)."""
    if "dir" not in _BUILT:
        import numpy as np

        d = tmp_path_factory.mktemp("robust_built")
        assert main(["export", "mlp_block", *SMALL, "-o", str(d / "model.pt")]) == 0
        assert main(["compile", str(d / "model.pt"), "-o", str(d / "prog.bin")]) == 0
        assert main(["disasm", str(d / "prog.bin"), "-o", str(d / "prog.s")]) == 0
        x = np.random.default_rng(0).standard_normal((1, 9, 32)).astype(np.float32)
        np.save(d / "x.npy", x)
        _BUILT["dir"] = d
    return _BUILT["dir"]


def target_toml(path: Path, replace: dict[str, str] | None = None, drop: str | None = None,
                append: str = "") -> Path:
    """Write sta_ref.toml with text replacements, one `key = ...` line dropped, and lines
    appended."""
    text = REF_TOML
    for old, new in (replace or {}).items():
        assert old in text, old
        text = text.replace(old, new)
    if drop is not None:
        kept = [line for line in text.splitlines() if not line.startswith(f"{drop} ")]
        assert len(kept) == len(text.splitlines()) - 1, drop
        text = "\n".join(kept) + "\n"
    path.write_text(text + append)
    return path


def temp_files(directory: Path) -> list[str]:
    """Leftovers of the atomic writer (`.NAME.PID.HEX.tmp`)."""
    return sorted(p.name for p in directory.iterdir() if p.name.endswith(".tmp"))


# ---------------------------------------------------------------------------- prog.bin surgery

HEADER = struct.Struct("<8sHHI32sQI")
SECTION = struct.Struct("<IQQI")


def sections(data: bytes) -> dict[int, tuple[int, int, int]]:
    """kind -> (table index, offset, size) of every section of a well-formed prog.bin."""
    count = HEADER.unpack_from(data)[6]
    out = {}
    for i in range(count):
        kind, offset, size, _ = SECTION.unpack_from(data, HEADER.size + i * SECTION.size)
        out[kind] = (i, offset, size)
    return out


def fix_crcs(data: bytes) -> bytes:
    """Recompute every section checksum, so a hand edit reaches the checks behind them."""
    buf = bytearray(data)
    count = HEADER.unpack_from(buf)[6]
    for i in range(count):
        at = HEADER.size + i * SECTION.size
        kind, offset, size, _ = SECTION.unpack_from(buf, at)
        SECTION.pack_into(buf, at, kind, offset, size, zlib.crc32(bytes(buf[offset:offset + size])))
    return bytes(buf)

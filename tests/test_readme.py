"""Every command of README.md runs as written, in order, in a fresh directory (issue 15,
item 17): a new user who copies them gets no error, and the files each one needs are made by
the ones before it.

The commands are the lines of README.md's indented code blocks that start with `nmc` or
`python` (a trailing backslash continues a line); the `make` targets at the top are the
repository's own, run by CI. Lines of output in the excerpts that start with "nmc" (the
report's title) are not commands. The walk-through trains two small models with
`nmc sparsify`, so it is slow (`make test-all`); the default suite checks that every command
parses.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from nmc.cli import build_parser
from nmc.compiler.pipeline import DEFAULT_PIPELINE

README = Path(__file__).resolve().parents[1] / "README.md"
OUTPUT_LINES = ("nmc emulator report:",)
"""Lines of the README's output excerpts that start with "nmc" but are not commands."""


def readme_commands(text: str) -> list[list[str]]:
    """The argv of every command of the README's code blocks, in order."""
    lines = text.splitlines()
    commands = []
    i = 0
    while i < len(lines):
        line = lines[i]
        stripped = line.strip()
        if line.startswith("    ") and stripped.startswith(("nmc ", "python ")) \
                and not stripped.startswith(OUTPUT_LINES):
            while stripped.endswith("\\"):
                i += 1
                stripped = stripped[:-1].rstrip() + " " + lines[i].strip()
            commands.append(shlex.split(stripped, comments=True))
        i += 1
    return commands


COMMANDS = readme_commands(README.read_text())


def test_the_readme_has_its_walk_through():
    names = [argv[1] for argv in COMMANDS if argv[0] == "nmc"]
    for command in ("export", "compile", "inspect", "run", "disasm", "asm", "opt", "report",
                    "sparsify", "eval"):
        assert command in names, command
    assert sum(argv[0] == "python" for argv in COMMANDS) == 3  # two inputs and an ONNX file


LAST_DUMP = f"{len(DEFAULT_PIPELINE):02d}-{DEFAULT_PIPELINE[-1]}.mlir"
"""The last file `--dump-ir` writes: 00-input.mlir, then one per pass of the pipeline."""


def test_the_readme_names_the_last_ir_dump():
    """A pass added to the pipeline renumbers the dumps: the README must say so (checked
    here, in the default suite, not only by the slow walk-through)."""
    assert f"ir/{LAST_DUMP}" in README.read_text()


def test_every_readme_command_parses():
    """nmc's own parser accepts every README command (a renamed or misspelt option fails
    here, in the default suite)."""
    parser = build_parser()
    for argv in COMMANDS:
        if argv[0] == "nmc":
            parser.parse_args(argv[1:])


def _run(argv: list[str], cwd: Path) -> subprocess.CompletedProcess:
    program = [sys.executable, "-m", "nmc.cli"] if argv[0] == "nmc" else [sys.executable]
    return subprocess.run([*program, *argv[1:]], cwd=cwd, capture_output=True, text=True,
                          timeout=3600, env={**os.environ, "PYTHONWARNINGS": "ignore"})


@pytest.mark.slow
def test_every_readme_command_runs_as_written(tmp_path):
    outputs = {}
    for argv in COMMANDS:
        proc = _run(argv, tmp_path)
        assert proc.returncode == 0, f"{shlex.join(argv)}\n{proc.stderr}"
        outputs[shlex.join(argv)] = proc.stdout
    # what the README says of them
    assert (tmp_path / "ir" / "00-input.mlir").is_file()
    assert (tmp_path / "ir" / LAST_DUMP).is_file()
    assert (tmp_path / "prog2.bin").read_bytes() == (tmp_path / "prog.bin").read_bytes()
    assert "input  x                f32[1x197x192]" in outputs["nmc inspect prog.bin"]
    assert np.load(tmp_path / "x.npy").shape == (1, 197, 192)
    inspect_2to4 = next(out for cmd, out in outputs.items()
                        if cmd.startswith("nmc inspect deit_tiny_2to4.bin"))
    assert "pruned      48 of 49 weight layers N:M sparse (48 at 2:4); dense: head" \
        in inspect_2to4
    for name in ("digits.sparsity.json", "windows.window-keep.json", "deit_tiny_report.png",
                 "report.json", "run.json", "k.json", "s.json"):
        assert (tmp_path / name).is_file(), name

"""The files a command reads and writes, checked together before anything is written.

A command names its inputs and outputs (each with the option that gave it) and calls
`check_files` before its slow part, so that a bad output path fails before any output is
written (`nmc run -o rw/y.npy --trace ro/t.json` used to write y.npy, then fail), and an
output that is an input is refused as gcc refuses it ("input file is the same as output
file"): `nmc compile model.pt -o model.pt` used to replace the model with the program.

Sameness is the file's identity (device and inode, so a hard link or a path through a
symbolic link is caught), or for a path that does not exist yet its resolved path. Outputs
that are written through (devices such as /dev/null, FIFOs, the process's own streams; see
`nmc.common.fileio.writes_through`) destroy nothing, so they may repeat or be an input.
"""

from __future__ import annotations

import os
import secrets
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from nmc.cli.shared import UsageError
from nmc.common.fileio import STREAM_PREFIXES, OutputError, writes_through


@dataclass(frozen=True)
class Named:
    """A path and how the user gave it ("-o", "--calib", "the model", ...)."""

    label: str
    path: Path

    def __str__(self) -> str:
        return f"{self.label} {self.path}"


def named(pairs: Iterable[tuple[str, Path | str | None]]) -> list[Named]:
    """The given (label, path) pairs as `Named`, leaving out the options not given."""
    return [Named(label, Path(path)) for label, path in pairs if path not in (None, "")]


def check_files(outputs: Iterable[tuple[str, Path | None]] = (),
                inputs: Iterable[tuple[str, Path | str | None]] = (),
                directories: Iterable[tuple[str, Path | None]] = (),
                in_directories: Iterable[tuple[str, Path | None]] = ()) -> None:
    """Refuse, before anything is written: an input that is a named pipe (reading it would
    wait for a writer that may never come), an output that cannot be written (its
    directory is missing or not writable, it is a directory), an output that is an input,
    and two outputs that are one file. `directories` are output directories (--dump-ir,
    the demo's work directory): they may exist, or will be created; `in_directories` the
    files that will be written in them (compared with the others, not probed)."""
    outs, ins, dirs = named(outputs), named(inputs), named(directories)
    for i in ins:
        check_input_path(i)
    for d in dirs:
        check_output_directory(d)
    for o in outs:
        check_output_path(o.path)
    replaced = [o for o in outs + named(in_directories) if not writes_through(o.path)]
    for o in replaced:
        for i in ins:
            if same_file(o.path, i.path):
                raise UsageError(f"{o} is the same file as {i}: refusing to overwrite an input")
        for d in dirs:
            if same_file(o.path, d.path):
                raise UsageError(f"{o} is the {d.label} directory {d.path}")
    for a, b in _pairs(replaced):
        if same_file(a.path, b.path):
            raise UsageError(f"{a} and {b} are the same file: give each output its own path")


def _pairs(items: list) -> Iterable[tuple]:
    for i, a in enumerate(items):
        for b in items[i + 1:]:
            yield a, b


def same_file(a: Path, b: Path) -> bool:
    """Whether `a` and `b` name one file: the same device and inode when both exist, else
    the same resolved path (a path to be created)."""
    try:
        return os.path.samefile(a, b)
    except OSError:  # one of them does not exist (yet)
        return os.path.realpath(a) == os.path.realpath(b)


def check_input_path(i: Named) -> None:
    """A named pipe (FIFO) or socket as an input is refused: opening it waits for a writer
    (`nmc run FIFO` hung). The process's own streams (/dev/stdin, /dev/fd/N: a shell's
    `<(...)`) are open already and are read as they are."""
    if os.fspath(i.path).startswith(STREAM_PREFIXES):
        return
    try:
        mode = os.stat(i.path).st_mode
    except OSError:
        return  # missing or unreadable: the reader says so, in its own words
    if stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode):
        kind = "a named pipe (FIFO)" if stat.S_ISFIFO(mode) else "a socket"
        raise UsageError(f"{i}: not a regular file but {kind}; nmc reads its inputs from "
                         "files: save it to a file first")


def check_output_path(path: Path) -> None:
    """Fail early, before a slow compile, if `path` cannot be written: it is a directory,
    its directory is missing or not writable (the atomic writer checks again when it
    writes)."""
    path = Path(path)
    if path.is_dir():
        raise OutputError(f"cannot write {path}: Is a directory")
    if writes_through(path):  # written in place: the file itself must be writable
        if not os.fspath(path).startswith(STREAM_PREFIXES) and not os.access(path, os.W_OK):
            raise OutputError(f"cannot write {path}: Permission denied")
        return
    parent = Path(os.path.realpath(path)).parent if path.is_symlink() else path.parent
    if not parent.is_dir():
        raise OutputError(f"cannot write {path}: No such file or directory")
    _probe(parent, f"cannot write {path}")


def check_output_directory(d: Named) -> None:
    """An output directory: an existing directory, or a path whose nearest existing
    ancestor is a directory it can be created in."""
    if d.path.exists() and not d.path.is_dir():
        raise OutputError(f"{d.label}: cannot create directory {d.path}: File exists")
    ancestor = d.path
    while not ancestor.exists():
        if ancestor.parent == ancestor:
            break
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise OutputError(f"{d.label}: cannot create directory {d.path}: Not a directory")
    _probe(ancestor, f"{d.label}: cannot write in {d.path}" if ancestor == d.path
           else f"{d.label}: cannot create directory {d.path}")


def _probe(directory: Path, what: str) -> None:
    """Create and remove an empty file in `directory`: the one reliable test that a file can
    be made there (permissions, a read-only file system; os.access says yes to root)."""
    probe = directory / f".nmc-probe.{os.getpid()}.{secrets.token_hex(4)}"
    try:
        fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except OSError as e:
        raise OutputError(f"{what}: {e.strerror or e}") from None
    os.close(fd)
    try:
        os.unlink(probe)
    except OSError:
        pass

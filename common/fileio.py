"""Atomic output files: every file nmc writes goes through `atomic_write_bytes`.

The bytes go to a temporary file in the destination's directory, are fsync'ed, and replace
the destination in one rename, so an interrupted nmc leaves the old file or the new one,
never a partial one (and no temporary file behind).

Only a regular file (or a new path) is replaced that way. A rename over anything else would
destroy it: `-o /dev/null` run as root would turn the device node into a regular file. So
character and block devices, FIFOs, sockets and the process's own streams (`/dev/stdout`,
`/dev/fd/N`, `/proc/self/fd/N`) are written through, as `cat > PATH` would; a symbolic link
stays a link and the file it points to is replaced atomically.
"""

from __future__ import annotations

import io
import os
import secrets
import stat
from pathlib import Path

import numpy as np

from nmc.common.errors import NmcError


class OutputError(NmcError):
    """An output file cannot be written."""


STREAM_PREFIXES = ("/dev/stdout", "/dev/stderr", "/dev/fd/", "/proc/self/fd/")


def writes_through(path: str | os.PathLike) -> bool:
    """True when `path` is written in place rather than replaced: a device, a FIFO, a socket,
    or one of the process's own streams (its target may be a file the shell opened: renaming
    over that file would leave the shell writing to a deleted one)."""
    text = os.fspath(path)
    if text.startswith(STREAM_PREFIXES):
        return True
    try:
        mode = os.stat(path).st_mode  # follows links: what would be written
    except OSError:
        return False  # a new path (or one the writer will report)
    return not (stat.S_ISREG(mode) or stat.S_ISDIR(mode))


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    path = Path(path)
    if writes_through(path):
        _write_through(path, data)
        return
    if path.is_symlink():  # replace the file it points to, keep the link
        path = Path(os.path.realpath(path))
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    except OSError as e:
        raise OutputError(f"cannot write {path}: {e.strerror}") from None
    try:
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException as e:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        if isinstance(e, OSError):
            raise OutputError(f"cannot write {path}: {e.strerror}") from None
        raise
    _fsync_dir(path.parent)


def _write_through(path: Path, data: bytes) -> None:
    try:
        fd = os.open(path, os.O_WRONLY | os.O_TRUNC)
    except OSError as e:
        raise OutputError(f"cannot write {path}: {e.strerror}") from None
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
    except OSError as e:
        raise OutputError(f"cannot write {path}: {e.strerror}") from None
    finally:
        os.close(fd)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_save_npy(path: str | os.PathLike, array: np.ndarray) -> None:
    buf = io.BytesIO()
    np.save(buf, array)
    atomic_write_bytes(path, buf.getvalue())


def atomic_save_npz(path: str | os.PathLike, arrays: dict[str, np.ndarray]) -> None:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    atomic_write_bytes(path, buf.getvalue())


def _fsync_dir(directory: Path) -> None:
    """Make the rename durable; not every platform can open a directory."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)

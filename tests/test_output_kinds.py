"""Outputs that are not regular files (common/fileio.py): devices, FIFOs, the process's
streams and symbolic links are written through or followed, never renamed over."""

import os
import stat
import threading

import pytest

from nmc.common.fileio import atomic_write_bytes, writes_through


def test_a_character_device_stays_a_device(tmp_path):
    null = tmp_path / "null"
    try:
        os.mknod(null, stat.S_IFCHR | 0o666, os.makedev(1, 3))  # like /dev/null
    except PermissionError:
        pytest.skip("making a device node needs root")
    atomic_write_bytes(null, b"program bytes")
    assert stat.S_ISCHR(os.stat(null).st_mode)
    assert [p.name for p in tmp_path.iterdir()] == ["null"]  # no temporary file left


def test_dev_null_itself_survives():
    atomic_write_bytes("/dev/null", b"x" * 1000)
    assert stat.S_ISCHR(os.stat("/dev/null").st_mode)


def test_a_fifo_is_written_through(tmp_path):
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    got = []
    reader = threading.Thread(target=lambda: got.append(fifo.read_bytes()))
    reader.start()
    atomic_write_bytes(fifo, b"hello through a pipe")
    reader.join(timeout=30)
    assert got == [b"hello through a pipe"]
    assert stat.S_ISFIFO(os.stat(fifo).st_mode)


def test_a_symlink_stays_a_link_and_its_target_is_replaced(tmp_path):
    target = tmp_path / "real.bin"
    target.write_bytes(b"old")
    link = tmp_path / "link.bin"
    link.symlink_to(target)
    atomic_write_bytes(link, b"new")
    assert link.is_symlink() and target.read_bytes() == b"new"


def test_the_process_streams_are_written_through():
    assert writes_through("/dev/stdout") and writes_through("/proc/self/fd/1")
    assert not writes_through("/tmp/some-new-file-that-does-not-exist")


def test_regular_files_are_still_replaced_atomically(tmp_path):
    out = tmp_path / "prog.bin"
    out.write_bytes(b"old")
    inode = os.stat(out).st_ino
    atomic_write_bytes(out, b"new")
    assert out.read_bytes() == b"new" and os.stat(out).st_ino != inode  # a rename, not a write

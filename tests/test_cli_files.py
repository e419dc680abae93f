"""The files a command reads and writes are checked together, before anything is written
(issue 15, items 10 and 11): an output that is an input is refused as gcc refuses it (by
identity: the same path, a hard link, a symbolic link), two outputs that are one file are
refused, and an output that cannot be written fails before any other output is written.
A named pipe as an input is refused instead of waiting for a writer (item 16)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from robust_helpers import SMALL, built, cli, expect_error, run_nmc

pytestmark = pytest.mark.filterwarnings("ignore")


@pytest.fixture()
def d(tmp_path_factory) -> Path:
    return built(tmp_path_factory)


@pytest.fixture()
def w(tmp_path, d) -> Path:
    """A copy of the built files to overwrite by mistake."""
    for name in ("model.pt", "prog.bin", "prog.s", "x.npy"):
        shutil.copy(d / name, tmp_path / name)
    return tmp_path


def _unchanged(w: Path, d: Path, *names: str) -> None:
    for name in names:
        assert (w / name).read_bytes() == (d / name).read_bytes(), name


# ------------------------------------------------------------------ an output is an input


@pytest.mark.parametrize("argv, message, kept", [
    (["compile", "{w}/model.pt", "-o", "{w}/model.pt"],
     "-o {w}/model.pt is the same file as the model {w}/model.pt", "model.pt"),
    (["run", "{w}/prog.bin", "-i", "{w}/x.npy", "-o", "{w}/x.npy"],
     "-o {w}/x.npy is the same file as --input {w}/x.npy", "x.npy"),
    (["run", "{w}/prog.bin", "-i", "x={w}/x.npy", "--trace", "{w}/prog.bin"],
     "--trace {w}/prog.bin is the same file as the program {w}/prog.bin", "prog.bin"),
    (["disasm", "{w}/prog.bin", "-o", "{w}/prog.bin"],
     "is the same file as the program", "prog.bin"),
    (["asm", "{w}/prog.s", "-o", "{w}/prog.s"], "is the same file as the source", "prog.s"),
    (["report", "{w}/prog.bin", "--report-json", "{w}/prog.bin"],
     "--report-json {w}/prog.bin is the same file as a program", "prog.bin"),
    (["run", "{w}/prog.bin", "-i", "{w}/x.npy", "--report", "--dense-baseline", "{w}/model.pt",
      "-o", "{w}/model.pt"], "is the same file as --dense-baseline", "model.pt"),
    (["compile", "{w}/model.pt", "-o", "{w}/x.npy", "--sparsity", "elsa:speedup=1.2",
      "--calib", "{w}/x.npy"], "-o {w}/x.npy is the same file as --calib {w}/x.npy", "x.npy"),
    (["compile", "{w}/model.pt", "-o", "{w}/p.bin", "--sparsity", "2:4",
      "--sparsity-out", "{w}/model.pt"], "--sparsity-out {w}/model.pt is the same file as the "
                                         "model", "model.pt"),
])
def test_an_output_that_is_an_input_is_refused(capsys, w, d, argv, message, kept):
    argv = [a.format(w=w) for a in argv]
    expect_error(capsys, argv, message.format(w=w), "refusing to overwrite an input")
    _unchanged(w, d, kept)


def test_a_link_to_the_input_is_the_input(capsys, w, d):
    """gcc compares files, not spellings: a hard link, a symbolic link and a path through
    `..` all name the model."""
    os.link(w / "model.pt", w / "hard.pt")
    (w / "soft.pt").symlink_to(w / "model.pt")
    (w / "sub").mkdir()
    for out in (w / "hard.pt", w / "soft.pt", w / "sub" / ".." / "model.pt"):
        expect_error(capsys, ["compile", w / "model.pt", "-o", out],
                     f"-o {out} is the same file as the model", "refusing to overwrite")
    _unchanged(w, d, "model.pt")
    assert (w / "soft.pt").is_symlink()


def test_sparsity_and_window_keep_files_are_inputs(capsys, w):
    config = w / "s.json"
    config.write_text('{"fc1": "2:4"}\n')
    expect_error(capsys, ["compile", w / "model.pt", "-o", config, "--sparsity", config],
                 f"-o {config} is the same file as --sparsity {config}")
    expect_error(capsys, ["compile", w / "model.pt", "-o", w / "p.bin", "--sparsity", config,
                          "--sparsity-out", config], f"--sparsity-out {config} is the same file")
    assert config.read_text() == '{"fc1": "2:4"}\n'
    keep = w / "k.json"
    keep.write_text("{}\n")
    expect_error(capsys, ["compile", w / "model.pt", "-o", w / "p.bin", "--window-keep", keep,
                          "--window-keep-out", keep], f"--window-keep-out {keep} is the same "
                                                     f"file as --window-keep {keep}")
    assert keep.read_text() == "{}\n" and not (w / "p.bin").exists()


def test_opt_and_export_and_eval_refuse_their_input_as_output(capsys, w):
    ir = w / "in.mlir"
    assert cli(capsys, "compile", w / "model.pt", "-o", w / "p.bin", "--dump-ir", w / "ir")[0] == 0
    shutil.copy(w / "ir" / "01-raise-torch-to-nm.mlir", ir)
    before = ir.read_bytes()
    expect_error(capsys, ["opt", ir, "-p", "schedule-tiles", "-o", ir],
                 f"-o {ir} is the same file as the input {ir}")
    assert ir.read_bytes() == before
    weights = w / "w.pth"
    weights.write_bytes(b"state")
    expect_error(capsys, ["export", "mlp_block", *SMALL, "--weights", weights, "-o", weights],
                 f"-o {weights} is the same file as --weights {weights}")
    assert weights.read_bytes() == b"state"
    expect_error(capsys, ["eval", w / "prog.bin", "--json", w / "prog.bin"],
                 f"--json {w / 'prog.bin'} is the same file as the program")


# ------------------------------------------------------------------ outputs among themselves


def test_two_outputs_that_are_one_file(capsys, w):
    out = w / "y.json"
    expect_error(capsys, ["run", w / "prog.bin", "-i", w / "x.npy", "--report-json", out,
                          "--trace", out], f"--report-json {out} and --trace {out} are the "
                                           "same file")
    (w / "sub").mkdir()
    expect_error(capsys, ["compile", w / "model.pt", "-o", w / "p.bin", "--sparsity", "2:4",
                          "--sparsity-out", w / "sub" / ".." / "p.bin"], "are the same file")
    assert not out.exists() and not (w / "p.bin").exists()


def test_devices_may_be_given_twice_and_are_not_inputs(capsys, w):
    """/dev/null is written through, never replaced: nothing to protect."""
    rc, _, err = cli(capsys, "run", w / "prog.bin", "-i", w / "x.npy", "-o", os.devnull,
                     "--trace", os.devnull)
    assert rc == 0, err


def test_dump_ir_directory_equal_to_the_output(capsys, w):
    """`--dump-ir d -o d` used to dump every stage, then fail: now nothing is written."""
    out = w / "d"
    expect_error(capsys, ["compile", w / "model.pt", "-o", out, "--dump-ir", out],
                 f"-o {out} is the --dump-ir directory {out}")
    assert not out.exists()
    out.mkdir()
    expect_error(capsys, ["compile", w / "model.pt", "-o", out / "03-fuse-activations.mlir",
                          "--dump-ir", out], f"-o {out / '03-fuse-activations.mlir'} and "
                                             f"--dump-ir {out / '03-fuse-activations.mlir'} "
                                             "are the same file")
    assert list(out.iterdir()) == []


# ------------------------------------------------------------------ every location first


def _unwritable_directory(tmp_path: Path) -> Path:
    """A directory no file can be created in: mode 555, or for root (whom permissions do
    not stop) /sys, which refuses new files to everyone."""
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    for candidate in (ro, Path("/sys")):
        try:
            (candidate / "probe").touch()
        except OSError:
            return candidate
        (candidate / "probe").unlink()
    pytest.skip("no unwritable directory on this machine")


def test_run_checks_every_output_before_writing_any(capsys, w):
    """`nmc run -o rw/y.npy --trace ro/t.json` used to write y.npy, then fail."""
    ro = _unwritable_directory(w)
    y = w / "y.npy"
    expect_error(capsys, ["run", w / "prog.bin", "-i", w / "x.npy", "-o", y,
                          "--trace", ro / "t.json"], f"cannot write {ro / 't.json'}")
    assert not y.exists()
    expect_error(capsys, ["run", w / "prog.bin", "-i", w / "x.npy", "-o", y, "--report-json",
                          w / "missing" / "r.json"], "No such file or directory")
    assert not y.exists()


def test_compile_checks_every_output_before_dumping(capsys, w):
    ro = _unwritable_directory(w)
    ir = w / "ir"
    expect_error(capsys, ["compile", w / "model.pt", "-o", w / "p.bin", "--dump-ir", ir,
                          "--sparsity", "2:4", "--sparsity-out", ro / "s.json"],
                 f"cannot write {ro / 's.json'}")
    assert not ir.exists() and not (w / "p.bin").exists()
    expect_error(capsys, ["compile", w / "model.pt", "-o", w / "p.bin", "--dump-ir",
                          ro / "ir"], "--dump-ir: cannot")
    assert not (w / "p.bin").exists()


def test_an_unwritable_output_stops_a_multi_output_run(capsys, w):
    """A program with one output written to -o FILE.npy: refused before the run when the
    program has several outputs (the check needs only prog.bin's symbols)."""
    program = w / "two.bin"
    import torch

    class Two(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.f, self.g = torch.nn.Linear(8, 8), torch.nn.Linear(8, 4)

        def forward(self, x):
            return self.f(x), self.g(x)

    ep = torch.export.export(Two().eval(), (torch.zeros(1, 4, 8),))
    torch.export.save(ep, w / "two.pt2")
    assert cli(capsys, "compile", w / "two.pt2", "-o", program)[0] == 0
    np.save(w / "x48.npy", np.zeros((1, 4, 8), np.float32))
    expect_error(capsys, ["run", program, "-i", w / "x48.npy", "-o", w / "y.npy", "--trace",
                          w / "t.json"], "the program has 2 outputs: use -o FILE.npz")
    assert not (w / "t.json").exists()


# ------------------------------------------------------------------ named pipes


@pytest.mark.parametrize("argv", [
    ["run", "{fifo}"], ["inspect", "{fifo}"], ["disasm", "{fifo}"], ["asm", "{fifo}", "-o", "p"],
    ["run", "{w}/prog.bin", "-i", "{fifo}"], ["report", "{w}/prog.bin", "{fifo}"],
])
def test_a_named_pipe_as_input_is_refused_not_waited_for(w, argv):
    """`nmc run FIFO` used to wait forever for a writer."""
    fifo = w / "pipe"
    os.mkfifo(fifo)
    argv = [a.format(fifo=fifo, w=w) for a in argv]
    proc = run_nmc(*argv, timeout=120)
    assert proc.returncode == 1, proc.stderr
    assert f"{fifo}: not a regular file but a named pipe (FIFO)" in proc.stderr


def test_sparsify_outputs_and_inputs(capsys, w):
    """The checkpoint is an output too: `-o m.ckpt` would be the default checkpoint itself;
    --config-out over the model file; all refused before any training."""
    out = w / "m.ckpt"
    expect_error(capsys, ["sparsify", "deit_digits", "--budget", "speedup=2", "-o", out],
                 f"-o {out} and the checkpoint {out} are the same file")
    expect_error(capsys, ["sparsify", w / "model.pt", "--budget", "speedup=2", "-o",
                          w / "s.pt2", "--config-out", w / "model.pt"],
                 f"the configuration {w / 'model.pt'} is the same file as the model")
    assert not out.exists() and not (w / "s.pt2").exists()

"""`nmc sparsify --nproc 2`: data-parallel training under torch's elastic launcher (gloo)
runs end to end on digits, gives the same files for the same command, resumes to the same
files after a rank is killed (--max-restarts), and reports errors as one line."""

import json
import subprocess
import sys
import time

import psutil
import pytest
import torch

from nmc.cli import main
from nmc.training import data_parallel

DEIT = ["--set", "dim=32", "--set", "depth=1", "--set", "heads=2"]
SHORT = ["--pretrain-epochs", "3", "--epochs", "1", "--finetune-epochs", "1", "-q"]
COMMAND = ["sparsify", "deit_digits", *DEIT, "--budget", "flops=2.5", *SHORT]


def _outputs(out):
    """The files a run writes, as bytes (the model file included: export is deterministic)."""
    return {suffix: out.with_name(out.stem + suffix).read_bytes()
            for suffix in (".pt", ".sparsity.json", ".report.json")}


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory):
    d = tmp_path_factory.mktemp("nproc")
    out = d / "a.pt"
    assert main([*COMMAND, "-o", str(out), "--report-json", str(d / "a.report.json"),
                 "--nproc", "2"]) == 0
    return out


def test_two_ranks_train_the_model_end_to_end(two_ranks, capsys):
    report = json.loads(two_ranks.with_name("a.report.json").read_text())
    assert report["method"] == "elsa" and report["flops"] >= 2.5
    config = json.loads(two_ranks.with_name("a.sparsity.json").read_text())
    assert config == report["config"] and len(config) == 4
    weights = torch.export.load(str(two_ranks)).state_dict
    for layer, pattern in config.items():  # the chosen masks are baked into the weights
        if pattern != "dense":
            n, m = (int(x) for x in pattern.split(":"))
            w = weights[f"{layer}.weight"]
            assert int((w.reshape(w.shape[0], -1, m) != 0).sum(-1).max()) <= n
    assert not data_parallel.under_torchrun() and data_parallel.size() == 1


def _rank_processes(parent: psutil.Process) -> list[psutil.Process]:
    return [p for p in parent.children(recursive=True)
            if "nmc.cli" in " ".join(p.cmdline())]


def test_the_same_command_resumes_to_the_same_files_after_a_rank_is_killed(two_ranks,
                                                                           tmp_path):
    """Rank 1 is killed (SIGKILL) once the first epoch's checkpoint exists; torch's agent
    restarts both ranks, which resume from the checkpoint; the files are the uninterrupted
    run's, byte for byte (so the same command gives the same files, too)."""
    out = tmp_path / "a.pt"
    run = subprocess.Popen(
        [sys.executable, "-m", "nmc.cli", *COMMAND, "-o", str(out), "--report-json",
         str(tmp_path / "a.report.json"), "--nproc", "2", "--max-restarts", "1"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    parent, killed = psutil.Process(run.pid), False
    deadline = time.monotonic() + 120
    while run.poll() is None and time.monotonic() < deadline:
        if not killed and out.with_suffix(".ckpt").exists():
            ranks = _rank_processes(parent)
            victim = [p for p in ranks if p.environ().get("RANK") == "1"]
            if victim:
                victim[0].kill()
                killed = True
        time.sleep(0.05)
    stdout, stderr = run.communicate(timeout=60)
    assert run.returncode == 0, stderr
    assert killed and "resuming from" in stderr, stderr
    assert _outputs(out) == _outputs(two_ranks)


@pytest.mark.parametrize("options, message", [
    (["--nproc", "2", "--nnodes", "2"], "give --rdzv-endpoint HOST:PORT"),
    (["--nproc", "2", "--nnodes", "2:1"], "need 0 < MIN <= MAX"),
    (["--nproc", "2", "--nnodes", "x"], "expected N or MIN:MAX"),
    (["--max-restarts", "2"], "go with --nproc N"),
    (["--nproc", "2", "--max-restarts", "-1"], "--max-restarts must be >= 0"),
    (["--nproc", "2", "--epochs", "-1"], "--epochs must be >= 0"),
])
def test_bad_launch_options_are_one_line_before_any_process_starts(tmp_path, capsys,
                                                                   options, message):
    args = ["sparsify", "deit_digits", "--budget", "flops=2", "-o", str(tmp_path / "o.pt")]
    assert main([*args, *options]) == 1
    err = capsys.readouterr().err
    assert err.startswith("nmc: error: ") and message in err and err.count("\n") == 1, err
    assert list(tmp_path.iterdir()) == []


def test_an_error_in_the_ranks_is_one_line(tmp_path, capsys):
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"not an archive")
    assert main(["sparsify", "deit_digits", "--budget", "flops=2", "--data", str(bad),
                 "-o", str(tmp_path / "o.pt"), "--nproc", "2"]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"nmc: error: --data {bad}: cannot read it as .npz") and \
        err.count("\n") == 1, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.npz"]


def test_two_ranks_distil_from_the_whole_splits_teacher(tmp_path):
    """--distill under --nproc 2: each rank computes the teacher's logits on its part of
    the train split (51 images: uneven parts) and every rank gets all of them, as one
    process computes them."""
    from nmc.models.datasets import load_dataset

    model_pt = tmp_path / "m.pt"
    assert main(["export", "deit_digits", *DEIT, "-o", str(model_pt)]) == 0
    out = tmp_path / "o.pt"
    assert main(["sparsify", str(model_pt), "--budget", "flops=2", "--epochs", "1",
                 "--finetune-epochs", "1", "--lr", "1e-3", "--subset", "train=51",
                 "--subset", "val=20", "--subset", "test=20", "-o", str(out), "-q",
                 "--distill", "--nproc", "2"]) == 0
    state = torch.load(out.with_suffix(".ckpt"), map_location="cpu", weights_only=True)
    train = load_dataset("digits", 16).subsets({"train": 51})["train"]  # deit_digits: 16x16
    model = torch.export.load(str(model_pt)).module()
    logits = torch.cat([model(x[None]) for x in train.images])  # exported for batch 1
    torch.testing.assert_close(state["results"]["teacher"], logits, rtol=0, atol=1e-5)

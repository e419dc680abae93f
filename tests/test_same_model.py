"""`--dense-baseline B.bin` and `nmc report A.bin B.bin` compare programs of one model
(issue 15, item 14): a Swin against a DeiT, or two sizes of one architecture, are refused
before anything runs; dense, N:M and window-pruned programs of one model are compared."""

from __future__ import annotations

from pathlib import Path

import pytest

from nmc.isa.container import read_program
from nmc.runtime.compare import model_difference

from robust_helpers import SMALL, cli, expect_error

pytestmark = pytest.mark.filterwarnings("ignore")


@pytest.fixture(scope="module")
def programs(tmp_path_factory) -> Path:
    """mlp_block small (dense, 2:4), mlp_block with another hidden size, swin_micro (dense,
    2:4, keep 0.2: its second stage's blocks are skipped)."""
    from nmc.cli import main

    d = tmp_path_factory.mktemp("same_model")
    runs = [
        ["export", "mlp_block", *SMALL, "-o", d / "mlp.pt2"],
        ["compile", d / "mlp.pt2", "-o", d / "mlp.bin"],
        ["compile", d / "mlp.pt2", "-o", d / "mlp24.bin", "--sparsity", "2:4"],
        ["export", "mlp_block", "--set", "dim=32", "--set", "hidden=64", "--set", "tokens=9",
         "-o", d / "wide.pt2"],
        ["compile", d / "wide.pt2", "-o", d / "wide.bin"],
        ["export", "swin_micro", "-o", d / "swin.pt2"],
        ["compile", d / "swin.pt2", "-o", d / "swin.bin", "-q"],
        ["compile", d / "swin.pt2", "-o", d / "swin24.bin", "--sparsity", "2:4", "-q"],
        ["compile", d / "swin.pt2", "-o", d / "swin02.bin", "--window-keep", "0.2", "-q"],
    ]
    for argv in runs:
        assert main([str(a) for a in argv]) == 0, argv
    return d


def test_programs_of_one_model_are_one_model(programs):
    d = programs
    assert model_difference(read_program(d / "mlp.bin"), read_program(d / "mlp24.bin")) is None
    swin = read_program(d / "swin.bin")
    for other in ("swin24.bin", "swin02.bin"):
        assert model_difference(swin, read_program(d / other)) is None, other
    skipped = read_program(d / "swin02.bin")
    assert len(skipped.meta["layers"]) < len(swin.meta["layers"])  # blocks skipped


def test_another_model_is_named_with_the_difference(programs):
    d = programs
    why = model_difference(read_program(d / "swin.bin"), read_program(d / "mlp.bin"))
    assert why == "inputs x[1, 3, 64, 64] vs x[1, 9, 32]"
    why = model_difference(read_program(d / "mlp.bin"), read_program(d / "wide.bin"))
    assert why == "layer fc1 has 6144 dense weight bytes vs 8192"


def test_report_refuses_programs_of_two_models(capsys, programs):
    d = programs
    expect_error(capsys, ["report", d / "swin24.bin", d / "mlp.bin"],
                 f"{d / 'mlp.bin'} is not the model of {d / 'swin24.bin'} (inputs "
                 "x[1, 3, 64, 64] vs x[1, 9, 32])", "compares programs of one model")
    expect_error(capsys, ["report", d / "mlp.bin", d / "wide.bin"],
                 "(layer fc1 has 6144 dense weight bytes vs 8192)")


def test_dense_baseline_of_another_model_is_refused(capsys, programs, tmp_path):
    d = programs
    for command in (["report", d / "swin24.bin"],
                    ["run", d / "swin24.bin", "--report", "--report-json", tmp_path / "r.json"]):
        expect_error(capsys, [*command, "--dense-baseline", d / "mlp.bin"],
                     f"--dense-baseline {d / 'mlp.bin'} is not the model of "
                     f"{d / 'swin24.bin'}", "give the same model compiled dense")
    assert not (tmp_path / "r.json").exists()


def test_one_model_is_still_compared(capsys, programs):
    d = programs
    rc, out, err = cli(capsys, "report", d / "swin.bin", d / "swin24.bin", d / "swin02.bin",
                       "--group", "block")
    assert rc == 0, err
    assert "swin24 vs swin" in out
    rc, out, err = cli(capsys, "report", d / "swin24.bin", "--dense-baseline", d / "swin.bin")
    assert rc == 0, err
    assert f"run of {d / 'swin.bin'}" in out

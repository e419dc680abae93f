"""The `nmc` command line: every subcommand, IR inspection options, errors as one line."""

import subprocess
import sys

import numpy as np
import pytest
import torch

from nmc.cli import main
from nmc.compiler.dialects.nm_attrs import DramAddrAttr, TilingAttr
from nmc.compiler.pipeline import DEFAULT_PIPELINE


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    d = tmp_path_factory.mktemp("cli")
    assert main(["export", "mlp_block", "--set", "dim=32", "--set", "hidden=48",
                 "--set", "tokens=9", "-o", str(d / "model.pt")]) == 0
    assert main(["compile", str(d / "model.pt"), "-o", str(d / "prog.bin"),
                 "--dump-ir", str(d / "ir")]) == 0
    return d


def _dump(stage: str) -> str:
    """The --dump-ir file name of a stage of the default pipeline."""
    return f"{DEFAULT_PIPELINE.index(stage) + 1:02d}-{stage}.mlir"


def test_dump_ir_writes_one_file_per_stage(built):
    names = sorted(p.name for p in (built / "ir").iterdir())
    assert names == [f"{i:02d}-{s}.mlir" for i, s in enumerate(("input",) + DEFAULT_PIPELINE)]
    assert '"torch.aten.linear"' in (built / "ir" / "00-input.mlir").read_text()
    # dumps are in generic form (upstream MLIR parses them: test_ir_forms.py)
    assert '"nm.linear"(' in (built / "ir" / "01-raise-torch-to-nm.mlir").read_text()
    assert f"#{TilingAttr.name}<" in (built / "ir" / _dump("schedule-tiles")).read_text()
    assert '"isa.matmul"() <{wait = ' in (built / "ir" / _dump("insert-tokens")).read_text()


def test_print_ir_after(built, capsys):
    assert main(["compile", str(built / "model.pt"), "-o", str(built / "p.bin"),
                 "--print-ir-after=plan-memory"]) == 0
    out = capsys.readouterr().out
    assert "IR after plan-memory" in out and f"#{DramAddrAttr.name}<" in out
    assert "IR after schedule-tiles" not in out


def test_print_ir_after_all(built, capsys):
    assert main(["compile", str(built / "model.pt"), "-o", str(built / "p.bin"),
                 "--print-ir-after-all"]) == 0
    out = capsys.readouterr().out
    for stage in DEFAULT_PIPELINE:
        assert f"IR after {stage}" in out


def test_opt_reproduces_the_compile_pipeline(built, capsys):
    spec = ",".join(DEFAULT_PIPELINE)
    assert main(["opt", "--print-op-generic", "-p", spec,
                 str(built / "ir" / "00-input.mlir")]) == 0
    assert capsys.readouterr().out == (built / "ir" / _dump("insert-tokens")).read_text()


def test_opt_runs_a_single_stage(built, capsys):
    dumped = str(built / "ir" / _dump("lower-nm-to-isa"))
    assert main(["opt", "--print-op-generic", "-p", "insert-tokens", dumped]) == 0
    assert capsys.readouterr().out == (built / "ir" / _dump("insert-tokens")).read_text()
    assert main(["opt", "-p", "insert-tokens", dumped]) == 0  # the readable form by default
    assert "isa.matmul wait=" in capsys.readouterr().out


def test_run_writes_output_equal_to_pytorch(built, capsys):
    x = torch.randn(1, 9, 32)
    np.save(built / "x.npy", x.numpy())
    assert main(["run", str(built / "prog.bin"), "--input", str(built / "x.npy"),
                 "-o", str(built / "y.npy"), "--report"]) == 0
    assert "matrix utilisation" in capsys.readouterr().out
    with torch.no_grad():
        want = torch.export.load(str(built / "model.pt")).module()(x).numpy()
    got = np.load(built / "y.npy")
    assert np.abs(got - want).max() <= 1e-4 * np.abs(want).max()


def test_disasm_asm_round_trip_is_byte_exact(built):
    assert main(["disasm", str(built / "prog.bin"), "-o", str(built / "prog.s")]) == 0
    assert main(["asm", str(built / "prog.s"), "-o", str(built / "again.bin")]) == 0
    assert (built / "again.bin").read_bytes() == (built / "prog.bin").read_bytes()


@pytest.mark.parametrize("argv, message", [
    (["compile", "missing.pt", "-o", "x.bin"], "model file not found"),
    (["run", "missing.bin"], "missing.bin"),
    (["opt", "-p", "no-such-pass", "/dev/null"], "no-such-pass"),
    (["export", "resnet50", "-o", "m.pt"], "unknown model 'resnet50'"),
    (["compile", "m.pt", "-o", "x.bin", "--target", "nonexistent"], "unknown target"),
])
def test_errors_are_one_line_with_status_1(tmp_path, monkeypatch, capsys, argv, message):
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert err.startswith("nmc: error: ") and message in err
    assert "Traceback" not in err
    assert not (tmp_path / "x.bin").exists()


def test_corrupt_program_is_rejected_by_the_console_script(built, tmp_path):
    data = bytearray((built / "prog.bin").read_bytes())
    data[-5] ^= 0xFF
    (tmp_path / "bad.bin").write_bytes(bytes(data))
    proc = subprocess.run([sys.executable, "-m", "nmc.cli", "run", str(tmp_path / "bad.bin")],
                          capture_output=True, text=True)
    assert proc.returncode == 1
    assert "checksum" in proc.stderr and "Traceback" not in proc.stderr


def test_unsupported_op_is_reported_by_name(tmp_path, capsys):
    class Sig(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = torch.nn.Linear(8, 8)

        def forward(self, x):
            return torch.sigmoid(self.fc(x))

    from nmc.models.registry import export_to_file

    export_to_file(Sig().eval(), torch.randn(1, 4, 8), tmp_path / "sig.pt")
    assert main(["compile", str(tmp_path / "sig.pt"), "-o", str(tmp_path / "x.bin")]) == 1
    err = capsys.readouterr().err
    assert "torch.aten.sigmoid" in err and "test_cli.py" in err
    assert not (tmp_path / "x.bin").exists()

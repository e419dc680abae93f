"""Command-line habits and the internal errors a new user met (issue 15, items 13, 15, 16):
--version, --debug after the subcommand, repeated options and JSON keys refused, counts
that must be positive, `nmc export` without a model, `nmc opt` given assembly, dict outputs
that keep their keys, `--window-keep ''`; a program too big for the target's DRAM refused at
compile time; a zero-token input, a seed beyond 64 bits, a mismatched `--reference` and a
file as the demo's work directory as one-line errors instead of internal ones."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from nmc.cli import main

from robust_helpers import (
    SMALL, built, check_one_line, cli, expect_error, run_nmc, target_toml,
)

pytestmark = pytest.mark.filterwarnings("ignore")


@pytest.fixture()
def d(tmp_path_factory) -> Path:
    return built(tmp_path_factory)


def _usage_error(capsys, argv, *fragments) -> str:
    """argparse's errors exit with status 2 through SystemExit."""
    with pytest.raises(SystemExit) as info:
        cli(capsys, *argv)
    assert info.value.code == 2
    return check_one_line(capsys.readouterr().err, *fragments)


def _export(module: torch.nn.Module, example: torch.Tensor, path: Path) -> Path:
    torch.export.save(torch.export.export(module.eval(), (example,)), path)
    return path


# ------------------------------------------------------------------ item 16


def test_version(capsys):
    from importlib.metadata import version

    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0
    assert capsys.readouterr().out == f"nmc {version('nmc')}\n"


def test_debug_after_the_subcommand_shows_the_traceback(capsys, tmp_path):
    missing = tmp_path / "missing.pt"
    expect_error(capsys, ["compile", missing, "-o", tmp_path / "p.bin"], "not found")
    from nmc.common.errors import NmcError

    for argv in (["--debug", "compile", missing, "-o", tmp_path / "p.bin"],
                 ["compile", missing, "-o", tmp_path / "p.bin", "--debug"]):
        with pytest.raises(NmcError):
            main([str(a) for a in argv])


@pytest.mark.parametrize("argv, option", [
    (["compile", "m.pt", "-o", "a.bin", "-o", "b.bin"], "-o/--output"),
    (["compile", "m.pt", "--output", "a.bin", "-o", "b.bin"], "-o/--output"),
    (["compile", "m.pt", "-o", "a.bin", "--sparsity", "2:4", "--sparsity", "1:4"], "--sparsity"),
    (["run", "p.bin", "--target", "sta_ref", "--target", "other.toml"], "--target"),
    (["export", "mlp_block", "--seed", "1", "--seed", "2", "-o", "m.pt"], "--seed"),
])
def test_a_repeated_option_is_refused(capsys, tmp_path, argv, option):
    """LLVM's parser: "may only occur zero or one times"; argparse kept the last silently."""
    line = _usage_error(capsys, argv, f"option {option} is given twice", "give it once")
    assert "(see `nmc" in line


def test_options_meant_to_repeat_still_do(capsys, tmp_path, d):
    rc, _, err = cli(capsys, "export", "mlp_block", "--set", "dim=32", "--set", "hidden=48",
                     "--set", "tokens=9", "-o", tmp_path / "m.pt")
    assert rc == 0, err
    rc, _, err = cli(capsys, "compile", d / "model.pt", "-o", tmp_path / "p.bin", "-q", "-q")
    assert rc == 0, err  # a flag repeated changes nothing


def test_duplicate_json_keys_are_refused(capsys, tmp_path, d):
    config = tmp_path / "s.json"
    config.write_text('{"fc1": "2:4", "fc2": "dense", "fc1": "dense"}')
    expect_error(capsys, ["compile", d / "model.pt", "-o", tmp_path / "p.bin", "--sparsity",
                          config], f"--sparsity {config}", "duplicate key 'fc1'")
    keep = tmp_path / "k.json"
    keep.write_text('{"layers.0.blocks.0": 0.5, "layers.0.blocks.0": 1.0}')
    expect_error(capsys, ["compile", d / "model.pt", "-o", tmp_path / "p.bin", "--window-keep",
                          keep], "duplicate key 'layers.0.blocks.0'")
    assert not (tmp_path / "p.bin").exists()


@pytest.mark.parametrize("value", ["-1", "0"])
def test_max_instructions_must_be_positive(capsys, d, value):
    _usage_error(capsys, ["run", d / "prog.bin", "-i", d / "x.npy", "--max-instructions", value],
                 f"argument --max-instructions: must be a positive integer, not {value}")


def test_export_without_a_model_name_says_so(capsys, tmp_path):
    rc, out, err = cli(capsys, "export", "-o", tmp_path / "a.pt")
    assert rc == 2 and out == ""
    check_one_line(err, "nmc export needs a model name: one of mlp_block, deit_tiny",
                   "`nmc export --list`")
    assert not (tmp_path / "a.pt").exists()
    rc, out, _ = cli(capsys, "export", "--list")
    assert rc == 0 and out.startswith("mlp_block")


def test_opt_given_assembly_says_what_it_is(capsys, d):
    line = expect_error(capsys, ["opt", d / "prog.s"], f"{d / 'prog.s'}:1:1:",
                        "this is nmc assembly", "nmc asm FILE -o prog.bin")
    assert "{first_char}" not in line and "after '#'" in line


def test_opt_fills_xdsl_placeholder_for_other_text(capsys, tmp_path):
    src = tmp_path / "x.mlir"
    src.write_text("# a comment, not MLIR\n")
    line = expect_error(capsys, ["opt", src], f"{src}:1:1:")
    assert "{first_char}" not in line and "nmc assembly" not in line


def test_dict_outputs_keep_their_keys(capsys, tmp_path):
    class Heads(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.fc, self.cls = torch.nn.Linear(8, 8), torch.nn.Linear(8, 3)

        def forward(self, x):
            return {"logits": self.cls(x), "features": self.fc(x)}

    torch.manual_seed(0)
    module = Heads().eval()
    x = torch.randn(1, 4, 8)
    model = _export(module, x, tmp_path / "heads.pt2")
    assert cli(capsys, "compile", model, "-o", tmp_path / "p.bin")[0] == 0
    np.save(tmp_path / "x.npy", x.numpy())
    rc, _, err = cli(capsys, "run", tmp_path / "p.bin", "-i", tmp_path / "x.npy",
                     "-o", tmp_path / "y.npz")
    assert rc == 0, err
    got = np.load(tmp_path / "y.npz")
    assert sorted(got) == ["features", "logits"]
    with torch.no_grad():
        want = module(x)
    for key in ("logits", "features"):
        np.testing.assert_allclose(got[key], want[key].numpy(), rtol=1e-5, atol=1e-6)


def test_tuple_outputs_stay_numbered(capsys, tmp_path):
    from nmc.compiler.frontend.importer import output_names

    class Pair(torch.nn.Module):
        def forward(self, x):
            return x.relu(), x.sigmoid()

    ep = torch.export.export(Pair(), (torch.zeros(2),))
    assert output_names(2, ep) == ["output_0", "output_1"]


def test_window_keep_empty_is_a_clear_error(capsys, tmp_path, d):
    line = expect_error(capsys, ["compile", d / "model.pt", "-o", tmp_path / "p.bin",
                                 "--window-keep", ""], "--window-keep '': empty")
    assert "Is a directory" not in line
    expect_error(capsys, ["compile", d / "model.pt", "-o", tmp_path / "p.bin",
                          "--window-keep", tmp_path], "a directory, not a ratio")


# ------------------------------------------------------------------ item 13


def test_a_program_too_big_for_the_target_dram_is_refused_at_compile_time(capsys, tmp_path, d):
    small = target_toml(tmp_path / "small.toml",
                        {"dram_words = 268435456": "dram_words = 1000"})
    out = tmp_path / "p.bin"
    line = expect_error(capsys, ["compile", d / "model.pt", "-o", out, "--target", small],
                        "the program needs 4736 DRAM words", "target 'sta_ref' has 1000")
    assert not out.exists(), line
    # the emulator's own check says the same numbers for a program built for a larger one
    expect_error(capsys, ["run", d / "prog.bin", "-i", d / "x.npy", "--target", small],
                 "program needs 4736 DRAM words but target 'sta_ref' has 1000")


# ------------------------------------------------------------------ item 15


def test_a_zero_token_input_is_a_clear_error(capsys, tmp_path):
    class Block(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.norm, self.fc = torch.nn.LayerNorm(64), torch.nn.Linear(64, 64)

        def forward(self, x):
            return x + self.fc(self.norm(x))

    model = _export(Block(), torch.zeros(1, 0, 64), tmp_path / "empty.pt2")
    expect_error(capsys, ["compile", model, "-o", tmp_path / "p.bin"],
                 "input 'x' has shape [1, 0, 64]: an empty tensor")


@pytest.mark.parametrize("command", [["export", "mlp_block", "-o", "{t}/m.pt"],
                                     ["sparsify", "deit_digits", "--budget", "speedup=2",
                                      "-o", "{t}/s.pt"]])
@pytest.mark.parametrize("seed", [str(1 << 64), "-1", str(10 ** 30)])
def test_a_seed_outside_64_bits_is_a_usage_error(capsys, tmp_path, command, seed):
    argv = [a.format(t=tmp_path) for a in command] + ["--seed", seed]
    _usage_error(capsys, argv, f"argument --seed: must be an integer in [0, 2^64), not {seed}")


def test_the_largest_seed_works(capsys, tmp_path):
    rc, _, err = cli(capsys, "export", "mlp_block", *SMALL, "--seed", str((1 << 64) - 1),
                     "-o", tmp_path / "m.pt")
    assert rc == 0, err


def test_eval_with_the_reference_of_another_model(capsys, tmp_path):
    """`nmc eval deit.bin --reference swin.pt` was an AssertionError from a torch guard."""
    tiny = ["--set", "dim=32", "--set", "depth=1", "--set", "heads=2"]
    assert cli(capsys, "export", "deit_digits", *tiny, "-o", tmp_path / "m.pt2")[0] == 0
    assert cli(capsys, "compile", tmp_path / "m.pt2", "-o", tmp_path / "m.bin")[0] == 0
    assert cli(capsys, "export", "deit_digits", *tiny, "--img-size", "32",
               "-o", tmp_path / "big.pt2")[0] == 0
    expect_error(capsys, ["eval", tmp_path / "m.bin", "--limit", "2", "--reference",
                          tmp_path / "big.pt2"],
                 f"--reference {tmp_path / 'big.pt2'} takes images [3, 32, 32] but "
                 f"{tmp_path / 'm.bin'} takes [3, 16, 16]")
    assert cli(capsys, "export", "deit_digits", *tiny, "--set", "num_classes=5",
               "-o", tmp_path / "five.pt2")[0] == 0
    expect_error(capsys, ["eval", tmp_path / "m.bin", "--limit", "2", "--reference",
                          tmp_path / "five.pt2"], "has 5 outputs but", "has 10")


def test_demo_workdir_that_is_a_file(capsys, tmp_path):
    x = tmp_path / "x.npy"
    x.write_bytes(b"data")
    expect_error(capsys, ["demo", "--workdir", x],
                 f"--workdir: cannot create directory {x}: File exists")
    assert x.read_bytes() == b"data"


def test_console_script_repeated_option_and_version(tmp_path):
    proc = run_nmc("compile", "m.pt", "-o", "a", "-o", "b")
    assert proc.returncode == 2
    check_one_line(proc.stderr, "option -o/--output is given twice (a, then b)")
    proc = run_nmc("--version")
    assert proc.returncode == 0 and proc.stdout.startswith("nmc ")

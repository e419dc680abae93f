"""nmc compile --target sta_int8 --calib / --quant / --quant-out and nmc run on int8
programs: the happy path, and every bad input one clear line with nothing written."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from robust_helpers import SMALL, cli, expect_error
from nmc.models.int8 import int8_reference
from nmc.models.registry import build_model


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("int8")
    from nmc.cli import main

    assert main(["export", "mlp_block", *SMALL, "-o", str(d / "m.pt")]) == 0
    np.save(d / "calib.npy", np.random.default_rng(0).standard_normal((2, 1, 9, 32))
            .astype(np.float32))
    np.save(d / "x.npy", np.random.default_rng(1).standard_normal((1, 9, 32)).astype(np.float32))
    return d


def test_compile_run_and_scales_file(capsys, files, tmp_path):
    rc, _, err = cli(capsys, "compile", files / "m.pt", "--target", "sta_int8", "--calib",
                     files / "calib.npy", "--quant-out", tmp_path / "q.json",
                     "-o", tmp_path / "p.bin", "-q")
    assert rc == 0, err
    scales = json.loads((tmp_path / "q.json").read_text())["layers"]
    assert list(scales) == ["fc1", "fc2"] and len(scales["fc1"]["weight_scales"]) == 48
    rc, _, err = cli(capsys, "run", tmp_path / "p.bin", "-i", files / "x.npy",
                     "-o", tmp_path / "y.npy", "-q")
    assert rc == 0, err
    module, _ = build_model("mlp_block", {"dim": 32, "hidden": 48, "tokens": 9}, seed=0)
    with torch.no_grad():
        want = int8_reference(module, scales)(torch.from_numpy(np.load(files / "x.npy")))
    np.testing.assert_array_equal(np.load(tmp_path / "y.npy"), want.numpy())
    rc, out, _ = cli(capsys, "inspect", tmp_path / "p.bin")
    assert "stored bytes per dense byte (values + indices): dense i8 1.000" in out
    expect_error(capsys, ["run", tmp_path / "p.bin", "-i", files / "x.npy", "--target",
                          "sta_ref"], "built for target 'sta_int8'")


def test_int8_target_needs_calibration(capsys, files, tmp_path):
    expect_error(capsys, ["compile", files / "m.pt", "--target", "sta_int8",
                          "-o", tmp_path / "p.bin"], "computes in int8", "--calib")
    assert not (tmp_path / "p.bin").exists()


def test_scales_options_need_an_int8_target(capsys, files, tmp_path):
    (tmp_path / "q.json").write_text('{"layers": {}}')
    expect_error(capsys, ["compile", files / "m.pt", "--quant", tmp_path / "q.json",
                          "-o", tmp_path / "p.bin"], "computes in fp32", "sta_int8")
    assert not (tmp_path / "p.bin").exists()


GOOD = {"input_scale": 0.02, "weight_scales": [0.01] * 48}


@pytest.mark.parametrize("layers,fragments", [
    ({"fc1": GOOD}, ["no scales for layer 'fc2'"]),
    ({"fc1": GOOD, "fc2": {"input_scale": 0.02}, "fc3": GOOD}, ["'fc3' is not an int8 layer"]),
    ({"fc1": {**GOOD, "weight_scales": [0.01] * 47}, "fc2": {"input_scale": 0.1}},
     ["layer 'fc1'", "48 finite positive"]),
    ({"fc1": {**GOOD, "input_scale": -1.0}, "fc2": {"input_scale": 0.1}},
     ["layer 'fc1'", "input_scale"]),
    ({"fc1": GOOD, "fc2": {"input_scale": 0.1, "weight_scales": [float("inf")] * 32}},
     ["layer 'fc2'", "32 finite positive"]),
])
def test_bad_scales_file(capsys, files, tmp_path, layers, fragments):
    (tmp_path / "q.json").write_text(json.dumps({"layers": layers}))
    expect_error(capsys, ["compile", files / "m.pt", "--target", "sta_int8", "--quant",
                          tmp_path / "q.json", "--quant-out", tmp_path / "out.json",
                          "-o", tmp_path / "p.bin"], "--quant", *fragments)
    assert not (tmp_path / "p.bin").exists() and not (tmp_path / "out.json").exists()


def test_bad_calibration_file(capsys, files, tmp_path):
    np.save(tmp_path / "c.npy", np.zeros((2, 3), np.float32))
    expect_error(capsys, ["compile", files / "m.pt", "--target", "sta_int8", "--calib",
                          tmp_path / "c.npy", "--quant-out", tmp_path / "q.json",
                          "-o", tmp_path / "p.bin"], "--calib", "shape")
    assert not (tmp_path / "p.bin").exists() and not (tmp_path / "q.json").exists()

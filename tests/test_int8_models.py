"""int8 end to end: nmc compile --target sta_int8 (calibrated scales) -> emulator, against
the int8 PyTorch reference (models/int8.py: the contract of docs/INT8.md written with
torch integer ops) given the scales the compiler wrote, bit for bit; and the reference's
own calibration against the compiler's scales. The error against the fp32 model is
printed (pytest -s) and bounded.

Bit for bit holds where every fp32 op runs the same kernels in both: the models here use
timm's explicit attention and a head of 12 classes (a multiple of 4, so int8 too). With
F.scaled_dot_product_attention or an fp32 head, the emulator's fp32 tiles sum in another
order than PyTorch's kernels (as in the fp32 tests, ~1e-7), so there the check is a
tolerance (test_fp32_parts_agree_to_rounding).
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from nmc.compiler.driver import compile_model
from nmc.isa.target import load_target
from nmc.models.int8 import calibrate, int8_layers, int8_reference
from nmc.models.nm_sparsity import apply_nm
from nmc.models.registry import build_model, export_to_file
from nmc.runtime.emulator import run_program

TARGET = load_target("sta_int8")
DEIT = {"img_size": 32, "patch": 8, "dim": 64, "depth": 2, "heads": 2, "num_classes": 12,
        "fused_attn": 0}
SWIN = {"num_classes": 12}


def compile_int8(tmp_path, name, params, pattern=None):
    """(model as compiled (N:M-masked), emulator output, scales, calibration inputs, x)."""
    module, example = build_model(name, params, seed=0)
    path = tmp_path / "model.pt"
    export_to_file(module, example, path)
    gen = torch.Generator().manual_seed(5)
    calib = torch.randn((3, *example.shape), generator=gen)
    np.save(tmp_path / "calib.npy", calib.numpy())
    sparsity = None
    if pattern is not None:
        sparsity = {"spec": pattern, "calib": "", "out": str(tmp_path / "sp.json"),
                    "report": False}
    program = compile_model(path, "sta_int8", sparsity=sparsity,
                            quant={"calib": str(tmp_path / "calib.npy"),
                                   "out": str(tmp_path / "q.json")})
    if pattern is not None:
        config = json.loads((tmp_path / "sp.json").read_text())
        module = apply_nm(module, {k: tuple(map(int, v.split(":"))) for k, v in config.items()
                                   if v != "dense"})
    x = torch.randn(example.shape, generator=torch.Generator().manual_seed(1))
    (name_in,) = [s.name for s in program.symbols if s.kind == "input"]
    (got,) = run_program(program, {name_in: x.numpy()}, TARGET, fill=float("nan")) \
        .outputs.values()
    scales = json.loads((tmp_path / "q.json").read_text())["layers"]
    return module, got, scales, list(calib), x


def check_against_reference(tmp_path, name, params, pattern=None, exact=True):
    module, got, scales, calib, x = compile_int8(tmp_path, name, params, pattern)
    assert list(scales) == int8_layers(module)  # the same layers are int8
    ref = int8_reference(module, scales)
    with torch.no_grad():
        want, fp32 = ref(x).numpy(), module(x).numpy()
    if exact:
        np.testing.assert_array_equal(got, want)
    else:
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-5 * np.abs(want).max())
    err = float(np.abs(got - fp32).max() / np.abs(fp32).max())
    print(f"\n{name} {pattern or 'dense'} int8 vs fp32: max relative error {err:.4f}")
    assert 0 < err < 0.05
    return module, scales, calib


@pytest.mark.parametrize("pattern", [None, "2:4"], ids=["dense", "2:4"])
def test_mlp_block_bit_exact_and_calibration_agrees(tmp_path, pattern):
    module, scales, calib = check_against_reference(tmp_path, "mlp_block", {"tokens": 17},
                                                    pattern)
    ours = calibrate(module, [c for c in calib], list(scales))
    assert {k: v["input_scale"] for k, v in ours.items()} == \
        {k: v["input_scale"] for k, v in scales.items()}


@pytest.mark.parametrize("pattern", [None, "2:4", "1:8"], ids=["dense", "2:4", "1:8"])
def test_deit_bit_exact(tmp_path, pattern):
    check_against_reference(tmp_path, "deit_tiny", DEIT, pattern)


@pytest.mark.parametrize("pattern", [None, "2:4"], ids=["dense", "2:4"])
def test_swin_bit_exact(tmp_path, pattern):
    check_against_reference(tmp_path, "swin_micro", SWIN, pattern)


def test_fp32_parts_agree_to_rounding(tmp_path):
    """sdpa and a 10-class fp32 head: the fp32 parts sum in other orders."""
    check_against_reference(tmp_path, "deit_tiny", {**DEIT, "num_classes": 10,
                                                    "fused_attn": 1}, exact=False)


def test_scales_file_round_trips(tmp_path):
    """--quant with the file --quant-out wrote gives the same program."""
    from nmc.isa.container import program_to_bytes

    module, example = build_model("mlp_block", {"tokens": 5}, seed=0)
    export_to_file(module, example, tmp_path / "m.pt")
    np.save(tmp_path / "c.npy", torch.randn((2, *example.shape)).numpy())
    first = compile_model(tmp_path / "m.pt", "sta_int8",
                          quant={"calib": str(tmp_path / "c.npy"), "out": str(tmp_path / "q.json")})
    again = compile_model(tmp_path / "m.pt", "sta_int8", quant={"quant": str(tmp_path / "q.json")})
    assert program_to_bytes(first) == program_to_bytes(again)


def test_searches_cost_int8_layers_on_an_int8_target():
    """ELSA and SparseViT cost layers before the quantize pass marks them: on an int8
    target the cost is the int8 kernel's (LinearProblem.on)."""
    from dataclasses import replace

    from nmc.compiler.kernels.linear import LINEAR, LinearProblem
    from nmc.compiler.sparsity.cost import linear_cycles

    problem = LinearProblem(197, 384, 1536, True)
    ref = load_target("sta_ref")
    for pattern in (None, (2, 4)):
        int8 = LINEAR.cycles(replace(problem, pattern=pattern, int8=True), TARGET)
        assert linear_cycles(problem, pattern, TARGET) == int8
        assert int8 != linear_cycles(problem, pattern, ref)
    odd = LinearProblem(197, 384, 10, True)  # a 10-class head stays fp32
    assert linear_cycles(odd, None, TARGET) == LINEAR.cycles(odd, TARGET)


@pytest.mark.parametrize("pattern", [None, (2, 4), (1, 8)], ids=["dense", "2:4", "1:8"])
def test_int8_linear_cost_follows_the_emulator_timing(pattern):
    """The tile search ranks int8 tilings by LINEAR.cost (pre-pass wait included): it must
    stay close to the emulator's timing rule on the kernel it emits."""
    from nmc.compiler.kernels.common import simulate_cycles
    from nmc.compiler.kernels.kernel import Buffers
    from nmc.compiler.kernels.linear import LINEAR, LinearProblem

    for M, K, N, activation in [(197, 384, 1152, None), (197, 768, 3072, "gelu"),
                                (197, 1536, 384, None)]:
        problem = LinearProblem(M, K, N, True, pattern, activation, int8=True, inv_scale=0.5)
        tiling = LINEAR.choose(problem, TARGET, "test")
        buffers = Buffers({"input": 0, "weight": 10**6, "bias": None, "result": 3 * 10**6,
                           "scratch": 4 * 10**6})
        instrs = LINEAR.emit(problem, tiling, buffers, TARGET)
        assert LINEAR.cost(problem, tiling, TARGET).cycles == \
            pytest.approx(simulate_cycles(instrs, TARGET), rel=0.08), (M, K, N, tiling)

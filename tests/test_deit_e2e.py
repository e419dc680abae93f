"""DeiT end to end: build_model -> torch.export -> nmc compile -> prog.bin -> emulator,
against the PyTorch forward of the same module (relative max error < 1e-4).

Small configurations, both attention forms (sdpa and timm's explicit one), deit_tiny at
224x224 (both forms) and a non-standard configuration (160x160 images, dim 256, 4 heads,
batch 2) all run in the default suite: each takes a few seconds (deit_tiny ~5-8 s).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from nmc.compiler.driver import compile_model
from nmc.isa.container import program_from_bytes, program_to_bytes
from nmc.isa.target import load_target
from nmc.models.registry import build_model, export_to_file
from nmc.runtime.emulator import run_program

TARGET = load_target()


def rel_err(got, want):
    return float(np.abs(got - want).max() / np.abs(want).max())


def compile_and_run(tmp_path, name, params, seed=0):
    module, example = build_model(name, params, seed=seed)
    path = tmp_path / "model.pt"
    export_to_file(module, example, path)
    program = program_from_bytes(program_to_bytes(compile_model(path)))
    x = torch.randn(example.shape, generator=torch.Generator().manual_seed(seed + 1))
    (name_in,) = [s.name for s in program.symbols if s.kind == "input"]
    result = run_program(program, {name_in: x.numpy()}, TARGET, fill=float("nan"))
    with torch.no_grad():
        want = module(x).numpy()
    (got,) = result.outputs.values()
    return program, result, got, want


SMALL = {"img_size": 32, "patch": 8, "dim": 64, "depth": 2, "heads": 2, "num_classes": 10}
ODD = {"img_size": 40, "patch": 8, "dim": 48, "depth": 2, "heads": 3, "num_classes": 7,
       "batch": 2}  # 26 tokens, head dim 16, nothing a multiple of the 16x16 array but dim


@pytest.mark.parametrize("fused_attn", [1, 0], ids=["sdpa", "explicit"])
@pytest.mark.parametrize("params", [SMALL, ODD], ids=["small", "odd"])
def test_small_deit_matches_pytorch(tmp_path, params, fused_attn):
    program, result, got, want = compile_and_run(
        tmp_path, "deit_tiny", {**params, "fused_attn": fused_attn})
    assert got.shape == want.shape
    assert rel_err(got, want) < 1e-4
    kinds = {layer.kind for layer in result.layers}
    assert {"patch_embed", "concat", "add", "attention", "linear", "layer_norm",
            "select"} <= kinds


def test_report_has_per_layer_matrix_utilisation(tmp_path):
    from nmc.runtime.report import format_report

    program, result, _, _ = compile_and_run(tmp_path, "deit_tiny", SMALL)
    linears = [l for l in result.layers if l.kind == "linear"]
    assert linears and all(0 < l.matrix_utilization <= 1 for l in linears)
    assert all(l.matrix_utilization == 0 for l in result.layers if l.kind == "layer_norm")
    assert sum(l.macs for l in result.layers) == result.matrix_macs
    text = format_report(result, program)
    assert "mx util" in text and "blocks.0.attn" in text


def test_fast_and_reference_emulation_agree(tmp_path):
    """The emulator's fast path and its instruction-by-instruction reference give the same
    outputs, cycles and statistics on a whole compiled DeiT."""
    module, example = build_model("deit_tiny", ODD, seed=0)
    export_to_file(module, example, tmp_path / "m.pt")
    program = compile_model(tmp_path / "m.pt")
    x = {"x": np.random.default_rng(0).standard_normal(example.shape).astype(np.float32)}
    (name_in,) = [s.name for s in program.symbols if s.kind == "input"]
    x = {name_in: x["x"]}
    fast = run_program(program, x, TARGET, trace=True)
    ref = run_program(program, x, TARGET, trace=True, fast=False)
    for k in fast.outputs:
        np.testing.assert_array_equal(fast.outputs[k], ref.outputs[k])
    assert fast.trace == ref.trace
    for field in ("total_cycles", "busy_cycles", "stall_cycles", "instruction_counts",
                  "layers", "matrix_macs", "dram_bytes_read", "dram_bytes_written",
                  "leftover_tokens"):
        assert getattr(fast, field) == getattr(ref, field), field


@pytest.mark.parametrize("fused_attn", [1, 0], ids=["sdpa", "explicit"])
def test_deit_tiny_224(tmp_path, fused_attn):
    _, result, got, want = compile_and_run(tmp_path, "deit_tiny", {"fused_attn": fused_attn})
    assert got.shape == (1, 1000)
    assert rel_err(got, want) < 1e-4


def test_non_standard_deit(tmp_path):
    # 160x160 images, patch 16 (101 tokens), dim 256, 4 heads, batch 2, 3 blocks
    params = {"img_size": 160, "patch": 16, "dim": 256, "depth": 3, "heads": 4,
              "num_classes": 100, "batch": 2}
    _, result, got, want = compile_and_run(tmp_path, "deit_tiny", params)
    assert got.shape == (2, 100)
    assert rel_err(got, want) < 1e-4


@pytest.mark.slow
@pytest.mark.parametrize("arch", ["deit_small", "deit_base"])
def test_full_size_deit_224(tmp_path, arch):
    # outside the default suite (make test-all): DeiT-base compiles ~20 s, runs ~1 s, and
    # needs ~2 GB of memory
    _, result, got, want = compile_and_run(tmp_path, arch, {})
    assert got.shape == (1, 1000)
    assert rel_err(got, want) < 1e-4

"""model.pt -> nmc compile -> prog.bin -> emulator, against PyTorch's forward."""

import numpy as np
import pytest
import torch

from nmc.compiler.dialects.nm_attrs import has_tiling, tiling
from nmc.compiler.driver import compile_model
from nmc.isa.container import program_from_bytes, program_to_bytes
from nmc.isa.target import load_target
from nmc.models.registry import build_model, export_to_file
from nmc.runtime.emulator import run_program

TARGET = load_target()


def compile_and_run(tmp_path, params, seed=0):
    module, example = build_model("mlp_block", params, seed=seed)
    path = tmp_path / "model.pt"
    export_to_file(module, example, path)
    # through the bytes of prog.bin, as `nmc run` sees it
    program = program_from_bytes(program_to_bytes(compile_model(path)))
    x = torch.randn(example.shape, generator=torch.Generator().manual_seed(seed + 1))
    result = run_program(program, {"x": x.numpy()}, TARGET)
    with torch.no_grad():
        want = module(x).numpy()
    return result, result.outputs["output"], want


def rel_err(got, want):
    return float(np.abs(got - want).max() / np.abs(want).max())


@pytest.mark.parametrize("params", [
    {"dim": 192, "hidden": 768, "tokens": 197},  # DeiT-tiny's MLP half, the shape
    {"dim": 40, "hidden": 72, "tokens": 13, "batch": 2},  # nothing divides the 16x16 array
    {"dim": 24, "hidden": 100, "tokens": 37},
    {"dim": 8, "hidden": 8, "tokens": 1},
    {"dim": 96, "hidden": 1100, "tokens": 70},  # hidden beyond one n tile, k tiled in fc2
], ids=lambda p: "-".join(f"{k}{v}" for k, v in p.items()))
def test_emulator_matches_pytorch(tmp_path, params):
    result, got, want = compile_and_run(tmp_path, params)
    assert got.shape == want.shape
    assert rel_err(got, want) < 1e-4


def test_report_covers_every_layer_and_unit(tmp_path):
    result, _, _ = compile_and_run(tmp_path, {"dim": 64, "hidden": 128, "tokens": 50})
    # the GELU is fused into fc1's epilogue (fuse-activations)
    assert [l.name for l in result.layers] == ["norm", "fc1", "fc2", "add"]
    assert [l.kind for l in result.layers] == ["layer_norm", "linear", "linear", "add"]
    assert result.matrix_macs == 2 * 50 * 64 * 128
    # the units overlap: the run is shorter than the sum of all the work
    assert result.total_cycles < sum(result.busy_cycles.values())
    assert result.total_cycles >= max(result.busy_cycles.values())


def test_different_weights_give_different_outputs(tmp_path):
    # guards against a program that ignores its constants
    _, got0, want0 = compile_and_run(tmp_path, {"dim": 16, "hidden": 32, "tokens": 5}, seed=0)
    _, got1, want1 = compile_and_run(tmp_path, {"dim": 16, "hidden": 32, "tokens": 5}, seed=3)
    assert rel_err(got1, want1) < 1e-4 and rel_err(got0, want0) < 1e-4
    assert not np.allclose(got0, got1)


def _tiles_of(module) -> list[tuple]:
    return sorted({tuple(tiling(op).items()) for op in module.walk() if has_tiling(op)})


def test_small_scratchpad_gets_smaller_tiles_and_same_numerics(tmp_path):
    from nmc.isa.target import TARGETS_DIR

    small = tmp_path / "small.toml"
    small.write_text((TARGETS_DIR / "sta_ref.toml").read_text()
                     .replace("spad_words = 65536", "spad_words = 8192")
                     .replace("acc_words = 16384", "acc_words = 1024"))
    module, example = build_model("mlp_block", {"dim": 64, "hidden": 256, "tokens": 40})
    export_to_file(module, example, tmp_path / "m.pt")
    seen = {}

    def keep(stage, mod):
        if stage == "schedule-tiles":
            seen[len(seen)] = _tiles_of(mod)

    programs = [compile_model(tmp_path / "m.pt", t, keep) for t in ("sta_ref", str(small))]
    big_tiles, small_tiles = seen[0], seen[1]
    assert big_tiles and small_tiles and big_tiles != small_tiles
    x = torch.randn(example.shape)
    with torch.no_grad():
        want = module(x).numpy()
    small_target = load_target(str(small))
    for program, target in zip(programs, (TARGET, small_target)):
        # the emulator's bounds checks prove every buffer lies inside the target's memories
        got = run_program(program, {"x": x.numpy()}, target).outputs["output"]
        assert rel_err(got, want) < 1e-4

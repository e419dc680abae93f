"""A model that is itself an nn.Sequential: its parameters are `0.weight`, `1.bias`, ... and
its layers `0`, `1`; it compiles (no internal error on the digit-led names) and runs equal
to PyTorch, the layers keeping PyTorch's names."""

import numpy as np
import torch
from torch import nn

from nmc.cli import main
from nmc.compiler.driver import compile_model
from nmc.isa.target import load_target
from nmc.models.registry import export_to_file
from nmc.runtime.emulator import run_program


def test_top_level_sequential_matches_pytorch(tmp_path):
    torch.manual_seed(0)
    model = nn.Sequential(nn.LayerNorm(64), nn.Linear(64, 64), nn.GELU(),
                          nn.Linear(64, 32)).eval()
    x = torch.randn(1, 5, 64)
    export_to_file(model, x, tmp_path / "seq.pt2")
    program = compile_model(tmp_path / "seq.pt2")
    assert set(program.meta["layers"]) == {"1", "3"}  # the linears, named as in PyTorch
    (name,) = [s.name for s in program.symbols if s.kind == "input"]
    got = next(iter(run_program(program, {name: x.numpy()}, load_target()).outputs.values()))
    with torch.no_grad():
        want = model(x).numpy()
    assert np.abs(got - want).max() <= 1e-4 * np.abs(want).max()
    # the command line too (it exited 70, "internal error", before)
    assert main(["compile", str(tmp_path / "seq.pt2"), "-o", str(tmp_path / "seq.bin")]) == 0

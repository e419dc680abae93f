"""nm.mul and nm.sub (with nm.add, the vector unit's binary ops): raised from
aten.mul.Tensor / aten.sub.Tensor, compiled and run on the emulator against PyTorch; a
LayerScale (DINOv2) is an nm.mul by its per-channel gamma."""

import numpy as np
import pytest
import torch
from torch import nn

from nmc.compiler.driver import compile_model
from nmc.isa.target import load_target
from nmc.models.nm_sparsity import apply_nm
from nmc.models.registry import build_model, export_to_file
from nmc.runtime.emulator import run_program

TARGET = load_target()


class Elementwise(nn.Module):
    """Every form the raising accepts: same shapes, a per-channel parameter on either side
    of a product, a broadcast subtrahend, a position-embedding-like [1, N, D] operand."""

    def __init__(self, tokens: int = 5, dim: int = 16) -> None:
        super().__init__()
        self.fc = nn.Linear(dim, dim)
        self.gamma = nn.Parameter(torch.rand(dim) + 0.5)
        self.shift = nn.Parameter(torch.randn(dim))
        self.table = nn.Parameter(torch.randn(1, tokens, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.fc(x)
        a = y * self.gamma          # rhs broadcast (a LayerScale)
        b = self.gamma * x          # lhs broadcast: swapped, multiplication commutes
        c = a * b - y               # same shapes
        d = c - self.shift          # broadcast subtrahend
        return d * self.table       # [1, N, D] over [B, N, D]


def _compile_run(tmp_path, module, example, **compile_options):
    export_to_file(module, example, tmp_path / "m.pt2")
    program = compile_model(tmp_path / "m.pt2", **compile_options)
    (name,) = [s.name for s in program.symbols if s.kind == "input"]
    result = run_program(program, {name: example.numpy()}, TARGET, fill=float("nan"),
                         trace=True)  # the per-layer report needs the trace
    return program, result, next(iter(result.outputs.values()))


def _rel(got, want) -> float:
    return float(np.abs(got - want).max() / np.abs(want).max())


@pytest.mark.parametrize("batch", [1, 2])
def test_mul_and_sub_match_pytorch(tmp_path, batch):
    torch.manual_seed(0)
    module = Elementwise().eval()
    x = torch.randn(batch, 5, 16)
    _, result, got = _compile_run(tmp_path, module, x)
    with torch.no_grad():
        want = module(x).numpy()
    assert _rel(got, want) < 1e-5
    kinds = [layer.kind for layer in result.layers]
    assert kinds.count("mul") == 4 and kinds.count("sub") == 2


class BroadcastMinuend(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.shift = nn.Parameter(torch.randn(8))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.shift - x


def test_a_broadcast_minuend_is_refused_with_its_reason(tmp_path):
    from nmc.compiler.errors import UnsupportedOpsError

    with pytest.raises(UnsupportedOpsError, match="torch.aten.sub.Tensor.*the second must"):
        _compile_run(tmp_path, BroadcastMinuend().eval(), torch.randn(1, 3, 8))


@pytest.mark.parametrize("spec", [None, "2:4"])
def test_dinov2_layer_scale_matches_pytorch(tmp_path, spec):
    """vit_small_patch14_dinov2 (LayerScale, patch 14, class-feature output) at 56 x 56,
    dense and 2:4, against the PyTorch reference of the same (masked) model."""
    module, example = build_model("vit_small_patch14_dinov2", {"depth": 2, "img_size": 56})
    options = {"sparsity": {"spec": spec}} if spec else {}
    program, _, got = _compile_run(tmp_path, module, example, **options)
    config = {name: tuple(int(v) for v in info["pattern"].split(":"))
              for name, info in program.meta["layers"].items()
              if info.get("pattern", "dense") != "dense"}
    if spec:
        assert len(config) == 8  # qkv, proj, fc1, fc2 of both blocks
    with torch.no_grad():
        want = (apply_nm(module, config) if config else module)(example).numpy()
    assert got.shape == (1, 384)
    assert _rel(got, want) < 1e-4

"""Ops a ViT user expects beyond the built-in models, compiled and run on the emulator
against PyTorch: ReLU, products and sums with numbers (x * c, x / 2^k, x + c, x - c,
c - x), a standalone softmax, LayerNorm without affine, a patch convolution without bias,
and Conv2d + BatchNorm2d in eval mode (folded into the convolution); and the division the
vector unit cannot do exactly, refused with its reason."""

import numpy as np
import pytest
import torch
from torch import nn

from nmc.compiler.driver import compile_model
from nmc.compiler.errors import UnsupportedOpsError
from nmc.isa.target import load_target
from nmc.models.registry import export_to_file
from nmc.runtime.emulator import run_program

from robust_helpers import expect_process_error, run_nmc


class PatchStem(nn.Module):
    """A patch convolution without bias (optionally with BatchNorm after it), then tokens."""

    def __init__(self, batch_norm: bool, dim: int = 16, patch: int = 4) -> None:
        super().__init__()
        self.proj = nn.Conv2d(3, dim, patch, stride=patch, bias=False)
        self.bn = nn.BatchNorm2d(dim) if batch_norm else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(self.proj(x)).flatten(2).transpose(1, 2)


class VectorOps(nn.Module):
    def __init__(self, batch_norm: bool = False, dim: int = 16) -> None:
        super().__init__()
        self.stem = PatchStem(batch_norm, dim)
        self.norm = nn.LayerNorm(dim, elementwise_affine=False)
        self.fc = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t = self.norm(self.stem(x))
        y = torch.relu(self.fc(t))
        y = y * 0.7 + 1.5            # mul.Scalar, add of a number
        y = 3.0 * y - 0.25           # rmul, sub of a number
        y = 2.0 - y / 4.0            # division by a power of two, c - x
        return torch.softmax(y, dim=-1) * t - t  # standalone softmax, tensor * tensor, -


def _run(tmp_path, module, x):
    export_to_file(module, x, tmp_path / "m.pt2")
    program = compile_model(tmp_path / "m.pt2")
    (name,) = [s.name for s in program.symbols if s.kind == "input"]
    result = run_program(program, {name: x.numpy()}, load_target(), fill=float("nan"),
                         trace=True)
    return result, next(iter(result.outputs.values()))


def _close(got, want) -> None:
    assert np.abs(got - want).max() <= 1e-4 * np.abs(want).max()


@pytest.mark.parametrize("batch", [1, 2])
def test_vector_ops_match_pytorch(tmp_path, batch):
    torch.manual_seed(0)
    module = VectorOps().eval()
    x = torch.randn(batch, 3, 16, 16)
    result, got = _run(tmp_path, module, x)
    with torch.no_grad():
        want = module(x).numpy()
    _close(got, want)
    kinds = [layer.kind for layer in result.layers]
    for kind, count in (("relu", 1), ("scale", 3), ("softmax", 1), ("layer_norm", 1)):
        assert kinds.count(kind) == count, (kind, kinds)


def test_conv_batchnorm_is_folded_and_matches_pytorch(tmp_path):
    torch.manual_seed(1)
    module = VectorOps(batch_norm=True).eval()
    bn = module.stem.bn
    with torch.no_grad():  # statistics and affine far from the identity
        bn.running_mean.uniform_(-2, 2)
        bn.running_var.uniform_(0.2, 4)
        bn.weight.uniform_(0.5, 2)
        bn.bias.uniform_(-1, 1)
    x = torch.randn(1, 3, 16, 16)
    result, got = _run(tmp_path, module, x)
    with torch.no_grad():
        want = module(x).numpy()
    _close(got, want)
    kinds = [layer.kind for layer in result.layers]
    assert kinds.count("patch_embed") == 1 and "batch_norm" not in " ".join(kinds)


class Divide(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x / 3.0 + x / x


def test_inexact_division_is_refused_with_its_reason(tmp_path):
    export_to_file(Divide().eval(), torch.randn(1, 4, 8), tmp_path / "div.pt2")
    with pytest.raises(UnsupportedOpsError) as info:
        compile_model(tmp_path / "div.pt2")
    assert [op.op_name for op in info.value.ops] == ["torch.aten.div.Scalar",
                                                      "torch.aten.div.Tensor"]
    line = expect_process_error(run_nmc("compile", tmp_path / "div.pt2", "-o",
                                        tmp_path / "div.bin"),
                                "torch.aten.div.Scalar", "c = 3.0 is not",
                                "the vector unit has no division")
    assert "torch.aten.div.Tensor" in line


class TokenBatchNorm(nn.Module):
    """BatchNorm1d over the channels of a token sequence: it follows a Linear, not a Conv2d."""

    def __init__(self, dim: int = 8) -> None:
        super().__init__()
        self.fc = nn.Linear(dim, dim)
        self.bn = nn.BatchNorm1d(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(self.fc(x).transpose(1, 2)).transpose(1, 2)


@pytest.mark.parametrize("train", [False, True])
def test_batchnorm_nmc_cannot_fold_is_refused_with_its_reason(tmp_path, train):
    # torch.export itself, since export_to_file puts the module in eval mode
    program = torch.export.export(TokenBatchNorm().train(train), (torch.randn(2, 5, 8),))
    torch.export.save(program, tmp_path / "bn.pt2")
    with pytest.raises(UnsupportedOpsError) as info:
        compile_model(tmp_path / "bn.pt2")
    (op,) = info.value.ops
    assert op.module_path == "bn"
    assert ("model.eval()" in op.reason) == train
    assert ("directly after a Conv2d" in op.reason) != train

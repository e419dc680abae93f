"""torch.export graphs in decomposed form compile and match PyTorch: nmc's DeiT after
`ep.run_decompositions()` (the default table: linear -> mm + add, layer_norm -> mean /
rsqrt arithmetic, softmax -> exp / sum / div, unbind -> squeeze.dims), and PyTorch's own
nn.MultiheadAttention and nn.TransformerEncoderLayer (their attention is views of the
packed in-projection around sdpa or bmm)."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch

from nmc.common.fileio import atomic_write_bytes
from nmc.compiler.driver import compile_model
from nmc.isa.target import load_target
from nmc.models.registry import build_model
from nmc.runtime.emulator import run_program

TARGET = load_target()
SMALL = {"img_size": 32, "patch": 8, "dim": 64, "depth": 2, "heads": 2, "num_classes": 10}


def _save(program: torch.export.ExportedProgram, path) -> None:
    buf = io.BytesIO()
    torch.export.save(program, buf)
    atomic_write_bytes(path, buf.getvalue())


def _error_vs_pytorch(ep: torch.export.ExportedProgram, module: torch.nn.Module,
                      x: torch.Tensor, path) -> float:
    """`ep` saved to `path`, compiled and run on `x` on the emulator: its largest error
    relative to `module(x)`'s largest value."""
    _save(ep, path)
    program = compile_model(path)
    (name,) = [s.name for s in program.symbols if s.kind == "input"]
    (got,) = run_program(program, {name: x.numpy()}, TARGET,
                         fill=float("nan")).outputs.values()
    with torch.no_grad():
        want = module(x).numpy()
    return float(np.abs(got - want).max() / np.abs(want).max())


@pytest.mark.parametrize("fused_attn", [1, 0], ids=["sdpa", "explicit"])
def test_deit_after_default_decompositions_matches_pytorch(tmp_path, fused_attn):
    module, example = build_model("deit_tiny", {**SMALL, "fused_attn": fused_attn}, seed=0)
    module.eval()
    with torch.no_grad():
        ep = torch.export.export(module, (example,)).run_decompositions()
    ops = {str(n.target) for n in ep.graph.nodes if n.op == "call_function"}
    assert "aten.linear.default" not in ops and "aten.layer_norm.default" not in ops
    x = torch.randn(example.shape, generator=torch.Generator().manual_seed(1))
    assert _error_vs_pytorch(ep, module, x, tmp_path / "deit_dec.pt2") < 1e-4


class _SelfAttention(torch.nn.Module):
    """nn.MultiheadAttention as self-attention; `need_weights` picks PyTorch's path: sdpa
    (False) or bmm + softmax with averaged weights (True)."""

    def __init__(self, need_weights: bool, batch_first: bool = True):
        super().__init__()
        self.attn = torch.nn.MultiheadAttention(32, 4, batch_first=batch_first)
        self.need_weights = need_weights

    def forward(self, x):
        return self.attn(x, x, x, need_weights=self.need_weights)[0]


def _encoder_layer(norm_first: bool) -> torch.nn.Module:
    return torch.nn.TransformerEncoderLayer(32, 4, 64, activation="gelu", batch_first=True,
                                            norm_first=norm_first)


@pytest.mark.parametrize("make", [
    lambda: _SelfAttention(False), lambda: _SelfAttention(True),
    lambda: _encoder_layer(False), lambda: _encoder_layer(True),
], ids=["mha-sdpa", "mha-weights", "encoder-post-norm", "encoder-pre-norm"])
@pytest.mark.parametrize("decompose", [False, True], ids=["export", "decomposed"])
def test_pytorch_attention_modules_match_pytorch(tmp_path, make, decompose):
    torch.manual_seed(0)
    module = make().eval()
    x = torch.randn(1, 10, 32)
    with torch.no_grad():
        ep = torch.export.export(module, (x,))
        if decompose:
            ep = ep.run_decompositions()
    assert _error_vs_pytorch(ep, module, x, tmp_path / "m.pt2") < 1e-4


@pytest.mark.parametrize("batch_first", [True, False], ids=["batch-first", "seq-first"])
@pytest.mark.parametrize("kind", ["mha", "encoder"])
def test_pytorch_attention_modules_at_batch_2(tmp_path, batch_first, kind):
    """At batch > 1 PyTorch's in-projection runs on [N, B, E] (tokens first): nm.attention
    gets its qkv rows reordered to (image, token) and its result back (permute_rows)."""
    torch.manual_seed(0)
    if kind == "mha":
        module = _SelfAttention(False, batch_first).eval()
    else:
        module = torch.nn.TransformerEncoderLayer(32, 4, 64, activation="gelu",
                                                  batch_first=batch_first).eval()
    x = torch.randn((2, 10, 32) if batch_first else (10, 2, 32))
    with torch.no_grad():
        ep = torch.export.export(module, (x,))
    assert _error_vs_pytorch(ep, module, x, tmp_path / "m.pt2") < 1e-4


class _PlainNorm(torch.nn.Module):
    """LayerNorm(elementwise_affine=False): native_layer_norm with no weights once
    decomposed."""

    def __init__(self):
        super().__init__()
        self.norm = torch.nn.LayerNorm(16, elementwise_affine=False)
        self.fc = torch.nn.Linear(16, 8)

    def forward(self, x):
        return self.fc(self.norm(x))


def test_layer_norm_without_affine_after_default_decompositions_matches_pytorch(tmp_path):
    torch.manual_seed(0)
    module = _PlainNorm().eval()
    example = torch.randn(1, 5, 16)
    with torch.no_grad():
        ep = torch.export.export(module, (example,)).run_decompositions()
    assert any(n.target is torch.ops.aten.native_layer_norm.default and n.args[2] is None
               for n in ep.graph.nodes)
    x = torch.randn(example.shape, generator=torch.Generator().manual_seed(1))
    assert _error_vs_pytorch(ep, module, x, tmp_path / "plain.pt2") < 1e-5

"""ONNX models in: nmc's DeiT exported with torch.onnx.export, compiled by `nmc compile
model.onnx` (torch-mlir's ONNX importer, then the usual pipeline), run on the emulator and
compared with onnxruntime on the same file (relative max error < 1e-4)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from nmc.models.nm_sparsity import apply_nm
from nmc.models.registry import build_model

from onnx_helpers import DEIT_SMALL, compile_and_run, export_onnx, onnxruntime_output, rel_err

pytest.importorskip("onnxruntime")


def _input(shape, seed=1) -> np.ndarray:
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed)).numpy()


@pytest.fixture(scope="module")
def deit_onnx(tmp_path_factory):
    module, example = build_model("deit_tiny", DEIT_SMALL, seed=0)
    path = tmp_path_factory.mktemp("onnx") / "deit.onnx"
    export_onnx(module, example, path)
    return module, example, path


def test_deit_onnx_matches_onnxruntime(deit_onnx):
    _, example, path = deit_onnx
    x = _input(example.shape)
    program, result, got = compile_and_run(path, x)
    want = onnxruntime_output(path, x)
    assert got.shape == want.shape
    assert rel_err(got, want) < 1e-4
    kinds = {layer.kind for layer in result.layers}
    assert {"patch_embed", "concat", "add", "attention", "linear", "layer_norm",
            "select"} <= kinds
    # layer names come from the exporter's module scopes, weights from the initializers
    layers = program.meta["layers"]
    assert {"blocks.0.attn.qkv", "blocks.1.mlp.fc2", "head"} <= set(layers)


def test_deit_onnx_2_4_matches_onnxruntime_of_the_pruned_model(tmp_path):
    module, example = build_model("deit_tiny", DEIT_SMALL, seed=0)
    config = {f"blocks.{b}.{n}": (2, 4) for b in range(2)
              for n in ("attn.qkv", "attn.proj", "mlp.fc1", "mlp.fc2")}
    pruned = apply_nm(module, config)
    path = tmp_path / "deit24.onnx"
    export_onnx(pruned, example, path)
    x = _input(example.shape)
    program, _, got = compile_and_run(path, x, sparsity={"spec": "2:4"})
    assert rel_err(got, onnxruntime_output(path, x)) < 1e-4
    layers = program.meta["layers"]
    assert all(layers[name]["pattern"] == "2:4" for name in config)
    assert "spmatmul" in {i.mnemonic for i in program.instructions}


def test_dynamic_batch_is_fixed_at_compile_time(tmp_path):
    module, _ = build_model("deit_tiny", DEIT_SMALL, seed=0)
    path = tmp_path / "dyn.onnx"
    export_onnx(module, torch.randn(2, 3, 32, 32), path, dynamic_batch=True)
    for batch in (1, 3):
        x = _input((batch, 3, 32, 32))
        _, _, got = compile_and_run(path, x, batch=batch)
        assert rel_err(got, onnxruntime_output(path, x)) < 1e-4
    x = _input((2, 3, 32, 32))
    _, _, got = compile_and_run(path, x, input_shapes={"x": (2, 3, 32, 32)})
    assert rel_err(got, onnxruntime_output(path, x)) < 1e-4


# ------------------------------------------------------------------------------ Swin


@pytest.fixture(scope="module")
def swin_onnx(tmp_path_factory):
    module, example = build_model("swin_micro", {}, seed=0)
    path = tmp_path_factory.mktemp("onnx") / "swin.onnx"
    export_onnx(module, example, path)
    return module, example, path


def _bright_windows(shape, seed) -> np.ndarray:
    """Images whose stage-0 windows differ much in brightness (as test_window_prune's), so
    that which windows are kept matters."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(shape, generator=gen) * 0.1
    gain = torch.rand((shape[0], 1, shape[2] // 16, shape[3] // 16), generator=gen) * 8
    return (x * (1 + gain.repeat_interleave(16, 2).repeat_interleave(16, 3))).numpy()


def test_swin_onnx_matches_onnxruntime(swin_onnx):
    """Swin from ONNX: the cyclic shift is Slice + Concat (no roll in ONNX), the bias and
    the shift mask two Adds around a Reshape, the NHWC patch embedding two Transposes."""
    _, example, path = swin_onnx
    x = _input(example.shape)
    _, result, got = compile_and_run(path, x)
    assert rel_err(got, onnxruntime_output(path, x)) < 1e-4
    kinds = {layer.kind for layer in result.layers}
    assert {"patch_embed", "permute_rows", "attention", "linear", "layer_norm",
            "mean"} <= kinds


def test_swin_onnx_2_4_matches_onnxruntime_of_the_pruned_model(swin_onnx, tmp_path):
    """The dense ONNX file compiled with --sparsity 2:4; the reference is onnxruntime on
    the same model with the layers nmc pruned masked in PyTorch (the same mask rule)."""
    module, example, path = swin_onnx
    x = _input(example.shape)
    program, _, got = compile_and_run(path, x, sparsity={"spec": "2:4"})
    config = {name: (2, 4) for name, layer in program.meta["layers"].items()
              if layer["pattern"] == "2:4"}
    assert {"layers.0.blocks.1.attn.qkv", "layers.1.blocks.0.mlp.fc2"} <= set(config)
    pruned = tmp_path / "swin24.onnx"
    export_onnx(apply_nm(module, config), example, pruned)
    assert rel_err(got, onnxruntime_output(pruned, x)) < 1e-4


def test_swin_onnx_window_keep_matches_the_pruned_reference(swin_onnx):
    """--window-keep 0.5 on the ONNX Swin: the same Swin blocks are recognised in the nm IR
    as from torch.export; checked against the PyTorch reference of window pruning (what
    onnxruntime cannot run) and, at keep 1, against onnxruntime."""
    module, example, path = swin_onnx
    x = _bright_windows(example.shape, 1)
    program, _, got = compile_and_run(path, x, window={"keep": "0.5"})
    module.set_window_keep(0.5)
    try:
        with torch.no_grad():
            want = module(torch.from_numpy(x)).numpy()
    finally:
        module.set_window_keep(None)
    assert rel_err(got, want) < 1e-4
    assert rel_err(got, onnxruntime_output(path, x)) > 1e-3  # the pruning is real
    assert "topk" in {i.mnemonic for i in program.instructions}


class _WrittenOut(torch.nn.Module):
    """LayerNorm and GELU as older exporters (and hand-written models) spell them:
    ReduceMean, Sub, Pow, ReduceMean, Add, Sqrt, Div, Mul, Add; Div, Erf, Add, Mul, Mul."""

    def __init__(self, tanh: bool, affine: str = "both"):
        super().__init__()
        self.tanh, self.affine = tanh, affine
        self.gamma = torch.nn.Parameter(torch.randn(16))
        self.beta = torch.nn.Parameter(torch.randn(16))
        self.fc = torch.nn.Linear(16, 32)

    def forward(self, x):
        d = x - x.mean(-1, keepdim=True)
        x = d / torch.sqrt((d ** 2).mean(-1, keepdim=True) + 1e-3)
        if self.affine != "none":
            x = x * self.gamma
        if self.affine == "both":
            x = x + self.beta
        h = self.fc(x)
        if self.tanh:
            return 0.5 * h * (1 + torch.tanh(0.7978845608 * (h + 0.044715 * h ** 3)))
        return h * (1 + torch.erf(h / 1.4142135623730951)) * 0.5


@pytest.mark.parametrize("tanh", [False, True], ids=["erf", "tanh"])
def test_written_out_layer_norm_and_gelu_match_onnxruntime(tmp_path, tanh):
    torch.manual_seed(0)
    path = tmp_path / "written.onnx"
    export_onnx(_WrittenOut(tanh), torch.randn(1, 5, 16), path)
    x = _input((1, 5, 16))
    _, result, got = compile_and_run(path, x)
    assert rel_err(got, onnxruntime_output(path, x)) < 1e-4
    # the GELU runs in the linear's epilogue (fuse-activations): two layers
    assert [layer.kind for layer in result.layers] == ["layer_norm", "linear"]


@pytest.mark.parametrize("affine", ["none", "gamma"])
def test_written_out_layer_norm_without_its_affine_matches_onnxruntime(tmp_path, affine):
    """elementwise_affine=False (or a gamma alone): completed with * 1 + 0 before import."""
    torch.manual_seed(0)
    path = tmp_path / "written.onnx"
    export_onnx(_WrittenOut(False, affine), torch.randn(1, 5, 16), path)
    x = _input((1, 5, 16))
    _, result, got = compile_and_run(path, x)
    assert rel_err(got, onnxruntime_output(path, x)) < 1e-4
    assert [layer.kind for layer in result.layers] == ["layer_norm", "linear"]


def test_nmc_compile_onnx_then_nmc_run_equals_onnxruntime_on_deit_tiny(tmp_path):
    """The command line, end to end, on DeiT-tiny at 224x224 exported to ONNX."""
    import subprocess
    import sys

    module, example = build_model("deit_tiny", {}, seed=0)
    path = tmp_path / "deit_tiny.onnx"
    export_onnx(module, example, path)
    x = _input(example.shape)
    np.save(tmp_path / "x.npy", x)
    nmc = [sys.executable, "-m", "nmc.cli"]
    subprocess.run([*nmc, "compile", str(path), "-o", str(tmp_path / "p.bin"), "-q"],
                   check=True, capture_output=True)
    subprocess.run([*nmc, "run", str(tmp_path / "p.bin"), "--input", str(tmp_path / "x.npy"),
                    "-o", str(tmp_path / "y.npy"), "-q"], check=True, capture_output=True)
    got = np.load(tmp_path / "y.npy")
    assert got.shape == (1, 1000)
    assert rel_err(got, onnxruntime_output(path, x)) < 1e-4

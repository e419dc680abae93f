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

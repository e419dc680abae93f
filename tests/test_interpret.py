"""compiler/interpret.py, the nm IR interpreter the SparseViT search scores with: the raised
IR of a model computes what the PyTorch model computes, dense, window-pruned (the pruned
IR against models/window_prune.py) and N:M sparse (against apply_nm)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from xdsl.dialects.builtin import ModuleOp

from nmc.compiler.dialects.nm import LinearOp, sparsity_attr
from nmc.compiler.frontend import import_model
from nmc.compiler.frontend.loader import load_weights
from nmc.compiler.interpret import InterpretError, interpret
from nmc.compiler.pipeline import make_context, run_pipeline
from nmc.compiler.sparsity.window_rewrite import apply_ratios, swin_blocks
from nmc.compiler.transforms.window_prune import keep_ratios
from nmc.models.nm_sparsity import apply_nm
from nmc.models.registry import build_model, export_to_file

DEIT = {"img_size": 32, "patch": 8, "dim": 64, "depth": 2, "heads": 2, "num_classes": 10}


def _raised(tmp_path, name, params) -> tuple[torch.nn.Module, ModuleOp, dict, torch.Tensor]:
    module, example = build_model(name, params, seed=0)
    export_to_file(module, example, tmp_path / "m.pt")
    ctx = make_context()
    ir = import_model(tmp_path / "m.pt", ctx)
    run_pipeline(ir, "raise-torch-to-nm", ctx)
    x = torch.randn(example.shape, generator=torch.Generator().manual_seed(3))
    return module, ir, load_weights(tmp_path / "m.pt"), x


def _rel(got, want):
    return float(np.abs(got - want).max() / np.abs(want).max())


@pytest.mark.parametrize("name, params", [("deit_tiny", DEIT), ("swin_micro", {})])
def test_dense_ir_computes_the_model(tmp_path, name, params):
    module, ir, weights, x = _raised(tmp_path, name, params)
    (got,) = interpret(ir, {"x": x.numpy()}, weights).values()
    with torch.no_grad():
        want = module(x).numpy()
    assert _rel(got, want) < 1e-6


def test_pruned_ir_computes_the_pruned_model(tmp_path):
    module, ir, weights, x = _raised(tmp_path, "swin_micro", {"batch": 2})
    blocks = swin_blocks(ir)
    apply_ratios(blocks, keep_ratios(blocks, 0.5))
    (got,) = interpret(ir, {"x": x.numpy()}, weights).values()
    module.set_window_keep(0.5)
    with torch.no_grad():
        want = module(x).numpy()
    assert _rel(got, want) < 1e-6


def test_sparse_linears_use_the_reference_mask(tmp_path):
    module, ir, weights, x = _raised(tmp_path, "deit_tiny", DEIT)
    for op in ir.walk():
        if isinstance(op, LinearOp) and op.layer_name == "blocks.0.mlp.fc1":
            op.properties["sparsity"] = sparsity_attr(2, 4)
    (got,) = interpret(ir, {"x": x.numpy()}, weights).values()
    with torch.no_grad():
        want = apply_nm(module, {"blocks.0.mlp.fc1": (2, 4)})(x).numpy()
        dense = module(x).numpy()
    assert _rel(got, want) < 1e-6 and _rel(got, dense) > 1e-4


def test_torch_level_ops_are_refused(tmp_path):
    module, example = build_model("deit_tiny", DEIT, seed=0)
    export_to_file(module, example, tmp_path / "m.pt")
    ir = import_model(tmp_path / "m.pt", make_context())  # torch dialect, not raised
    with pytest.raises(InterpretError, match="cannot interpret torch"):
        interpret(ir, {"x": np.zeros(example.shape, np.float32)},
                  load_weights(tmp_path / "m.pt"))

"""fuse-activations: the GELU after a linear runs in the linear kernel's epilogue; results
stay PyTorch's, the program gets shorter and faster, and only a GELU whose input is used
by nothing else is fused."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import nmc.compiler.pipeline as pipeline
from nmc.compiler.driver import compile_model
from xdsl.rewriter import InsertPoint, Rewriter

from nmc.compiler.dialects.nm import AddOp, GeluOp, LinearOp
from nmc.compiler.frontend import import_model
from nmc.compiler.pipeline import make_context, run_pipeline
from nmc.isa.target import load_target
from nmc.models.registry import build_model, export_to_file
from nmc.runtime.emulator import run_program

TARGET = load_target()
DEIT = {"img_size": 32, "patch": 8, "dim": 64, "depth": 2, "heads": 2, "num_classes": 10}


@pytest.fixture(scope="module")
def deit(tmp_path_factory):
    module, example = build_model("deit_tiny", DEIT, seed=0)
    path = tmp_path_factory.mktemp("fuse") / "m.pt"
    export_to_file(module, example, path)
    return module, example.shape, path


def _run(program, x):
    (got,) = run_program(program, {"x": x.numpy()}, TARGET, fill=float("nan")).outputs.values()
    return got


def test_every_mlp_gelu_is_fused(deit):
    ctx = make_context()
    ir = import_model(deit[2], ctx)
    run_pipeline(ir, "raise-torch-to-nm,fuse-activations", ctx)
    assert not [op for op in ir.walk() if isinstance(op, GeluOp)]
    fused = {op.layer_name: op.activation_name for op in ir.walk()
             if isinstance(op, LinearOp) and op.activation_name}
    assert fused == {"blocks.0.mlp.fc1": "gelu", "blocks.1.mlp.fc1": "gelu"}


def test_fused_program_equals_pytorch_and_is_faster(deit, monkeypatch):
    module, shape, path = deit
    x = torch.randn(shape, generator=torch.Generator().manual_seed(2))
    fused = compile_model(path)
    monkeypatch.setattr(pipeline, "DEFAULT_PIPELINE",
                        tuple(p for p in pipeline.DEFAULT_PIPELINE if p != "fuse-activations"))
    unfused = compile_model(path)
    with torch.no_grad():
        want = module(x).numpy()
    for program in (fused, unfused):
        got = _run(program, x)
        assert np.abs(got - want).max() / np.abs(want).max() < 1e-4
    np.testing.assert_array_equal(_run(fused, x), _run(unfused, x))  # same float32 function
    assert len(fused.instructions) < len(unfused.instructions)
    cycles = [run_program(p, {"x": x.numpy()}, TARGET).total_cycles for p in (fused, unfused)]
    assert cycles[0] < cycles[1]


def test_a_linear_with_other_users_is_not_fused(deit):
    ctx = make_context()
    ir = import_model(deit[2], ctx)
    run_pipeline(ir, "raise-torch-to-nm", ctx)
    fc1 = next(op for op in ir.walk() if isinstance(op, LinearOp)
               and op.layer_name == "blocks.0.mlp.fc1")
    gelu = next(u.operation for u in fc1.result.uses)
    # give fc1's result a second user: fusing would change what that user reads
    extra = AddOp(fc1.result, gelu.result, "extra")
    Rewriter.insert_op(extra, InsertPoint.after(gelu))
    run_pipeline(ir, "fuse-activations", ctx)
    assert fc1.activation_name is None and gelu.parent is not None

"""One weight store (issue 13): the frontend loads the model once and hands its weights
down with the module; ELSA's sensitivity and the emitter read them from there, never from
the file again. A store given in memory needs no file; a dumped IR file (`nmc opt`) gets
its weights through the frontend's one loader."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from nmc.compiler.driver import compile_model
from nmc.compiler.dialects import nm
from nmc.compiler.dialects.nm_attrs import model_path
from nmc.compiler.emit import module_to_program
from nmc.compiler.frontend import clear_cache, import_exported_program, import_model
from nmc.compiler.frontend.weights import WeightStore, attach_weights, weights_of_module
from nmc.compiler.pipeline import default_pipeline_spec, make_context, print_ir, run_pipeline
from nmc.compiler.sparsity import sensitivity
from nmc.isa.container import program_to_bytes
from nmc.models.registry import build_model, export_to_file

from robust_helpers import cli

TINY = {"img_size": 32, "patch": 8, "dim": 64, "depth": 2, "heads": 2, "num_classes": 10}
MLP = {"dim": 32, "hidden": 64, "tokens": 5}


@pytest.fixture
def loads(monkeypatch):
    """The paths torch.export.load reads, from a clean frontend cache."""
    clear_cache()
    sensitivity.clear_cache()
    seen: list[str] = []
    real = torch.export.load

    def counting(f, *args, **kwargs):
        seen.append(getattr(f, "name", str(f)))
        return real(f, *args, **kwargs)

    monkeypatch.setattr(torch.export, "load", counting)
    yield seen
    clear_cache()


def test_a_sparse_compile_reads_the_model_file_once(tmp_path, loads):
    """ELSA's sensitivity runs the frontend's loaded model instead of loading its own."""
    module, example = build_model("deit_tiny", TINY, seed=0)
    export_to_file(module, example, tmp_path / "m.pt")
    program = compile_model(tmp_path / "m.pt", sparsity={"spec": "elsa:speedup=1.5"})
    assert any(layer["pattern"] != "dense" for layer in program.meta["layers"].values())
    assert loads == [str(tmp_path / "m.pt")]


def _in_memory_module(pipeline: str):
    """mlp_block imported from an ExportedProgram that was never saved, after `pipeline`."""
    model, example = build_model("mlp_block", MLP, seed=0)
    ep = torch.export.export(model.eval(), (example,)).run_decompositions({})
    ctx = make_context()
    module = import_exported_program(ep, None, ctx)
    run_pipeline(module, pipeline, ctx)
    return module


def test_weights_given_in_memory_need_no_file(tmp_path, loads):
    module = _in_memory_module(default_pipeline_spec("sta_ref", {"spec": "2:4"}))
    assert model_path(module) is None  # nothing names a file
    program = module_to_program(module)
    assert loads == []

    model, example = build_model("mlp_block", MLP, seed=0)
    export_to_file(model, example, tmp_path / "m.pt")
    from_file = compile_model(tmp_path / "m.pt", sparsity={"spec": "2:4"})
    from_file.meta = program.meta = {}
    assert program_to_bytes(program) == program_to_bytes(from_file)


def test_elsa_runs_on_a_model_in_memory(loads):
    module = _in_memory_module('raise-torch-to-nm,assign-sparsity{spec="elsa:flops=1.5"}')
    assert [op.sparsity_pattern is not None for op in module.walk()
            if isinstance(op, nm.LinearOp)] == [True, False]  # fc1 sparse, fc2 the head
    assert loads == []


def test_the_emitter_reads_the_attached_store_not_the_file(tmp_path, loads):
    model, example = build_model("mlp_block", MLP, seed=0)
    export_to_file(model, example, tmp_path / "m.pt")
    ctx = make_context()
    module = import_model(tmp_path / "m.pt", ctx)
    run_pipeline(module, default_pipeline_spec("sta_ref"), ctx)
    store = weights_of_module(module)
    before = module_to_program(module)
    attach_weights(module, WeightStore.from_arrays({k: v * 2 for k, v in store.items()}))
    after = module_to_program(module)
    assert [a for a, _ in after.constants] == [a for a, _ in before.constants]
    for (_, got), (_, was) in zip(after.constants, before.constants):
        np.testing.assert_array_equal(got, 2 * was)
    assert len(loads) == 1  # the import's


def test_missing_parameter_names_the_model():
    store = WeightStore.from_arrays({"a": np.zeros(2, np.float32)}, name="<demo>")
    assert "a" in store and "b" not in store and list(store) == ["a"]
    with pytest.raises(Exception, match=r"<demo>: the model has no parameter 'b'"):
        store["b"]
    with pytest.raises(Exception, match="without the model's program"):
        store.program()


def test_nmc_opt_on_a_dumped_ir_file_loads_the_model_through_the_frontend(
        tmp_path, loads, capsys):
    """The dumped IR names the model (`nm.model`); its store loads it on first use, with
    the frontend's loader (and its cache: one read per process)."""
    module, example = build_model("deit_tiny", TINY, seed=0)
    export_to_file(module, example, tmp_path / "m.pt")
    ctx = make_context()
    imported = import_model(tmp_path / "m.pt", ctx)
    run_pipeline(imported, "raise-torch-to-nm", ctx)
    (tmp_path / "nm.mlir").write_text(print_ir(imported))
    rc, out, err = cli(capsys, "opt", "-p", 'assign-sparsity{spec="elsa:speedup=1.5"}',
                       tmp_path / "nm.mlir")
    assert rc == 0, err
    assert "sparsity array<i64: " in out  # ELSA made some linear sparse
    assert loads == [str(tmp_path / "m.pt")]

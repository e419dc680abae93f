"""The compiler's entry points for a whole model file: `compile_model` (to a Program,
through the default pipeline) and `import_nm` (to the nm dialect: the frontend, then the
first pass).

`nmc compile` (nmc.cli.compile), `nmc demo`, `nmc sparsify`, the tests and the benchmarks
all go through them. Heavy imports (torch, torch-mlir) happen inside, so importing this
module is cheap.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


def import_nm(path: Any, ctx: Any = None, *, input_shapes: dict | None = None,
              batch: int | None = None):  # noqa: ANN201 - returns xdsl ModuleOp
    """Import the model at `path` (torch.export or ONNX; `input_shapes` / `batch` fix an
    ONNX model's dynamic dims) and raise it to the nm dialect (verified ModuleOp)."""
    from nmc.compiler.dialects.context import make_context
    from nmc.compiler.frontend.model_import import import_model_file
    from nmc.compiler.transforms.raise_torch_to_nm import RaiseTorchToNm

    ctx = ctx or make_context()
    module = import_model_file(path, ctx, input_shapes=input_shapes, batch=batch)
    RaiseTorchToNm().apply(ctx, module)
    return module


def compile_model(model: Path, target: str = "sta_ref", after_pass=None, meta=None,
                  sparsity: dict | None = None, window: dict | None = None,
                  quant: dict | None = None, input_shapes: dict | None = None,
                  batch: int | None = None):
    """model.pt (torch.export) or model.onnx -> Program, through the default pipeline.
    Raises NmcError subclasses. `input_shapes` ({input: dims}) and `batch` fix the dynamic
    dims of an ONNX model.
    `after_pass(name, module)` is called with "input" before the first pass, then after
    each pass by name (`pipeline.IrDumper` is one). `sparsity`: options of assign-sparsity
    (spec, calib, out, report); `window`: options of window-prune (keep, calib, out);
    `quant`: options of quantize (calib, quant, out: an int8 target's scales)."""
    from nmc.common.progress import progress
    from nmc.compiler.emit import module_to_program
    from nmc.compiler.frontend.model_import import import_model_file
    from nmc.compiler.pipeline import (
        DEFAULT_PIPELINE, default_pipeline_spec, make_context, run_pipeline,
    )
    from nmc.compiler.transforms.target_option import cached_target

    cached_target.cache_clear()  # a target file may have changed since the last compile
    cached_target(target)  # a bad target fails before the slow import
    ctx = make_context()
    steps = ("import", *DEFAULT_PIPELINE, "emit")
    with progress(total=len(steps), desc="compile", unit="step") as bar:

        def step_done(name: str, module) -> None:
            bar.update()
            bar.set_postfix_str(steps[bar.n] if bar.n < len(steps) else "")
            if after_pass is not None:
                after_pass(name, module)

        bar.set_postfix_str(steps[0])
        module = import_model_file(model, ctx, input_shapes=input_shapes, batch=batch)
        run_pipeline(module, default_pipeline_spec(target, sparsity, window, quant), ctx,
                     step_done)
        program = module_to_program(module, {"model": str(model), "target": target,
                                             **(meta or {})})
        bar.update()
    return program

"""Shared by the ONNX tests: export nmc's models with torch.onnx.export, run them with
onnxruntime (the reference), compile them with nmc and run them on the emulator."""

from __future__ import annotations

import warnings

import numpy as np
import torch

from nmc.compiler.driver import compile_model
from nmc.isa.container import program_from_bytes, program_to_bytes
from nmc.isa.target import load_target
from nmc.runtime.emulator import run_program

TARGET = load_target()

DEIT_SMALL = {"img_size": 32, "patch": 8, "dim": 64, "depth": 2, "heads": 2,
              "num_classes": 10}


def export_onnx(module: torch.nn.Module, example: torch.Tensor, path, dynamic_batch=False):
    """torch.onnx.export (the dynamo exporter), eval mode; the batch dim symbolic if
    `dynamic_batch` (then `example` needs a batch >= 2)."""
    module.eval()
    dynamic = {"x": {0: torch.export.Dim("batch")}} if dynamic_batch else None
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, (example,), str(path), dynamo=True, input_names=["x"],
                          dynamic_shapes=dynamic, external_data=False, verbose=False)


def onnxruntime_output(path, x: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (name,) = [i.name for i in session.get_inputs()]
    return session.run(None, {name: x})[0]


def compile_and_run(path, x: np.ndarray, **options):
    """(program, emulator result, output) of `path` compiled with `options`."""
    program = program_from_bytes(program_to_bytes(compile_model(path, **options)))
    (name_in,) = [s.name for s in program.symbols if s.kind == "input"]
    result = run_program(program, {name_in: x}, TARGET, fill=float("nan"))
    (got,) = result.outputs.values()
    return program, result, got


def rel_err(got, want) -> float:
    return float(np.abs(got - want).max() / np.abs(want).max())

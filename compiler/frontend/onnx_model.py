"""Loading an ONNX model for nmc: checked, static, its weights apart from its graph.

    prepare_onnx(path, shapes, batch) -> OnnxProgram

What torch-mlir's ONNX importer then reads (`onnx_import.py`) is a graph in which

- every input has static dims and shape computations are folded (`onnx_shapes.py`);
- every float initializer of more than one element is a graph input (a weight): torch-mlir
  makes it an argument of `@main`, so, as for torch.export files, no weight is printed in
  the IR; its values are in `OnnxProgram.weights`, by initializer name (the weight store).
  Scalars (an epsilon, an attention scale) stay constants the raising can read;
- the rewrites of `onnx_rewrites.py`: a linear's weight stored [K, N] is stored [N, K]
  behind a Transpose, and constants added on either side of a view combine into one;
- every node is renamed to a short key; `OnnxProgram.locations` maps it to the module path
  (from the exporter's `pkg.torch.onnx.name_scopes` metadata, else from a `/a/b/Op` node
  name, else from the `<layer>.weight` / `.bias` initializer the node reads) and the node's
  own name, which become the ops' locations: layer names and errors name what the user
  finds in the model.
"""

from __future__ import annotations

import ast
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
from onnx import helper, numpy_helper

from nmc.compiler.errors import FrontendError
from nmc.compiler.frontend.onnx_rewrites import (
    combine_additive_constants, complete_layer_norm_affine, orient_linear_weights,
)
from nmc.compiler.frontend.onnx_shapes import (
    check_static, fix_input_shapes, fold_constants, infer_shapes, static_shapes,
)

_FLOATS = {onnx.TensorProto.FLOAT, onnx.TensorProto.DOUBLE, onnx.TensorProto.FLOAT16,
           onnx.TensorProto.BFLOAT16}


@dataclass
class OnnxProgram:
    model: onnx.ModelProto  # prepared as the module docstring says
    inputs: list[str]  # the user inputs, in graph order (first among the graph inputs)
    input_shapes: dict[str, tuple[int, ...]]
    weights: dict[str, np.ndarray] = field(default_factory=dict)  # float32, read-only
    params: list[str] = field(default_factory=list)  # graph inputs after the user inputs
    # node key -> (module path, "ONNX <Op> node '<name>'")
    locations: dict[str, tuple[str, str]] = field(default_factory=dict)


def load_onnx(path: Path, shown: str) -> onnx.ModelProto:
    if not path.is_file():
        raise FrontendError(f"model file not found: {shown}" if not path.exists()
                            else f"{shown} is not a regular file")
    try:
        model = onnx.load(str(path))  # external data from the model's folder
    except Exception as e:  # protobuf DecodeError, missing external data, ...
        raise FrontendError(f"{shown}: cannot read the ONNX model ({type(e).__name__}: "
                            f"{str(e).splitlines()[0] if str(e) else ''})") from None
    if not model.graph.node:
        raise FrontendError(f"{shown}: not an ONNX model (no graph nodes)")
    return model


def prepare_onnx(path: str | os.PathLike[str],
                 shapes: Mapping[str, tuple[int, ...]] | None = None,
                 batch: int | None = None) -> OnnxProgram:
    """Load the ONNX file at `path` and prepare it as the module docstring says."""
    shown = os.fspath(path)
    model = load_onnx(Path(path).expanduser().absolute(), shown)
    input_shapes = fix_input_shapes(model, shown, shapes, batch)
    model = fold_constants(model, shown)
    check_static(model, shown)
    combine_additive_constants(model, static_shapes(model))
    complete_layer_norm_affine(model, static_shapes(model))
    orient_linear_weights(model, _is_weight)
    prog = OnnxProgram(infer_shapes(model, shown), list(input_shapes), input_shapes)
    _weights_to_inputs(prog)
    _rename_nodes(prog)
    return prog


# ------------------------------------------------------------------------------ weights


def _is_weight(t: onnx.TensorProto) -> bool:
    return t.data_type in _FLOATS and int(np.prod(t.dims, dtype=np.int64)) > 1


def _weights_to_inputs(prog: OnnxProgram) -> None:
    g = prog.model.graph
    keep: list[onnx.TensorProto] = []
    weights = [t for t in g.initializer if _is_weight(t)]
    names = {t.name for t in weights}
    for t in g.initializer:
        if t.name not in names:
            keep.append(t)
    del g.initializer[:]
    g.initializer.extend(keep)
    # old exporters list initializers as inputs too: those entries go, then come back
    user = [i for i in g.input if i.name not in names]
    del g.input[:]
    g.input.extend(user)
    for t in weights:
        arr = numpy_helper.to_array(t).astype(np.float32)
        arr.setflags(write=False)
        prog.weights[t.name] = arr
        prog.params.append(t.name)
        g.input.append(helper.make_tensor_value_info(t.name, onnx.TensorProto.FLOAT,
                                                     list(arr.shape)))


# ---------------------------------------------------------------------------- locations


def _scope_path(node: onnx.NodeProto) -> str | None:
    """The module path torch.onnx.export records (`['', 'blocks', 'blocks.0', ...,
    'linear']`: modules, then the op)."""
    for p in node.metadata_props:
        if p.key == "pkg.torch.onnx.name_scopes":
            try:
                scopes = ast.literal_eval(p.value)
            except (ValueError, SyntaxError):
                return None
            if isinstance(scopes, list) and all(isinstance(s, str) for s in scopes):
                mods = [s for s in scopes[:-1] if s]
                return mods[-1] if mods else ""
    return None


def _name_path(name: str) -> str:
    """`/blocks/blocks.0/attn/qkv/MatMul` -> `blocks.0.attn.qkv` (TorchScript exporter and
    Hugging Face naming: scopes separated by /, the op last)."""
    if not name.startswith("/"):
        return ""
    parts: list[str] = []
    for comp in name.strip("/").split("/")[:-1]:
        prefix = ".".join(parts)
        if parts and comp.startswith(prefix + "."):
            parts = comp.split(".")
        elif comp:
            parts.append(comp)
    return ".".join(parts)


def _weight_path(node: onnx.NodeProto, weights: set[str]) -> str:
    """`fc1` when the node reads a weight named `fc1.weight` or `fc1.bias` (directly or
    through the Transpose `orient_linear_weights` put before it)."""
    for name in node.input:
        name = name.removesuffix("__kn")
        if name in weights:
            for suffix in (".weight", ".bias"):
                if name.endswith(suffix):
                    return name.removesuffix(suffix)
    return ""


def _rename_nodes(prog: OnnxProgram) -> None:
    weights = set(prog.weights)
    for k, node in enumerate(prog.model.graph.node):
        path = _scope_path(node)
        if path is None:
            path = _name_path(node.name) or _weight_path(node, weights)
        key = f"nmc_node_{k}"
        prog.locations[key] = (path, f"ONNX {node.op_type} node {node.name!r}"
                                     if node.name else f"ONNX {node.op_type} node #{k}")
        node.name = key

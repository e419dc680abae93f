"""Loading an ONNX model for nmc: checked, static, its weights apart from its graph.

    prepare_onnx(path, shapes, batch) -> OnnxProgram

What torch-mlir's ONNX importer then reads (`onnx_import.py`) is a graph in which

- every input has static dims and shape computations are folded (`onnx_shapes.py`);
- every float initializer of more than one element is a graph input (a weight): torch-mlir
  makes it an argument of `@main`, so, as for torch.export files, no weight is printed in
  the IR; its values are in `OnnxProgram.weights`, by initializer name (the weight store).
  Scalars (an epsilon, an attention scale) stay constants the raising can read;
- the weight of a MatMul / Gemm stored [K, N] (x . W, how exporters fold nn.Linear's
  W^T) is stored as the [N, K] weight of a linear behind an explicit Transpose node, so
  the raising meets `x . transpose(W)` as from PyTorch. When the Add after it adds an
  initializer named `<layer>.bias`, the weight is named `<layer>.weight` (exporters often
  name the folded transpose `val_12` or `onnx::MatMul_123`); else `<name>.T`;
- every node is renamed to a short key; `OnnxProgram.locations` maps it to the module path
  (from the exporter's `pkg.torch.onnx.name_scopes` metadata, else from a `/a/b/Op` node
  name) and the node's own name, which become the ops' locations: layer names and errors
  name what the user finds in the model.
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
from nmc.compiler.frontend.onnx_shapes import (
    check_static, fix_input_shapes, fold_constants, infer_shapes,
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
    _orient_linear_weights(model)
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


def _orient_linear_weights(model: onnx.ModelProto) -> None:
    """A MatMul / Gemm weight stored [K, N] becomes the [N, K] weight of a linear behind a
    Transpose (Gemm: transB flipped instead)."""
    g = model.graph
    inits = {t.name: t for t in g.initializer}
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for node in g.node:
        for i in node.input:
            consumers.setdefault(i, []).append(node)
    taken = set(inits) | {o for n in g.node for o in n.output} | {i.name for i in g.input}
    nodes: list[onnx.NodeProto] = []
    for node in g.node:
        w = node.input[1] if node.op_type in ("MatMul", "Gemm") and len(node.input) > 1 else ""
        t = inits.get(w)
        trans_b = next((a for a in node.attribute if a.name == "transB"), None)
        stored_kn = node.op_type == "MatMul" or trans_b is None or trans_b.i == 0
        if t is None or len(t.dims) != 2 or not _is_weight(t) or not stored_kn \
                or len(consumers.get(w, [])) != 1:
            nodes.append(node)
            continue
        name = _linear_weight_name(node, w, consumers, inits, taken)
        taken.add(name)
        wt = numpy_helper.from_array(np.ascontiguousarray(numpy_helper.to_array(t).T), name)
        g.initializer.append(wt)
        if node.op_type == "Gemm":
            if trans_b is None:
                node.attribute.append(helper.make_attribute("transB", 1))
            else:
                trans_b.i = 1
            node.input[1] = name
        else:
            out = f"{name}__kn"
            nodes.append(helper.make_node("Transpose", [name], [out], perm=[1, 0],
                                          name=f"{node.name}__weight_transpose"))
            for p in node.metadata_props:
                nodes[-1].metadata_props.add().CopyFrom(p)
            node.input[1] = out
        nodes.append(node)
    del g.node[:]
    g.node.extend(nodes)
    used = {i for n in g.node for i in n.input}
    keep = [t for t in g.initializer if t.name in used]
    del g.initializer[:]
    g.initializer.extend(keep)


def _linear_weight_name(node: onnx.NodeProto, w: str, consumers, inits, taken) -> str:
    """`<layer>.weight` when the node's result is added to an initializer `<layer>.bias`
    (Gemm: its C input), else `<w>.T`."""
    bias = None
    if node.op_type == "Gemm" and len(node.input) > 2:
        bias = node.input[2]
    else:
        users = consumers.get(node.output[0], [])
        if len(users) == 1 and users[0].op_type == "Add":
            bias = next((i for i in users[0].input if i in inits), None)
    if bias and bias.endswith(".bias") and bias[:-5] + ".weight" not in taken:
        return bias[:-5] + ".weight"
    name = f"{w}.T"
    while name in taken:
        name += "_"
    return name


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


def _rename_nodes(prog: OnnxProgram) -> None:
    for k, node in enumerate(prog.model.graph.node):
        path = _scope_path(node)
        if path is None:
            path = _name_path(node.name)
        key = f"nmc_node_{k}"
        prog.locations[key] = (path, f"ONNX {node.op_type} node {node.name!r}"
                                     if node.name else f"ONNX {node.op_type} node #{k}")
        node.name = key

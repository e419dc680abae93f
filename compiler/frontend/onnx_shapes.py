"""Static shapes for an ONNX graph: dynamic input dims fixed, shape subgraphs folded.

ONNX files often leave the batch (or more) symbolic and compute the shapes their Reshapes
need at run time (Shape -> Gather -> Unsqueeze -> Concat). nmc compiles for one shape, as
TVM and IREE do when given one: the user fixes the input dims (`--input-shape
NAME=1x3x224x224`, `--batch N`), then every node whose inputs are all constants is
evaluated once with onnx's reference evaluator (shape arithmetic, and computations on
weights alone such as a Resize of the position embedding), `Shape` of a tensor whose shape
is now known included, until nothing changes. A value whose shape is still unknown after
that is an error naming the node that produces it.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import onnx
from onnx import helper, numpy_helper, shape_inference

from nmc.compiler.errors import FrontendError

_NOT_FOLDED = {
    # random or stateful: evaluating them once would change the model
    "RandomNormal", "RandomNormalLike", "RandomUniform", "RandomUniformLike", "Multinomial",
    "Bernoulli", "Dropout",
    # control flow: their bodies are not single nodes
    "If", "Loop", "Scan",
}


def real_inputs(graph: onnx.GraphProto) -> list[onnx.ValueInfoProto]:
    """The graph inputs the user feeds (old exporters also list initializers as inputs)."""
    inits = {t.name for t in graph.initializer}
    return [i for i in graph.input if i.name not in inits]


def _dims(vi: onnx.ValueInfoProto) -> list[int | str | None]:
    """int for a fixed dim, the symbol (str) or None for a dynamic one."""
    out: list[int | str | None] = []
    for d in vi.type.tensor_type.shape.dim:
        if d.HasField("dim_value"):
            out.append(int(d.dim_value))
        else:
            out.append(d.dim_param or None)
    return out


def _fmt(dims: list[int | str | None]) -> str:
    return "[" + ", ".join("?" if d is None else str(d) for d in dims) + "]"


def fix_input_shapes(model: onnx.ModelProto, shown: str,
                     shapes: Mapping[str, tuple[int, ...]] | None = None,
                     batch: int | None = None) -> dict[str, tuple[int, ...]]:
    """Give every user input of `model` static dims (in place): those of `shapes[name]`,
    else `batch` for a dynamic leading dim. Returns the input shapes."""
    shapes = dict(shapes or {})
    inputs = real_inputs(model.graph)
    names = [i.name for i in inputs]
    unknown = [n for n in shapes if n not in names]
    if unknown:
        raise FrontendError(f"{shown}: --input-shape names {', '.join(map(repr, unknown))}, "
                            f"but the model's inputs are {', '.join(map(repr, names))}")
    fixed: dict[str, tuple[int, ...]] = {}
    for vi in inputs:
        if not vi.type.HasField("tensor_type") or not vi.type.tensor_type.HasField("shape"):
            if vi.name not in shapes:
                raise FrontendError(f"{shown}: input {vi.name!r} has no shape; give one "
                                    f"with --input-shape {vi.name}=DIMS")
            dims: list[int | str | None] = [None] * len(shapes[vi.name])
        else:
            dims = _dims(vi)
        want = shapes.get(vi.name)
        if want is not None:
            if len(want) != len(dims):
                raise FrontendError(f"{shown}: --input-shape {vi.name}: the input has "
                                    f"{len(dims)} dims {_fmt(dims)}, got {len(want)}")
            for d, w in zip(dims, want):
                if isinstance(d, int) and d != w:
                    raise FrontendError(f"{shown}: --input-shape {vi.name}: the model fixes "
                                        f"its shape to {_fmt(dims)}, got {list(want)}")
            new = list(want)
        else:
            new = list(dims)
            if new and not isinstance(new[0], int) and batch is not None:
                new[0] = batch
            missing = [i for i, d in enumerate(new) if not isinstance(d, int)]
            if missing:
                raise FrontendError(
                    f"{shown}: input {vi.name!r} has dynamic dims {_fmt(dims)}; nmc compiles "
                    f"for one shape: give it with --input-shape {vi.name}=" +
                    "x".join(str(d) if isinstance(d, int) else "N" for d in dims) +
                    (" (or --batch N for the leading dim)" if missing == [0] else ""))
        if any(d <= 0 for d in new):  # type: ignore[operator]
            raise FrontendError(f"{shown}: input {vi.name!r}: dims must be >= 1, got {new}")
        shape = vi.type.tensor_type.shape
        del shape.dim[:]
        for d in new:
            shape.dim.add().dim_value = int(d)  # type: ignore[arg-type]
        fixed[vi.name] = tuple(int(d) for d in new)  # type: ignore[arg-type]
    return fixed


def infer_shapes(model: onnx.ModelProto, shown: str) -> onnx.ModelProto:
    try:
        return shape_inference.infer_shapes(model, strict_mode=False, data_prop=True)
    except Exception as e:  # onnx raises several types (InferenceError, ValidationError)
        raise FrontendError(f"{shown}: ONNX shape inference failed: "
                            f"{str(e).strip().splitlines()[0] if str(e) else type(e).__name__}"
                            ) from None


def static_shapes(model: onnx.ModelProto) -> dict[str, tuple[int, ...]]:
    out: dict[str, tuple[int, ...]] = {}
    g = model.graph
    for vi in [*g.input, *g.value_info, *g.output]:
        if not vi.type.HasField("tensor_type") or not vi.type.tensor_type.HasField("shape"):
            continue
        dims = _dims(vi)
        if all(isinstance(d, int) for d in dims):
            out[vi.name] = tuple(dims)  # type: ignore[arg-type]
    for t in g.initializer:
        out[t.name] = tuple(t.dims)
    return out


def _evaluate(node: onnx.NodeProto, values: list[np.ndarray | None],
              opsets: list[onnx.OperatorSetIdProto]) -> list[np.ndarray]:
    from onnx.reference import ReferenceEvaluator

    n = onnx.NodeProto()
    n.CopyFrom(node)
    del n.input[:]
    del n.output[:]
    n.input.extend(f"i{k}" if name else "" for k, name in enumerate(node.input))
    n.output.extend(f"o{k}" for k in range(len(node.output)))
    graph = helper.make_graph(
        [n], "fold", [], [helper.make_empty_tensor_value_info(o) for o in n.output],
        initializer=[numpy_helper.from_array(v, f"i{k}") for k, v in enumerate(values)
                     if v is not None])
    m = helper.make_model(graph, opset_imports=list(opsets))
    return [np.asarray(r) for r in ReferenceEvaluator(m).run(None, {})]


def fold_constants(model: onnx.ModelProto, shown: str) -> onnx.ModelProto:
    """Evaluate every node whose inputs are constants (and `Shape`/`Size` of a static
    tensor); their outputs become initializers. Repeated with shape inference until no
    node folds. Returns the new model (the argument is left as it was)."""
    model = infer_shapes(model, shown)
    for _ in range(100):
        g = model.graph
        consts = {t.name: t for t in g.initializer}
        shapes = static_shapes(model)
        kept: list[onnx.NodeProto] = []
        folded = False
        for node in g.node:
            values = _foldable(node, consts, shapes)
            if values is None:
                kept.append(node)
                continue
            try:
                results = _evaluate(node, values, list(model.opset_import))
            except Exception as e:  # an op the reference evaluator lacks: keep the node
                del e
                kept.append(node)
                continue
            for name, r in zip(node.output, results):
                if name:
                    consts[name] = numpy_helper.from_array(r, name)
                    shapes[name] = tuple(r.shape)
            folded = True
        if not folded:
            return model
        used = {i for n in kept for i in n.input} | {o.name for o in g.output}
        del g.node[:]
        g.node.extend(kept)
        del g.initializer[:]
        g.initializer.extend(t for name, t in consts.items() if name in used)
        # stale value_info of folded values would contradict the new initializers
        live = {o for n in kept for o in n.output}
        vis = [vi for vi in g.value_info if vi.name in live]
        del g.value_info[:]
        g.value_info.extend(vis)
        model = infer_shapes(model, shown)
    return model


def _foldable(node: onnx.NodeProto, consts: dict[str, onnx.TensorProto],
              shapes: dict[str, tuple[int, ...]]) -> list[np.ndarray | None] | None:
    """The input values to evaluate `node` with (None for an omitted optional input), or
    None when it is not constant."""
    if node.op_type in _NOT_FOLDED or node.domain not in ("", "ai.onnx"):
        return None
    if node.op_type in ("Shape", "Size") and node.input[0] in shapes:
        # only the shape matters: a zero array of that shape stands for the tensor
        return [np.zeros(shapes[node.input[0]], dtype=np.float32)]
    if node.op_type == "Constant" or not node.input:
        return [] if node.op_type == "Constant" else None
    values: list[np.ndarray | None] = []
    for name in node.input:
        if not name:
            values.append(None)
            continue
        if name not in consts:
            return None
        values.append(numpy_helper.to_array(consts[name]))
    return values


def check_static(model: onnx.ModelProto, shown: str) -> None:
    """Every value a node produces has a known static shape; else name the first node."""
    shapes = static_shapes(model)
    for node in model.graph.node:
        for out in node.output:
            if out and out not in shapes:
                raise FrontendError(
                    f"{shown}: the output {out!r} of node {node.name or '<unnamed>'!r} "
                    f"({node.op_type}) has no static shape after the inputs were fixed and "
                    f"the constant shape computations folded; nmc needs static shapes")

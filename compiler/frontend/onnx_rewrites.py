"""Graph rewrites on a prepared ONNX model that put it in the forms nmc raises, each one
exact (the model computes the same function).

- `orient_linear_weights`: a MatMul / Gemm weight stored [K, N] (x . W, as exporters fold
  nn.Linear's W^T) is stored as the [N, K] weight of a linear behind a Transpose node
  (Gemm: transB flipped instead), so the raising meets x . transpose(W) as from PyTorch.
  When the Add after it adds an initializer named `<layer>.bias`, the weight is named
  `<layer>.weight` (exporters name the folded transpose `val_12` or `onnx::MatMul_123`);
  else `<name>.T`.
- `combine_additive_constants`: Add(Reshape(Add(X, C1)), C2) with constants C1, C2 becomes
  Add(Reshape(X), C): Swin's relative position bias and its shifted-window mask, added on
  either side of a view of the attention scores, become one additive term (what
  `frontend/fold.py` does for torch.export graphs), which `nm.attention` takes as its bias.
- `complete_layer_norm_affine`: a LayerNorm written out in arithmetic (ReduceMean, Sub,
  Pow, ReduceMean, Add, Sqrt, Div) without its affine (gamma, beta: LayerNorm(...,
  elementwise_affine=False)) gets `* ones + zeros` after it, as the frontend does for a
  torch.export `layer_norm` without weights (`materialize.py`); the vector unit's
  layernorm reads gamma and beta, and multiplying by 1 and adding 0 change no value.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper


def _consumers(g: onnx.GraphProto) -> dict[str, list[onnx.NodeProto]]:
    out: dict[str, list[onnx.NodeProto]] = {}
    for node in g.node:
        for i in node.input:
            out.setdefault(i, []).append(node)
    for o in g.output:
        out.setdefault(o.name, []).append(onnx.NodeProto())  # read by the graph itself
    return out


def _index(g: onnx.GraphProto):  # noqa: ANN202
    """(initializers by name, the node making each value, the nodes reading each value,
    the names already taken) of graph `g`."""
    inits = {t.name: t for t in g.initializer}
    producer = {o: n for n in g.node for o in n.output}
    taken = set(inits) | set(producer) | {i.name for i in g.input}
    return inits, producer, _consumers(g), taken


def _drop_unused_initializers(g: onnx.GraphProto) -> None:
    used = {i for n in g.node for i in n.input}
    keep = [t for t in g.initializer if t.name in used]
    del g.initializer[:]
    g.initializer.extend(keep)


def _unique(name: str, taken: set[str]) -> str:
    while name in taken:
        name += "_"
    taken.add(name)
    return name


def orient_linear_weights(model: onnx.ModelProto, is_weight) -> None:  # noqa: ANN001
    g = model.graph
    inits = {t.name: t for t in g.initializer}
    consumers = _consumers(g)
    taken = set(inits) | {o for n in g.node for o in n.output} | {i.name for i in g.input}
    nodes: list[onnx.NodeProto] = []
    for node in g.node:
        w = node.input[1] if node.op_type in ("MatMul", "Gemm") and len(node.input) > 1 else ""
        t = inits.get(w)
        trans_b = next((a for a in node.attribute if a.name == "transB"), None)
        stored_kn = node.op_type == "MatMul" or trans_b is None or trans_b.i == 0
        if t is None or len(t.dims) != 2 or not is_weight(t) or not stored_kn \
                or len(consumers.get(w, [])) != 1:
            nodes.append(node)
            continue
        name = _unique(_linear_weight_name(node, w, consumers, inits, taken), taken)
        g.initializer.append(numpy_helper.from_array(
            np.ascontiguousarray(numpy_helper.to_array(t).T), name))
        if node.op_type == "Gemm":
            if trans_b is None:
                node.attribute.append(helper.make_attribute("transB", 1))
            else:
                trans_b.i = 1
            node.input[1] = name
        else:
            out = _unique(f"{name}__kn", taken)
            nodes.append(helper.make_node("Transpose", [name], [out], perm=[1, 0],
                                          name=f"{node.name}__weight_transpose"))
            for p in node.metadata_props:
                nodes[-1].metadata_props.add().CopyFrom(p)
            node.input[1] = out
        nodes.append(node)
    del g.node[:]
    g.node.extend(nodes)
    _drop_unused_initializers(g)


def _linear_weight_name(node: onnx.NodeProto, w: str, consumers, inits, taken) -> str:
    bias = None
    if node.op_type == "Gemm" and len(node.input) > 2:
        bias = node.input[2]
    else:
        users = consumers.get(node.output[0], [])
        if len(users) == 1 and users[0].op_type == "Add":
            bias = next((i for i in users[0].input if i in inits), None)
    if bias and bias.endswith(".bias") and bias[:-5] + ".weight" not in taken:
        return bias[:-5] + ".weight"
    return f"{w}.T"


def combine_additive_constants(model: onnx.ModelProto,
                               shapes: dict[str, tuple[int, ...]]) -> None:
    g = model.graph
    inits, producer, consumers, taken = _index(g)
    replaced: dict[int, list[onnx.NodeProto]] = {}  # id(second add) -> its replacement
    removed: set[int] = set()
    for add2 in g.node:
        found = _combinable(add2, inits, producer, consumers, shapes)
        if found is None:
            continue
        reshape, add1, x, c = found
        name = _unique(f"{add2.output[0]}.additive", taken)
        g.initializer.append(numpy_helper.from_array(c, name))
        viewed = _unique(f"{x}__viewed", taken)
        new_reshape = helper.make_node("Reshape", [x, reshape.input[1]], [viewed],
                                       name=reshape.name)
        new_add = helper.make_node("Add", [viewed, name], list(add2.output), name=add2.name)
        for src, dst in ((reshape, new_reshape), (add2, new_add)):
            for p in src.metadata_props:
                dst.metadata_props.add().CopyFrom(p)
        replaced[id(add2)] = [new_reshape, new_add]
        removed.update((id(reshape), id(add1)))
    if not replaced:
        return
    nodes: list[onnx.NodeProto] = []
    for node in g.node:
        if id(node) in removed:
            continue
        nodes.extend(replaced.get(id(node), [node]))
    del g.node[:]
    g.node.extend(nodes)
    _drop_unused_initializers(g)


def _constant_and_other(node: onnx.NodeProto, inits) -> tuple[np.ndarray, str] | None:
    if node.op_type != "Add" or len(node.input) != 2:
        return None
    a, b = node.input
    if b in inits and a not in inits:
        return numpy_helper.to_array(inits[b]), a
    if a in inits and b not in inits:
        return numpy_helper.to_array(inits[a]), b
    return None


def _combinable(add2, inits, producer, consumers, shapes):  # noqa: ANN001, ANN202
    """(the Reshape, the first Add, X, C) when `add2` is Add(Reshape(Add(X, C1)), C2)
    with the Reshape keeping the trailing dims C1 varies over; else None."""
    second = _constant_and_other(add2, inits)
    if second is None:
        return None
    c2, r = second
    reshape = producer.get(r)
    if reshape is None or reshape.op_type != "Reshape" or len(consumers.get(r, [])) != 1:
        return None
    add1 = producer.get(reshape.input[0])
    if add1 is None or len(consumers.get(reshape.input[0], [])) != 1:
        return None
    first = _constant_and_other(add1, inits)
    if first is None:
        return None
    c1, x = first
    t, s = shapes.get(x), shapes.get(r)
    if t is None or s is None or c1.ndim > len(t):
        return None
    padded = c1.reshape((1,) * (len(t) - c1.ndim) + c1.shape)
    j = next((i for i, d in enumerate(padded.shape) if d != 1), len(t))
    tail = tuple(t[j:])
    if tail and tuple(s[len(s) - len(tail):]) != tail:
        return None
    core = padded.reshape(padded.shape[j:])  # the leading dims are 1
    c1_in_s = core.reshape((1,) * (len(s) - len(tail)) + core.shape)
    try:
        c = (c1_in_s + c2).astype(np.float32)
    except ValueError:
        return None
    if np.broadcast_shapes(c.shape, tuple(s)) != tuple(s):
        return None
    return reshape, add1, x, c


def complete_layer_norm_affine(model: onnx.ModelProto,
                               shapes: dict[str, tuple[int, ...]]) -> None:
    g = model.graph
    inits, producer, consumers, taken = _index(g)
    graph_outputs = {o.name for o in g.output}
    after: dict[int, list[onnx.NodeProto]] = {}  # id(node) -> nodes to put after it
    renamed: dict[str, str] = {}  # a normalised value -> its affine output
    for div in g.node:
        x = _layer_norm_input(div, producer)
        c = shapes.get(x, ())[-1:] if x is not None else ()
        if not c:
            continue
        y = div.output[0]
        gamma = _only_affine(y, "Mul", consumers, inits, c[0])
        beta = _only_affine(gamma.output[0], "Add", consumers, inits, c[0]) if gamma else None
        if gamma is not None and beta is not None:
            continue
        anchor, value = (div, y) if gamma is None else (gamma, gamma.output[0])
        if value in graph_outputs:  # the model's result itself: left as it is (refused)
            continue
        new_nodes, out = [], value
        for op, fill, wanted in (("Mul", 1.0, gamma is None), ("Add", 0.0, True)):
            if not wanted:
                continue
            const = _unique(f"{div.name or y}.{'weight' if op == 'Mul' else 'bias'}", taken)
            g.initializer.append(numpy_helper.from_array(np.full(c, fill, np.float32), const))
            result = _unique(f"{value}__{op.lower()}", taken)
            new_nodes.append(helper.make_node(op, [out, const], [result],
                                              name=_unique(f"{anchor.name}_{op}", taken)))
            out = result
        after[id(anchor)] = new_nodes
        renamed[value] = out
    if not after:
        return
    nodes: list[onnx.NodeProto] = []
    for node in g.node:  # the readers of a normalised value now read it completed
        for i, name in enumerate(node.input):
            node.input[i] = renamed.get(name, name)
        nodes.append(node)
        nodes.extend(after.get(id(node), []))
    del g.node[:]
    g.node.extend(nodes)


def _layer_norm_input(div: onnx.NodeProto, producer) -> str | None:  # noqa: ANN001
    """x when `div` is (x - mean(x)) / sqrt(mean((x - mean(x))^2) + eps), last dim."""
    if div.op_type != "Div" or len(div.input) != 2:
        return None
    sub, sqrt = producer.get(div.input[0]), producer.get(div.input[1])
    if sub is None or sub.op_type != "Sub" or sqrt is None or sqrt.op_type != "Sqrt":
        return None
    mean = producer.get(sub.input[1])
    add = producer.get(sqrt.input[0])
    if mean is None or mean.op_type != "ReduceMean" or mean.input[0] != sub.input[0] \
            or add is None or add.op_type != "Add":
        return None
    var = next((producer.get(i) for i in add.input
                if producer.get(i) is not None and producer[i].op_type == "ReduceMean"), None)
    square = producer.get(var.input[0]) if var is not None else None
    if square is None or square.op_type not in ("Pow", "Mul") or square.input[0] != div.input[0]:
        return None
    return sub.input[0]


def _only_affine(value: str, op_type: str, consumers, inits, c: int):  # noqa: ANN001, ANN202
    """The one consumer of `value`: an `op_type` node with a [C] initializer, or None."""
    users = consumers.get(value, [])
    if len(users) != 1 or users[0].op_type != op_type:
        return None
    node = users[0]
    other = [i for i in node.input if i != value]
    t = inits.get(other[0]) if len(other) == 1 else None
    return node if t is not None and tuple(t.dims) in ((c,), (1, c), (1, 1, c)) else None

"""Operands the vector unit needs in memory, made into constant tensors.

The vector unit adds and subtracts tensors (`vbin`), and its layer norm reads gamma and
beta from memory; it has no add-an-immediate and no plain normalisation. So operands
that PyTorch leaves implicit become lifted constants (`lifted.lift_constant`), each equal
bit for bit to what PyTorch computes:

    add.Tensor(x, c)  /  sub.Tensor(x, c)   (c a Python number)
        -> x + C / x - C        C = [c] * x.shape[-1]: a row, broadcast like a bias
    rsub.Scalar(x, c)  (c - x)  -> C - x    C = c in x's full shape (nm.sub broadcasts
                                            only its subtrahend)
    layer_norm(x, [D], None, None, eps)     -> layer_norm(x, [D], ones, zeros, eps)
                                               (native_layer_norm alike)
    conv2d(x, w, None, ...)                 -> conv2d(x, w, zeros, ...)
    pad / constant_pad_nd(x, pad, v)        -> cat([V_before, x, V_after], d) for each
                                               padded dim d but the last, V full of v
                                               (Swin's pad of a feature map the window
                                               does not divide)

(x + c rounds the sum of f32 values once, as PyTorch's scalar form does; layer_norm with
weight 1 and bias 0 is PyTorch's own result without them; a zero bias adds 0; the cat
holds the padded tensor's values.) Only f32 operands are rewritten; a pad of width zero
stays (raise-torch-to-nm drops it), one that crops (negative) or pads the last dim stays
and is refused. Multiplication and division by a number stay scalar: the vector
unit scales by an immediate (`nm.scale`), and attention patterns read them there.
"""

from __future__ import annotations

from numbers import Real

import torch
from torch.export import ExportedProgram

from nmc.compiler.frontend.lifted import fake_mode, lift_constant

_aten = torch.ops.aten


def _f32_shape(node: object) -> tuple[int, ...] | None:
    """The shape of an f32 tensor node, else None."""
    val = node.meta.get("val") if isinstance(node, torch.fx.Node) else None
    if isinstance(val, torch.Tensor) and val.dtype == torch.float32:
        return tuple(int(d) for d in val.shape)
    return None


def _number(arg: object) -> float | None:
    return float(arg) if isinstance(arg, Real) and not isinstance(arg, bool) else None


class _Materializer:
    def __init__(self, ep: ExportedProgram):
        self.ep = ep
        self.graph = ep.graph_module.graph
        self.mode = fake_mode(ep)
        self.changed = False

    def constant(self, like: torch.fx.Node, value: torch.Tensor, suffix: str = ""
                 ) -> torch.fx.Node:
        self.changed = True
        return lift_constant(self.ep, like, value, self.mode, suffix)[0]

    def scalar_operand(self, node: torch.fx.Node) -> None:
        """add/sub with a number -> with a constant row; rsub -> a full constant."""
        if node.kwargs.get("alpha", 1) != 1 or len(node.args) != 2:
            return  # raise-torch-to-nm reports alpha != 1
        x, c = node.args
        shape, value = _f32_shape(x), _number(c)
        if shape is None or value is None or not shape:
            return
        if node.target is _aten.rsub.Scalar:
            full = self.constant(node, torch.full(shape, value))
            node.target, node.args = _aten.sub.Tensor, (full, x)
        else:
            node.args = (x, self.constant(node, torch.full(shape[-1:], value)))

    def layer_norm_affine(self, node: torch.fx.Node) -> None:
        args = list(node.args) + [None] * (4 - len(node.args))
        x, normalized, weight, bias = args[:4]
        if (weight is not None or bias is not None or _f32_shape(x) is None
                or not isinstance(normalized, (list, tuple)) or len(normalized) != 1):
            return
        d = int(normalized[0])
        ones = self.constant(node, torch.ones(d), "_weight")
        zeros = self.constant(node, torch.zeros(d), "_bias")
        node.args = (x, normalized, ones, zeros, *node.args[4:])
        node.kwargs = {k: v for k, v in node.kwargs.items() if k not in ("weight", "bias")}

    def conv_bias(self, node: torch.fx.Node) -> None:
        x, w, *rest = node.args
        bias = rest[0] if rest else node.kwargs.get("bias")
        w_shape = _f32_shape(w)
        if bias is not None or w_shape is None or _f32_shape(x) is None:
            return
        zeros = self.constant(node, torch.zeros(w_shape[0]), "_bias")
        node.args = (x, w, zeros, *rest[1:])
        node.kwargs = {k: v for k, v in node.kwargs.items() if k != "bias"}


    def pad(self, node: torch.fx.Node) -> None:
        """F.pad (`aten.pad`, mode "constant") / `aten.constant_pad_nd` -> cats."""
        x, pad = node.args[0], list(node.args[1])
        if node.target is _aten.pad.default:
            mode = node.args[2] if len(node.args) > 2 else node.kwargs.get("mode", "constant")
            if mode != "constant":
                return
            fill = node.args[3] if len(node.args) > 3 else node.kwargs.get("value")
        else:
            fill = node.args[2] if len(node.args) > 2 else node.kwargs.get("value", 0)
        value = _number(0 if fill is None else fill)
        shape = _f32_shape(x)
        if shape is None or value is None or not any(pad) or len(pad) % 2:
            return
        rank, widths = len(shape), {}
        for i in range(0, len(pad), 2):
            if pad[i] or pad[i + 1]:
                widths[rank - 1 - i // 2] = (int(pad[i]), int(pad[i + 1]))
        if rank - 1 in widths or any(w < 0 for pair in widths.values() for w in pair):
            return
        current, cur_shape = x, list(shape)
        with self.graph.inserting_before(node):
            for dim, (before, after) in sorted(widths.items(), reverse=True):
                parts = []
                for side, width in (("_before", before), ("", None), ("_after", after)):
                    if width is None:
                        parts.append(current)
                    elif width:
                        fill = torch.full((*cur_shape[:dim], width, *cur_shape[dim + 1:]),
                                          value)
                        parts.append(self.constant(node, fill, f"_{dim}{side}"))
                cur_shape[dim] += before + after
                current = self.graph.call_function(_aten.cat.default, (parts, dim))
                current.meta.update({k: v for k, v in node.meta.items()
                                     if k not in ("val", "tensor_meta")})
                current.meta["val"] = self._fake(cur_shape)
        node.replace_all_uses_with(current)
        self.graph.erase_node(node)

    def _fake(self, shape: list[int]):  # noqa: ANN202 - a fake tensor
        empty = torch.empty(shape)
        return self.mode.from_tensor(empty, static_shapes=True) if self.mode else empty


_RULES = {
    _aten.add.Tensor: _Materializer.scalar_operand,
    _aten.sub.Tensor: _Materializer.scalar_operand,
    _aten.rsub.Scalar: _Materializer.scalar_operand,
    _aten.layer_norm.default: _Materializer.layer_norm_affine,
    # the default decomposition table's form (same arguments): run_decompositions() graphs
    _aten.native_layer_norm.default: _Materializer.layer_norm_affine,
    _aten.conv2d.default: _Materializer.conv_bias,
    _aten.constant_pad_nd.default: _Materializer.pad,
    _aten.pad.default: _Materializer.pad,
}
"""The FX op each rewrite applies to (after `run_decompositions({})`)."""


def materialize_operands(ep: ExportedProgram) -> ExportedProgram:
    """Apply the rewrites of the module docstring to `ep`, in place."""
    m = _Materializer(ep)
    for node in list(m.graph.nodes):
        rule = _RULES.get(node.target) if node.op == "call_function" else None
        if rule is not None:
            rule(m, node)
    if m.changed:
        m.graph.lint()
        ep.graph_module.recompile()
    return ep


__all__ = ["materialize_operands"]

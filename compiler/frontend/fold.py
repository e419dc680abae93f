"""Compile-time folding of buffer-derived constants in a loaded ExportedProgram.

Swin computes parts of its attention from non-persistent buffers: the relative position
bias `table[relative_position_index.view(-1)].view(N, N, -1).permute(2, 0, 1).unsqueeze(0)`
(an int64 gather) and the shifted-window mask `attn_mask.unsqueeze(...)`. Those values do
not depend on the input, so `fold_constants(ep)` evaluates them with PyTorch once and
replaces each by a new lifted constant (an `InputKind.CONSTANT_TENSOR` input, value in
`ep.constants`), which the rest of nmc sees as one more f32 model tensor (`nm.param`).

A node is folded when every tensor it reads is a constant and at least one of those is a
buffer, a lifted constant or an already folded node, and its value is floating point (an
integer intermediate such as the flattened index is folded only into a float result). Computations on parameters alone
(DeiT's `cls_token.expand(B, -1, -1)`) are left to the compiler, which has ops for them.

Then additive constants are combined through views, so that the scores of a shifted
window attention get a single additive term:

    add(view(y, S), c)          -> view(add(y, expand(c, S).view(y.shape)), S)
    add(add(x, c1), c2)         -> add(x, c1 + c2)      (the inner add used only here)
    view(view(x, S1), S2)       -> view(x, S2);   view(x, x.shape) -> x

(c, c1, c2 folded constants, x's shape the result shape). Swin's
`(attn + bias).view(-1, nW, H, N, N) + mask.unsqueeze(2)).view(-1, H, N, N)` becomes
`attn + C` with C [windows, H, N, N] = bias + mask, one term per (window, head).
The folded constants are named `<module path>.folded_<node>` (`layers.0.blocks.1.attn.
folded_add_3`).
"""

from __future__ import annotations

import operator

import torch
from torch.export import ExportedProgram
from torch.export.graph_signature import InputKind, TensorArgument

from nmc.compiler.frontend.lifted import fake_mode, lift_constant

_aten = torch.ops.aten
_VIEWS = (_aten.view.default, _aten._unsafe_view.default, _aten.reshape.default)
_ADD = _aten.add.Tensor


def _placeholder_values(ep: ExportedProgram) -> tuple[dict[str, torch.Tensor], set[str]]:
    """Constant placeholder name -> tensor; and the names of the non-parameter ones."""
    values: dict[str, torch.Tensor] = {}
    derived: set[str] = set()
    for spec in ep.graph_signature.input_specs:
        if spec.kind == InputKind.USER_INPUT or not isinstance(spec.arg, TensorArgument):
            continue
        if spec.kind == InputKind.PARAMETER:
            t = ep.state_dict.get(spec.target)
        elif spec.kind == InputKind.BUFFER:
            t = ep.state_dict.get(spec.target)
            if t is None:
                t = ep.constants.get(spec.target)
            derived.add(spec.arg.name)
        else:
            t = ep.constants.get(spec.target)
            derived.add(spec.arg.name)
        if isinstance(t, torch.Tensor):
            values[spec.arg.name] = t
    return values, derived


class _Folder:
    def __init__(self, ep: ExportedProgram):
        self.ep = ep
        self.graph = ep.graph_module.graph
        self.values, derived = _placeholder_values(ep)
        self.derived = set(derived)  # node names whose value is a folded / buffer constant
        self.fake_mode = fake_mode(ep)

    # --------------------------------------------------------------- evaluation
    def _value(self, a):
        if isinstance(a, torch.fx.Node):
            return self.values[a.name]
        if isinstance(a, (list, tuple)):
            return type(a)(self._value(x) for x in a)
        return a

    @staticmethod
    def _nodes(a):
        """The fx nodes among an argument (nested lists and tuples)."""
        if isinstance(a, torch.fx.Node):
            yield a
        elif isinstance(a, (list, tuple)):
            for x in a:
                yield from _Folder._nodes(x)

    def evaluate(self) -> None:
        """Compute the value of every foldable node (recorded in self.values)."""
        for node in self.graph.nodes:
            if node.op != "call_function" or node.target is operator.getitem:
                continue
            read = list(self._nodes((*node.args, *node.kwargs.values())))
            if not (all(n.name in self.values for n in read)
                    and any(n.name in self.derived for n in read)):
                continue
            try:
                with torch.no_grad():
                    out = node.target(*self._value(node.args), **self._value(node.kwargs))
            except Exception:  # noqa: BLE001 - not foldable: left to the compiler
                continue
            if isinstance(out, torch.Tensor):
                self.values[node.name] = out
                self.derived.add(node.name)

    # --------------------------------------------------------------- rewriting
    def _new_constant(self, like: torch.fx.Node, value: torch.Tensor) -> torch.fx.Node:
        """A new CONSTANT_TENSOR placeholder holding `value` (float32, contiguous)."""
        ph, self.values[ph.name] = lift_constant(self.ep, like, value, self.fake_mode)
        self.derived.add(ph.name)
        return ph

    def _const_node(self, node: torch.fx.Node) -> bool:
        """A folded (or buffer) float constant: the only kind that becomes an f32 tensor."""
        value = self.values.get(node.name)
        return node.name in self.derived and value is not None and value.is_floating_point()

    def _shape(self, node: torch.fx.Node) -> tuple[int, ...]:
        return tuple(node.meta["val"].shape)

    def reassociate(self) -> bool:
        """One round of the rewrites in the module docstring; True if something changed."""
        for node in list(self.graph.nodes):
            if node.op != "call_function":
                continue
            if node.target in _VIEWS:
                src = node.args[0]
                if self._const_node(node):
                    continue
                if isinstance(src, torch.fx.Node) and self._shape(src) == self._shape(node):
                    node.replace_all_uses_with(src)
                    self.graph.erase_node(node)
                    return True
                if (isinstance(src, torch.fx.Node) and src.target in _VIEWS
                        and not self._const_node(src)):
                    node.args = (src.args[0], *node.args[1:])
                    if not src.users:
                        self.graph.erase_node(src)
                    return True
            if node.target is not _ADD or node.kwargs or len(node.args) != 2:
                continue
            x, c = node.args
            if not (isinstance(x, torch.fx.Node) and isinstance(c, torch.fx.Node)):
                continue
            if self._const_node(x) and not self._const_node(c):
                x, c = c, x
            if self._const_node(x) or not self._const_node(c):
                continue
            shape = self._shape(node)
            if self._shape(x) != shape:
                continue
            cval = self.values[c.name]
            if x.target in _VIEWS and len(x.users) == 1 and isinstance(x.args[0], torch.fx.Node):
                y = x.args[0]
                folded = self._new_constant(node, cval.expand(shape).reshape(self._shape(y)))
                with self.graph.inserting_before(node):
                    add = self.graph.call_function(_ADD, (y, folded))
                    add.meta.update(node.meta)
                    for k in ("val", "tensor_meta"):
                        if k in y.meta:
                            add.meta[k] = y.meta[k]
                    view = self.graph.call_function(x.target, (add, list(shape)))
                    view.meta.update(node.meta)
                node.replace_all_uses_with(view)
                self.graph.erase_node(node)
                self.graph.erase_node(x)
                return True
            if (x.target is _ADD and len(x.users) == 1 and not x.kwargs
                    and len(x.args) == 2 and all(isinstance(a, torch.fx.Node) for a in x.args)):
                inner_x, inner_c = x.args
                if self._const_node(inner_x):
                    inner_x, inner_c = inner_c, inner_x
                if (self._const_node(inner_c) and not self._const_node(inner_x)
                        and self._shape(inner_x) == shape):
                    total = self.values[inner_c.name] + cval
                    if tuple(total.shape) != shape and len(total.shape) > len(shape):
                        continue
                    folded = self._new_constant(node, total)
                    node.args = (inner_x, folded)
                    self.graph.erase_node(x)
                    return True
        return False

    def materialise(self) -> None:
        """Replace every folded node read by a non-folded one by a constant placeholder."""
        for node in list(self.graph.nodes):
            if node.op != "call_function" or not self._const_node(node):
                continue
            users = [u for u in node.users if not self._const_node(u)]
            if not users:
                continue
            ph = self._new_constant(node, self.values[node.name])
            for u in users:
                u.replace_input_with(node, ph)

    def prune(self) -> None:
        """Drop dead nodes and unused placeholders that this pass created or orphaned."""
        self.graph.eliminate_dead_code()
        specs = self.ep.graph_signature.input_specs
        for ph in [n for n in self.graph.nodes if n.op == "placeholder"]:
            if ph.users:
                continue
            spec = next((s for s in specs if s.arg.name == ph.name), None)
            if spec is None or spec.kind != InputKind.CONSTANT_TENSOR or not ph.name.startswith(
                    "c_folded_"):
                continue
            specs.remove(spec)
            self.ep.constants.pop(spec.target, None)
            self.graph.erase_node(ph)


def fold_constants(ep: ExportedProgram) -> ExportedProgram:
    """Fold buffer-derived constants of `ep` in place (see the module docstring)."""
    folder = _Folder(ep)
    folder.evaluate()
    if len(folder.derived) == 0 or not any(
            n.op == "call_function" and folder._const_node(n) for n in folder.graph.nodes):
        return ep
    folder.materialise()
    folder.prune()
    while folder.reassociate():
        pass
    folder.prune()
    folder.graph.lint()
    ep.graph_module.recompile()
    return ep


__all__ = ["fold_constants"]

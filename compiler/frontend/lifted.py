"""New lifted constants in a loaded ExportedProgram: what frontend rewrites add.

A rewrite that computes a tensor at compile time (a folded buffer expression, a BatchNorm
folded into its convolution, a zero bias) adds it as an `InputKind.CONSTANT_TENSOR` input,
value in `ep.constants`: the rest of nmc sees one more f32 model tensor (`nm.param`),
named `<module path>.folded_<node>` after the node it stands for.
"""

from __future__ import annotations

import torch
from torch.export import ExportedProgram
from torch.export.graph_signature import InputKind, InputSpec, TensorArgument


def module_path(node: torch.fx.Node) -> str:
    """The PyTorch module path of the node ("" at the top level)."""
    stack = node.meta.get("nn_module_stack")
    if not stack:
        return ""
    return str(list(stack.values())[-1][0])


def fake_mode(ep: ExportedProgram):  # noqa: ANN201 - FakeTensorMode or None
    """The fake tensor mode of the program's placeholders (None if they have none)."""
    return next((n.meta["val"].fake_mode for n in ep.graph_module.graph.nodes
                 if n.op == "placeholder" and hasattr(n.meta.get("val"), "fake_mode")), None)


def placeholder_tensors(ep: ExportedProgram) -> dict[str, torch.Tensor]:
    """Placeholder name -> tensor, for parameters, buffers and lifted constants."""
    values: dict[str, torch.Tensor] = {}
    for spec in ep.graph_signature.input_specs:
        if spec.kind == InputKind.USER_INPUT or spec.target is None:
            continue
        t = ep.state_dict.get(spec.target)
        if t is None:
            t = ep.constants.get(spec.target)
        if isinstance(t, torch.Tensor):
            values[spec.arg.name] = t
    return values


def drop_input(ep: ExportedProgram, placeholder: torch.fx.Node) -> None:
    """Remove an unused parameter / buffer / constant input (node, spec and tensor)."""
    specs = ep.graph_signature.input_specs
    spec = next(s for s in specs if s.arg.name == placeholder.name)
    specs.remove(spec)
    ep.state_dict.pop(spec.target, None)
    ep.constants.pop(spec.target, None)
    ep.graph_module.graph.erase_node(placeholder)


def lift_constant(ep: ExportedProgram, like: torch.fx.Node, value: torch.Tensor,
                  mode=None, suffix: str = "", key: str | None = None,
                  ) -> tuple[torch.fx.Node, torch.Tensor]:  # noqa: ANN001
    """A new CONSTANT_TENSOR placeholder holding `value` as float32 (contiguous), named
    after `like` (and `suffix`, when one node gets several) unless `key` names it, placed
    before the first user input; `mode`: the program's fake mode (`fake_mode(ep)`).
    Returns the placeholder and the tensor it holds."""
    graph = ep.graph_module.graph
    value = value.detach().to(torch.float32).contiguous().clone()
    path = module_path(like)
    name = f"folded_{like.name}{suffix}"
    if key is None:
        key = f"{path}.{name}" if path else name
    specs = ep.graph_signature.input_specs
    first_user = next((n for n in graph.nodes if n.op == "placeholder"
                       and any(s.arg.name == n.name and s.kind == InputKind.USER_INPUT
                               for s in specs)), None)
    anchor = first_user or next(n for n in graph.nodes if n.op != "placeholder")
    with graph.inserting_before(anchor):
        ph = graph.placeholder(f"c_{name}")
    ph.meta["val"] = (mode.from_tensor(value, static_shapes=True)
                      if mode is not None else value)
    index = next((i for i, s in enumerate(specs) if s.kind == InputKind.USER_INPUT),
                 len(specs))
    specs.insert(index, InputSpec(InputKind.CONSTANT_TENSOR, TensorArgument(ph.name),
                                  key, None))
    ep.constants[key] = value
    return ph, value

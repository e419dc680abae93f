"""Rewrites of an ExportedProgram's graph into ops torch-mlir 20261001 imports.

`aten.squeeze.dims` (what torch.export's default decomposition table makes of `unbind`
and `squeeze(dims)`) has no torch-mlir lowering ("failed to legalize operation
'torch.aten.squeeze.dims'"); with static shapes it is a view to its result's shape.
"""

from __future__ import annotations

import torch
from torch.export import ExportedProgram


def rewrite_for_torch_mlir(ep: ExportedProgram) -> ExportedProgram:
    """`ep` with the ops above rewritten (in place; returned for chaining)."""
    graph = ep.graph_module.graph
    changed = False
    for node in list(graph.nodes):
        if node.op != "call_function" or node.target != torch.ops.aten.squeeze.dims:
            continue
        val = node.meta.get("val")
        if not isinstance(val, torch.Tensor):
            continue
        with graph.inserting_before(node):
            view = graph.call_function(torch.ops.aten.view.default,
                                       (node.args[0], list(val.shape)))
        view.meta = dict(node.meta)
        node.replace_all_uses_with(view)
        graph.erase_node(node)
        changed = True
    if changed:
        ep.graph_module.recompile()
    return ep

"""ONNX model -> torch-mlir (torch dialect) -> xDSL ModuleOp, annotated as for torch.export.

torch-mlir's own ONNX path: its Python importer (`torch_mlir.extras.onnx_importer`) turns
every node into `torch.operator "onnx.<Op>"`, then its `convert-torch-onnx-to-torch` pass
rewrites those into aten ops (MatMul -> aten.matmul, LayerNormalization ->
aten.native_layer_norm, Gemm -> aten.mm + add, ...), and `canonicalize` folds the constant
lists. The graph it reads is prepared by `onnx_model.prepare_onnx` (static shapes, weights
as inputs), so `@main`'s arguments are the user inputs, then the weights, annotated with
`nm.state_key = <initializer name>` like a torch.export file's parameters; the weights go into
the module's weight store. Each op's location becomes
`loc("<node name>"("<module path>":0:0))`: `location_info` reads the module path (layer
names) and the node name (errors).

An ONNX op torch-mlir cannot convert is reported as one error line with its op type and
node name.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path

from xdsl.context import Context
from xdsl.dialects.builtin import ArrayAttr, ModuleOp
from xdsl.dialects.func import FuncOp

from nmc.compiler.dialects.nm_attrs import param_arg_attrs, set_io_names, set_model_path
from nmc.compiler.errors import FrontendError
from nmc.compiler.frontend.importer import _hoist_aliases, parse_module
from nmc.compiler.frontend.onnx_model import OnnxProgram, prepare_onnx
from nmc.compiler.frontend.weights import WeightStore, attach_weights

CONVERSION = "builtin.module(func.func(convert-torch-onnx-to-torch),canonicalize)"
"""torch-mlir's ONNX -> aten conversion, then the folding of its constant lists."""

_NODE_LOC_RE = re.compile(r'loc\("(nmc_node_[0-9]+)"\)')

def _mlir_string(s: str) -> str:
    return s.replace("\\", "\\\\").replace('"', '\\"').replace("\n", " ")


def _located(text: str, prog: OnnxProgram) -> str:
    """Rewrite the importer's `loc("nmc_node_K")` into `loc("<node>"("<path>":0:0))`."""

    def repl(m: re.Match[str]) -> str:
        path, node = prog.locations.get(m.group(1), ("", m.group(1)))
        inner = f'("{_mlir_string(path)}":0:0)' if path else ""
        return f'loc("{_mlir_string(node)}"{inner})'

    return _NODE_LOC_RE.sub(repl, text)


def _unconverted(module, prog: OnnxProgram) -> list[str]:
    """`ONNX <Op> node '<name>'` for each op the conversion left as a torch.operator."""
    found: list[str] = []

    def visit(op) -> None:
        for region in op.regions:
            for block in region.blocks:
                for inner in block.operations:
                    visit(inner.operation)
        if op.name == "torch.operator":
            name = str(op.attributes["name"]).strip('"').removeprefix("onnx.")
            loc = str(op.location)
            m = re.search(r'"(nmc_node_[0-9]+)"', loc)
            node = prog.locations.get(m.group(1), ("", ""))[1] if m else ""
            found.append(node or f"ONNX {name} node ?")

    visit(module.operation)
    return found


def import_onnx_to_torch_mlir(prog: OnnxProgram) -> str:
    """The prepared model in torch dialect (generic form, aliases hoisted, xDSL-parsable)."""
    from torch_mlir.dialects import torch as torch_d
    from torch_mlir.extras import onnx_importer
    from torch_mlir.ir import Context as MlirContext
    from torch_mlir.passmanager import PassManager

    prog.model.graph.name = "main"
    ctx = MlirContext()
    torch_d.register_dialect(ctx)
    try:
        info = onnx_importer.ModelInfo(prog.model)
        module = info.create_module(context=ctx).operation
        onnx_importer.NodeImporter.define_function(info.main_graph, module).import_all()
    except Exception as e:  # OnnxImportError, unsupported types
        raise FrontendError(f"torch-mlir could not import the ONNX model "
                            f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})"
                            ) from None
    with ctx:
        ctx.emit_error_diagnostics = False
        try:
            PassManager.parse(CONVERSION).run(module)
        except Exception:  # the failures are the unconverted ops, reported below
            pass
    left = _unconverted(module, prog)
    if left:
        raise FrontendError(
            f"unsupported ONNX operation(s): {', '.join(left[:8])}"
            f"{', ...' if len(left) > 8 else ''} (torch-mlir cannot convert them)")
    text = module.get_asm(print_generic_op_form=True, large_resource_limit=64,
                          enable_debug_info=True)
    return _hoist_aliases(_located(text, prog))


def _annotate(module: ModuleOp, prog: OnnxProgram, model_path: str) -> None:
    funcs = [op for op in module.ops if isinstance(op, FuncOp)]
    if len(funcs) != 1:
        raise FrontendError("internal: the imported ONNX module has no single function")
    func = funcs[0]
    n_args = len(func.body.block.args)
    if n_args != len(prog.inputs) + len(prog.params):
        raise FrontendError(f"internal: @main has {n_args} arguments, the model "
                            f"{len(prog.inputs)} inputs and {len(prog.params)} weights")
    func.sym_name = type(func.sym_name)("main")
    func.arg_attrs = ArrayAttr([param_arg_attrs(None) for _ in prog.inputs]
                               + [param_arg_attrs(p) for p in prog.params])
    outputs = [o.name for o in prog.model.graph.output]
    set_io_names(func, prog.inputs, outputs)
    set_model_path(module, model_path)


def import_onnx_model(path: str | os.PathLike[str], ctx: Context | None = None,
                      shapes: Mapping[str, tuple[int, ...]] | None = None,
                      batch: int | None = None) -> ModuleOp:
    """The ONNX file at `path` as a torch-level xDSL module with its weight store attached
    (as `importer.import_model` for torch.export files)."""
    prog = prepare_onnx(path, shapes, batch)
    module = parse_module(import_onnx_to_torch_mlir(prog), ctx)
    absolute = str(Path(path).expanduser().absolute())
    _annotate(module, prog, absolute)
    attach_weights(module, WeightStore.from_arrays(prog.weights, os.fspath(path)))
    return module

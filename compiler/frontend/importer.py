"""ExportedProgram -> torch-mlir (torch dialect, value semantics) -> xDSL ModuleOp.

The torch-mlir import is stateless: parameters, buffers and lifted constants become
arguments of `func.func @main`, in `ep.graph_signature.input_specs` order, so no weights
appear in the IR. `import_model` parses the text with the `torch` dialect and annotates it:

- module attribute `nm.model` = absolute path of the model file;
- module attribute `nm.model_scales` (a PT2E-quantized model only: frontend/pt2e.py) =
  the int8 scales of its layers, by weight name;
- `func.func @main` attributes `nm.input_names` / `nm.output_names` (ArrayAttr of StringAttr:
  the USER_INPUT arg names; "output" or "output_<i>");
- every argument that is a parameter / buffer / constant carries the argument attribute
  `nm.state_key = "<state_dict key>"`. `raise-torch-to-nm` replaces those arguments by
  `nm.param {name = ...}` ops, so after it `main` takes only the user inputs. (The
  replacement is done there, not here, so that the torch-level module stays well typed:
  the torch ops take `!torch.vtensor` operands, `nm.param` yields builtin tensors.)

Locations: each node's location becomes `callsite("<module path>":0:0 at "<file>":<line>:0)`
where `<file>:<line>` is the innermost frame of the node's stack trace outside torch's own
package (the user's model source line) and `<module path>` is the PyTorch module path
(`blocks.0.mlp.fc1`). Ops at the top level of the model get just `"<file>":<line>:0`. A
`FileLineColLoc` with line 0 is always a module path (source lines start at 1).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
from torch.export import ExportedProgram
from torch.export.graph_signature import InputKind
from xdsl.dialects.builtin import ArrayAttr, ModuleOp
from xdsl.context import Context
from xdsl.dialects.func import FuncOp
from xdsl.ir import Attribute
from xdsl.parser import Parser
from xdsl.utils.exceptions import ParseError

from nmc.compiler.dialects.context import make_context
from nmc.compiler.dialects.nm_attrs import (
    param_arg_attrs, set_io_names, set_model_path, set_model_scales,
)
from nmc.compiler.errors import FrontendError
from nmc.compiler.frontend.diagnostics import capture, import_error
from nmc.compiler.frontend.loader import load_exported_program
from nmc.compiler.frontend.pt2e import pt2e_scales
from nmc.compiler.frontend.weights import WeightStore, attach_weights

BACKEND_LEGAL_OPS = [
    "aten.linear",
    "aten.layer_norm",
    "aten.gelu",
    "aten.scaled_dot_product_attention",
    "aten.softmax.int",
    "aten.conv2d",
    "aten.matmul",
    "aten.roll",
    "aten.mean.dim",
]
"""Ops torch-mlir keeps whole instead of decomposing (nmc maps them to its own ops)."""

_FRAME_RE = re.compile(r"""File "([^"]+)", line ([0-9]+),""")
_TORCH_DIR = os.path.dirname(os.path.abspath(torch.__file__)) + os.sep


# ------------------------------------------------------------------ stack trace rewrite


def _user_frame(trace: str | None) -> tuple[str, int] | None:
    """The innermost frame of `trace` that is not inside torch's own package; for a model
    that is itself a torch module (a top-level `nn.Sequential`, `nn.Conv3d`), which has no
    such frame, the innermost frame (the torch module's own source line).

    What the trace holds depends on the export: `torch.export.export(..., strict=True)`
    records every frame down to the op (a pad in a helper method names the pad's own
    line); the default non-strict export records only `forward` frames, so an op in a
    helper that `forward` calls (timm's `SwinTransformerBlock._attn`) is named by the
    `forward` line that calls the helper: the innermost user line the file holds.
    """
    if not trace:
        return None
    frames = _FRAME_RE.findall(trace)
    for file, line in reversed(frames):
        if not os.path.abspath(file).startswith(_TORCH_DIR):
            return file, int(line)
    if frames:
        file, line = frames[-1]
        return file, int(line)
    return None


def _module_path(node: torch.fx.Node) -> str:
    stack = node.meta.get("nn_module_stack")
    if not stack:
        return ""
    path, _cls = list(stack.values())[-1]
    return str(path)


def _trace_for(node: torch.fx.Node) -> str:
    frames = []
    user = _user_frame(node.meta.get("stack_trace"))
    if user is not None:
        frames.append(f'File "{user[0]}", line {user[1]}, in forward')
    path = _module_path(node)
    if path and '"' not in path:
        frames.append(f'File "{path}", line 0, in forward')
    return "\n".join(frames)


@contextmanager
def _rewritten_traces(ep: ExportedProgram) -> Iterator[None]:
    """Temporarily give every call_function node the two-frame trace described above."""
    saved: list[tuple[torch.fx.Node, bool, object]] = []
    for node in ep.graph_module.graph.nodes:
        if node.op != "call_function":
            continue
        had = "stack_trace" in node.meta
        saved.append((node, had, node.meta.get("stack_trace")))
        node.meta["stack_trace"] = _trace_for(node)
    try:
        yield
    finally:
        for node, had, old in saved:
            if had:
                node.meta["stack_trace"] = old
            else:
                node.meta.pop("stack_trace", None)


# ------------------------------------------------------------------------ text fix-ups

_ALIAS_DEF_RE = re.compile(r"^(#[A-Za-z_][\w$.]*)\s*=\s*(.*)$")
_ALIAS_REF_RE = re.compile(r"#[A-Za-z_][\w$.]*")


def _hoist_aliases(text: str) -> str:
    """Move top-level attribute alias definitions to the top, definitions before uses.

    MLIR prints (location) aliases at the end of the text; xDSL needs them defined first.
    Also drops a trailing `{-# ... #-}` dialect-resources block, which xDSL cannot parse.
    """
    body: list[str] = []
    defs: dict[str, str] = {}
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.startswith("{-#"):
            while i < len(lines) and not lines[i].rstrip().endswith("#-}"):
                i += 1
            i += 1
            continue
        m = _ALIAS_DEF_RE.match(line)
        if m:
            defs[m.group(1)] = line
        else:
            body.append(line)
        i += 1

    ordered: list[str] = []
    state: dict[str, int] = {}  # 1 = visiting, 2 = done

    def visit(name: str) -> None:
        if state.get(name) == 2 or name not in defs:
            return
        if state.get(name) == 1:  # a cycle cannot happen in valid MLIR; keep going
            return
        state[name] = 1
        rhs = _ALIAS_DEF_RE.match(defs[name]).group(2)  # type: ignore[union-attr]
        for ref in _ALIAS_REF_RE.findall(rhs):
            visit(ref)
        state[name] = 2
        ordered.append(defs[name])

    for name in defs:
        visit(name)
    return "\n".join(ordered + body) + "\n"


# ------------------------------------------------------------------------------ import


def import_to_torch_mlir(ep: ExportedProgram) -> str:
    """Import `ep` (decomposed, see `load_exported_program`) with torch-mlir.

    Returns the module in generic form, torch dialect (value tensors), with locations as
    described in the module docstring and the aliases hoisted so that xDSL parses it.
    Parameters, buffers and constants are arguments of `@main` (input_specs order).
    """
    from torch_mlir import fx, ir  # heavy import: only when needed
    from torch_mlir.dialects import torch as torch_d
    from torch_mlir.extras.fx_importer import FxImporter

    # Our own context (torch-mlir's default, made by hand) so that its diagnostics are
    # captured instead of printed to stderr.
    context = ir.Context()
    torch_d.register_dialect(context)
    with capture(context) as found:
        try:
            with _rewritten_traces(ep):
                mod = fx.stateless_fx_import(
                    ep.graph_module,
                    output_type="torch",
                    fx_importer=FxImporter(context=context),
                    backend_legal_ops=BACKEND_LEGAL_OPS,
                    model_name="main",
                )
        except Exception as e:
            raise import_error(found, e) from None
    text = mod.operation.get_asm(
        print_generic_op_form=True, large_resource_limit=64, enable_debug_info=True
    )
    return _hoist_aliases(text)


def parse_module(
    text: str, ctx: Context | None = None, *, source: str = "<torch-mlir>"
) -> ModuleOp:
    """Parse MLIR text with `ctx` (default: builtin, func, torch, nm; unregistered allowed)."""
    try:
        return Parser(ctx or make_context(), text, name=source).parse_module()
    except ParseError as e:
        first = str(e).strip().splitlines()
        raise FrontendError(
            f"cannot parse the imported IR: {first[-1] if first else e}"
        ) from None


def _main_func(module: ModuleOp) -> FuncOp:
    for op in module.ops:
        if isinstance(op, FuncOp) and op.sym_name.data == "main":
            return op
    raise FrontendError("the imported module has no func.func @main")


def output_names(count: int, ep: ExportedProgram | None = None) -> list[str]:
    """"output" for one output; for several, the keys of the dict the model returns
    ("logits", "feat"; nested ones joined by dots: "aux.0"), else "output_0", "output_1",
    ... (a tuple or list, or keys that do not give distinct names)."""
    numbered = ["output"] if count == 1 else [f"output_{i}" for i in range(count)]
    paths = _output_key_paths(ep) if ep is not None and count > 1 else None
    if paths is None or len(paths) != count or all(
            all(isinstance(k, int) for k in path) for path in paths):
        return numbered
    names = [".".join(str(k) for k in path) for path in paths]
    if "" in names or len(set(names)) != len(names):
        return numbered
    return names


def _output_key_paths(ep: ExportedProgram) -> list[tuple] | None:
    """The pytree key path of every output leaf: a dict key, or an int for a tuple/list
    position; None when the program has no output spec."""
    import torch.utils._pytree as pytree

    spec = getattr(getattr(ep, "call_spec", None), "out_spec", None)
    if spec is None:
        return None
    tree = pytree.tree_unflatten(list(range(spec.num_leaves)), spec)
    paths = []
    for path, _leaf in pytree.tree_flatten_with_path(tree)[0]:
        keys = []
        for entry in path:
            if isinstance(entry, pytree.MappingKey):
                keys.append(entry.key if isinstance(entry.key, int) else str(entry.key))
            elif isinstance(entry, pytree.SequenceKey):
                keys.append(entry.idx)
            elif isinstance(entry, pytree.GetAttrKey):
                keys.append(entry.name)
            else:
                return None
        paths.append(tuple(keys))
    return paths


def annotate_module(module: ModuleOp, ep: ExportedProgram, model_path: str | None) -> None:
    """Attach `nm.model`, `nm.input_names`, `nm.output_names` and the `nm.state_key` arg attrs."""
    func = _main_func(module)
    specs = ep.graph_signature.input_specs
    args = func.body.block.args
    if len(specs) != len(args):
        raise FrontendError(
            f"internal: @main has {len(args)} arguments but the program has "
            f"{len(specs)} inputs"
        )
    arg_attrs: list[Attribute] = []
    inputs: list[str] = []
    for spec in specs:
        if spec.kind == InputKind.USER_INPUT:
            inputs.append(spec.arg.name)
            arg_attrs.append(param_arg_attrs(None))
        else:
            arg_attrs.append(param_arg_attrs(str(spec.target)))
    func.arg_attrs = ArrayAttr(arg_attrs)
    set_io_names(func, inputs, output_names(len(func.function_type.outputs.data), ep))
    if model_path is not None:
        set_model_path(module, model_path)
    scales = pt2e_scales(ep)
    if scales:
        set_model_scales(module, scales)


def import_exported_program(
    ep: ExportedProgram, model_path: str | None = None, ctx: Context | None = None,
    weights: WeightStore | None = None,
) -> ModuleOp:
    """`ep` -> annotated torch-level xDSL module (see the module docstring), with its
    weight store attached (`weights`, by default the tensors of `ep` in memory)."""
    module = parse_module(import_to_torch_mlir(ep), ctx)
    annotate_module(module, ep, model_path)
    if weights is None:
        weights = WeightStore.from_program(ep, model_path or "<in memory>")
    attach_weights(module, weights)
    return module


def import_model(path: str | os.PathLike[str], ctx: Context | None = None) -> ModuleOp:
    """Load the torch.export file at `path` and import it as a torch-level xDSL module.

    `ctx` must know builtin, func and torch and allow unregistered ops (the default
    context does). The result still holds torch ops; run `raise-torch-to-nm` to get the nm
    dialect (`nmc.compiler.driver.import_nm` does both).
    """
    ep = load_exported_program(path)
    absolute = str(Path(path).expanduser().absolute())
    return import_exported_program(ep, absolute, ctx, WeightStore.from_file(absolute))

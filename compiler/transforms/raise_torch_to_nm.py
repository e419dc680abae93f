"""raise-torch-to-nm: the imported torch-dialect module -> the nm dialect.

    torch.aten.linear        -> nm.linear      (bias optional)
    torch.aten.layer_norm    -> nm.layer_norm  (normalized_shape = [last dim], eps constant)
    torch.aten.gelu          -> nm.gelu        (approximate from its string constant)
    torch.aten.add.Tensor    -> nm.add         (alpha == 1, equal shapes)

`!torch.vtensor<[...],f32>` becomes `tensor<...xf32>`. Arguments of `@main` that carry the
`nm.param = "<state_dict key>"` argument attribute (set by the frontend) are replaced by
`nm.param {name = "<key>"}` ops, so `@main` afterwards takes only the user inputs; unused
parameters are dropped. Torch constants and lists are removed once unused.

Every compute op gets a unique `layer` name from its location's module path (see
`assign_layer_names`). Anything that cannot be raised is collected first and reported in a
single `UnsupportedOpsError` listing each op with its module path and source line. After the
pass the module holds only builtin, func and nm ops, and verifies.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

from xdsl.context import Context
from xdsl.dialects.builtin import (
    ArrayAttr,
    DictionaryAttr,
    Float32Type,
    FunctionType,
    ModuleOp,
    StringAttr,
    TensorType,
    UnregisteredOp,
)
from xdsl.dialects.func import FuncOp, ReturnOp
from xdsl.ir import Attribute, Operation, SSAValue
from xdsl.passes import ModulePass
from xdsl.utils.exceptions import VerifyException

from nmc.compiler.dialects import nm
from nmc.compiler.dialects import torch as tt
from nmc.compiler.errors import UnsupportedOp, UnsupportedOpsError
from nmc.compiler.dialects.nm import PARAM_ARG_ATTR
from nmc.compiler.frontend.locations import location_info

_CONVERTIBLE = (tt.AtenLinearOp, tt.AtenLayerNormOp, tt.AtenGeluOp, tt.AtenAddTensorOp)
_PASSIVE = (*tt.CONSTANT_OPS, tt.PrimListConstructOp)
_KIND: dict[type[Operation], str] = {
    tt.AtenLinearOp: nm.LinearOp.KIND,
    tt.AtenLayerNormOp: nm.LayerNormOp.KIND,
    tt.AtenGeluOp: nm.GeluOp.KIND,
    tt.AtenAddTensorOp: nm.AddOp.KIND,
}


class _Reject(Exception):
    """A known op in a form nmc does not support; the message is the reason."""


def _op_name(op: Operation) -> str:
    if isinstance(op, UnregisteredOp):
        return op.op_name.data
    return op.name


def _fmt_type(t: Attribute) -> str:
    if isinstance(t, tt.ValueTensorType):
        shape = t.get_shape()
        dims = "*"
        if shape is not None:
            dims = "[" + ",".join("?" if d < 0 else str(d) for d in shape) + "]"
        return f"!torch.vtensor<{dims},{t.element_type or 'unk'}>"
    return str(t)


def convert_type(t: Attribute) -> TensorType[Float32Type]:
    """`!torch.vtensor<[d...],f32>` (static) -> `tensor<d...xf32>`; _Reject otherwise."""
    if not isinstance(t, tt.ValueTensorType):
        raise _Reject(f"expected a tensor, got {_fmt_type(t)}")
    if not isinstance(t.element_type, Float32Type):
        raise _Reject(f"nmc supports f32 tensors only, got {_fmt_type(t)}")
    if not t.has_static_shape:
        raise _Reject(f"nmc needs static shapes, got {_fmt_type(t)}")
    shape = t.get_shape()
    assert shape is not None
    return nm.f32_tensor(shape)


def _shape(v: SSAValue) -> tuple[int, ...]:
    return tuple(convert_type(v.type).get_shape())


def _const(v: SSAValue, what: str):  # noqa: ANN202 - python scalar or list
    try:
        return tt.constant_value(v)
    except ValueError:
        raise _Reject(f"{what} must be a constant") from None


# ------------------------------------------------------------------------------ checks


def _check(op: Operation) -> None:
    """Raise _Reject(reason) when a convertible torch op cannot be raised."""
    try:
        op.verify()
    except VerifyException as e:
        raise _Reject(f"unexpected form ({e})") from None
    for r in op.results:
        convert_type(r.type)
    if isinstance(op, tt.AtenLinearOp):
        x, w = _shape(op.input), _shape(op.weight)
        if len(x) < 1 or len(w) != 2:
            raise _Reject(f"expected input [..., K] and weight [N, K], got {list(x)} and {list(w)}")
        if not isinstance(op.bias.type, tt.NoneType):
            _shape(op.bias)
    elif isinstance(op, tt.AtenLayerNormOp):
        x = _shape(op.input)
        normalized = _const(op.normalized_shape, "normalized_shape")
        if not x or normalized != [x[-1]]:
            raise _Reject(
                f"normalized_shape must be the last dim [{x[-1] if x else '?'}], "
                f"got {normalized}"
            )
        for label, v in (("weight", op.weight), ("bias", op.bias)):
            if isinstance(v.type, tt.NoneType):
                raise _Reject(
                    f"layer_norm without {label} (elementwise_affine=False) is not supported"
                )
            _shape(v)
        eps = _const(op.eps, "eps")
        if not isinstance(eps, (int, float)):
            raise _Reject(f"eps must be a float constant, got {eps!r}")
    elif isinstance(op, tt.AtenGeluOp):
        _shape(op.input)
        approximate = _const(op.approximate, "approximate")
        if approximate not in nm.GELU_APPROXIMATIONS:
            raise _Reject(f"approximate must be 'none' or 'tanh', got {approximate!r}")
    elif isinstance(op, tt.AtenAddTensorOp):
        a, b = _shape(op.input), _shape(op.other)
        alpha = _const(op.alpha, "alpha")
        if alpha != 1:
            raise _Reject(f"alpha must be 1, got {alpha!r}")
        if a != b:
            raise _Reject(
                f"operand shapes must be equal (no broadcasting), got {list(a)} and {list(b)}"
            )


def _problem(op: Operation, reason: str | None = None) -> UnsupportedOp:
    path, source = location_info(op.location)
    return UnsupportedOp(_op_name(op), path, source, reason)


def collect_unsupported(func: FuncOp) -> list[UnsupportedOp]:
    """Every op of `func` that raise-torch-to-nm cannot convert, in program order."""
    problems: list[UnsupportedOp] = []
    params = _param_keys(func)
    names = _input_names(func)
    user_index = 0
    for i, arg in enumerate(func.body.block.args):
        if i in params:
            # Checked only when something could read it (an unused one is dropped).
            if arg.uses and not isinstance(arg.type, TensorType):
                try:
                    convert_type(arg.type)
                except _Reject as e:
                    problems.append(UnsupportedOp(f"parameter {params[i]!r}", "", None, str(e)))
            continue
        name = names[user_index] if user_index < len(names) else f"#{i}"
        user_index += 1
        if isinstance(arg.type, TensorType):  # already raised
            continue
        try:
            convert_type(arg.type)
        except _Reject as e:
            problems.append(UnsupportedOp(f"input {name!r}", "", None, str(e)))
    for op in func.body.walk():
        if isinstance(op, (ReturnOp, *_PASSIVE, *nm.COMPUTE_OPS, nm.ParamOp)):
            continue
        if isinstance(op, _CONVERTIBLE):
            try:
                _check(op)
            except _Reject as e:
                problems.append(_problem(op, str(e)))
            continue
        problems.append(_problem(op))
    return problems


# ------------------------------------------------------------------------- layer names


def assign_layer_names(entries: Sequence[tuple[str, str]]) -> list[str]:
    """Unique layer names for compute ops given (module path, kind) in program order.

    A path holding exactly one compute op names it (`fc1`); otherwise each gets
    `path.kind` (`blocks.0.add`), with `_1`, `_2`... on repeats (`blocks.0.add_1`). Ops at
    the top level (empty path) get the kind itself (`add`, `add_1`).
    """
    per_path = Counter(path for path, _ in entries)
    used: set[str] = {path for path, _ in entries if path and per_path[path] == 1}
    names: list[str] = []
    for path, kind in entries:
        if path and per_path[path] == 1:
            names.append(path)
            continue
        base = f"{path}.{kind}" if path else kind
        k = 0
        name = base
        while name in used:
            k += 1
            name = f"{base}_{k}"
        used.add(name)
        names.append(name)
    return names


# ----------------------------------------------------------------------------- rewrite


def _param_keys(func: FuncOp) -> dict[int, str]:
    keys: dict[int, str] = {}
    if func.arg_attrs is None:
        return keys
    for i, attrs in enumerate(func.arg_attrs.data):
        if isinstance(attrs, DictionaryAttr):
            key = attrs.data.get(PARAM_ARG_ATTR)
            if isinstance(key, StringAttr):
                keys[i] = key.data
    return keys


def _input_names(func: FuncOp) -> list[str]:
    names = func.attributes.get(nm.INPUT_NAMES_ATTR)
    if isinstance(names, ArrayAttr):
        return [n.data for n in names.data if isinstance(n, StringAttr)]
    return []


def _build(op: Operation, m: dict[SSAValue, SSAValue], layer: str) -> Operation:
    def v(x: SSAValue) -> SSAValue:
        return m.get(x, x)

    if isinstance(op, tt.AtenLinearOp):
        bias = None if isinstance(op.bias.type, tt.NoneType) else v(op.bias)
        return nm.LinearOp(v(op.input), v(op.weight), bias, layer)
    if isinstance(op, tt.AtenLayerNormOp):
        eps = float(tt.constant_value(op.eps))  # type: ignore[arg-type]
        return nm.LayerNormOp(v(op.input), v(op.weight), v(op.bias), eps, layer)
    if isinstance(op, tt.AtenGeluOp):
        return nm.GeluOp(v(op.input), layer, str(tt.constant_value(op.approximate)))
    if isinstance(op, tt.AtenAddTensorOp):
        return nm.AddOp(v(op.input), v(op.other), layer)
    raise AssertionError(f"not convertible: {op.name}")


def _raise_func(func: FuncOp) -> None:
    block = func.body.block
    params = _param_keys(func)
    m: dict[SSAValue, SSAValue] = {}

    # Arguments: parameters -> nm.param ops, user inputs -> builtin tensor arguments.
    names = _input_names(func)
    user_index = 0
    old_args = list(block.args)
    first_op = block.first_op
    for i, arg in enumerate(old_args):
        if i in params:
            if not arg.uses:
                continue
            param = nm.ParamOp(params[i], tuple(convert_type(arg.type).get_shape()))
            if first_op is not None:
                block.insert_op_before(param, first_op)
            else:
                block.add_op(param)
            param.result.name_hint = params[i]
            m[arg] = param.result
        else:
            new_type = arg.type if isinstance(arg.type, TensorType) else convert_type(arg.type)
            new_arg = block.insert_arg(new_type, len(block.args), arg.location)
            new_arg.name_hint = arg.name_hint
            if user_index < len(names):
                new_arg.name_hint = names[user_index]
            user_index += 1
            m[arg] = new_arg

    # Compute ops, in program order.
    torch_ops = [op for op in block.ops if isinstance(op, _CONVERTIBLE)]
    entries = [(location_info(op.location)[0], _KIND[type(op)]) for op in torch_ops]
    for op, layer in zip(torch_ops, assign_layer_names(entries)):
        new = _build(op, m, layer)
        new.location = op.location
        new.results[0].name_hint = layer
        block.insert_op_before(new, op)
        m[op.results[0]] = new.results[0]

    ret = block.last_op
    assert isinstance(ret, ReturnOp)
    ret.operands = [m.get(v, v) for v in ret.operands]

    for op in reversed(torch_ops):
        block.erase_op(op)
    for op in reversed(list(block.ops)):
        if isinstance(op, _PASSIVE) and not any(r.uses for r in op.results):
            block.erase_op(op)
    for arg in old_args:
        block.erase_arg(arg)

    func.function_type = FunctionType.from_lists(
        [a.type for a in block.args], [v.type for v in ret.operands]
    )
    func.arg_attrs = None


@dataclass(frozen=True)
class RaiseTorchToNm(ModulePass):
    """Raise the torch-mlir import to the nm dialect (see the module docstring)."""

    name: ClassVar[str] = "raise-torch-to-nm"

    def apply(self, ctx: Context, op: ModuleOp) -> None:
        funcs = [f for f in op.ops if isinstance(f, FuncOp)]
        problems: list[UnsupportedOp] = []
        for func in funcs:
            problems.extend(collect_unsupported(func))
        stray = [
            o for o in op.ops if not isinstance(o, FuncOp)
        ]
        problems.extend(_problem(o) for o in stray)
        if problems:
            raise UnsupportedOpsError(problems)
        for func in funcs:
            _raise_func(func)
        op.verify()

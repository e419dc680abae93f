"""The arguments of `@main`: model parameters become nm.param ops, user inputs stay.

Arguments that carry the `nm.state_key = "<state_dict key>"` argument attribute (set by the
frontend) are replaced by `nm.param {name = "<key>"}` ops, so `@main` afterwards takes only
the user inputs (named after the `nm.input_names` attribute); unused parameters are dropped.
"""

from __future__ import annotations

from xdsl.dialects.builtin import TensorType
from xdsl.dialects.func import FuncOp
from xdsl.ir import SSAValue

from nmc.compiler.dialects import nm
from nmc.compiler.dialects import nm_attrs
from nmc.compiler.errors import UnsupportedOp
from nmc.compiler.transforms.raise_torch_to_nm.naming import value_name
from nmc.compiler.transforms.raise_torch_to_nm.reading import Reject, convert_type


def param_keys(func: FuncOp) -> dict[int, str]:
    """Argument index -> state_dict key, for the arguments that are parameters."""
    keys: dict[int, str] = {}
    if func.arg_attrs is None:
        return keys
    for i, attrs in enumerate(func.arg_attrs.data):
        key = nm_attrs.param_arg_key(attrs)
        if key is not None:
            keys[i] = key
    return keys


def input_names(func: FuncOp) -> list[str]:
    """The names of the user inputs, in order."""
    return nm_attrs.input_names(func) if nm_attrs.has_input_names(func) else []


def argument_problems(func: FuncOp) -> list[UnsupportedOp]:
    """The arguments whose types nmc cannot take (not a static f32 tensor)."""
    problems: list[UnsupportedOp] = []
    params = param_keys(func)
    names = input_names(func)
    user_index = 0
    for i, arg in enumerate(func.body.block.args):
        if i in params:
            # Checked only when something could read it (an unused one is dropped).
            if arg.uses and not isinstance(arg.type, TensorType):
                try:
                    convert_type(arg.type)
                except Reject as e:
                    problems.append(UnsupportedOp(f"parameter {params[i]!r}", "", None, str(e)))
            continue
        name = names[user_index] if user_index < len(names) else f"#{i}"
        user_index += 1
        if isinstance(arg.type, TensorType):  # already raised
            continue
        try:
            convert_type(arg.type)
        except Reject as e:
            problems.append(UnsupportedOp(f"input {name!r}", "", None, str(e)))
    return problems


def raise_arguments(func: FuncOp, values: dict[SSAValue, SSAValue]) -> None:
    """Add an nm.param op per used parameter and a tensor argument per user input, and
    record in `values` what replaces each old argument (erased later, once unused)."""
    block = func.body.block
    params = param_keys(func)
    names = input_names(func)
    user_index = 0
    first_op = block.first_op
    for i, arg in enumerate(list(block.args)):
        if i in params:
            if not arg.uses:
                continue
            param = nm.ParamOp(params[i], tuple(convert_type(arg.type).get_shape()))
            if first_op is not None:
                block.insert_op_before(param, first_op)
            else:
                block.add_op(param)
            param.result.name_hint = value_name(params[i])
            values[arg] = param.result
        else:
            new_type = arg.type if isinstance(arg.type, TensorType) else convert_type(arg.type)
            new_arg = block.insert_arg(new_type, len(block.args), arg.location)
            new_arg.name_hint = arg.name_hint
            if user_index < len(names):
                new_arg.name_hint = value_name(names[user_index])
            user_index += 1
            values[arg] = new_arg

"""The `nm` dialect: the tensor-level IR nmc compiles (see docs/ARCHITECTURE.md).

Value semantics, builtin `tensor<...xf32>` types with static shapes. Every compute op has a
`layer` string property (a unique, human-readable name derived from the PyTorch module path).

| op              | operands                                        | properties              |
|-----------------|-------------------------------------------------|-------------------------|
| `nm.param`      | -                                               | `name` (state_dict key) |
| `nm.linear`     | input [..., K], weight [N, K], bias [N] (opt.)  | `layer`                 |
| `nm.layer_norm` | input [..., C], gamma [C], beta [C]             | `layer`, `eps` (f64)    |
| `nm.gelu`       | input                                           | `layer`, `approximate`  |
| `nm.add`        | lhs, rhs (same shape)                           | `layer`                 |

The module carries the `nm.model` attribute (path of the model file, from which `nm.param`
values are read by name) and `func.func @main` carries `nm.input_names` / `nm.output_names`.

Python accessors: `ParamOp.param_name` (the `name` property; `name` itself is the op name),
`LinearOp.input/weight/bias/result/layer`, `LayerNormOp.input/gamma/beta/result/layer/eps`,
`GeluOp.input/result/layer/approximate`, `AddOp.lhs/rhs/result/layer`. Every compute op has
`layer_name` (str) and the helpers `tensor_shape(value)`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

from xdsl.dialects.builtin import (
    Float32Type,
    Float64Type,
    FloatAttr,
    StringAttr,
    TensorType,
)
from xdsl.ir import Attribute, Dialect, SSAValue
from xdsl.irdl import (
    IRDLOperation,
    irdl_op_definition,
    operand_def,
    opt_operand_def,
    prop_def,
    result_def,
    traits_def,
)
from xdsl.traits import Pure
from xdsl.utils.exceptions import VerifyException

# Attribute names carried by the module and the main function.
MODEL_ATTR = "nm.model"
INPUT_NAMES_ATTR = "nm.input_names"
OUTPUT_NAMES_ATTR = "nm.output_names"
# Argument attribute of the torch-level `@main` (set by the frontend, consumed by
# raise-torch-to-nm): the state_dict key of a parameter / buffer / constant argument.
PARAM_ARG_ATTR = "nm.param"

GELU_APPROXIMATIONS = ("none", "tanh")

F32Tensor = TensorType.constr(Float32Type())


def f32_tensor(shape: Sequence[int]) -> TensorType[Float32Type]:
    """The builtin `tensor<shape x f32>` type."""
    return TensorType(Float32Type(), list(shape))


def tensor_shape(value: SSAValue | Attribute) -> tuple[int, ...]:
    """The static shape of a tensor value or type."""
    typ = value.type if isinstance(value, SSAValue) else value
    if not isinstance(typ, TensorType):
        raise VerifyException(f"expected a tensor type, got {typ}")
    return typ.get_shape()


def _fmt(shape: Sequence[int]) -> str:
    return "[" + ", ".join(str(d) for d in shape) + "]"


def _check_static(op: IRDLOperation) -> None:
    for v in (*op.operands, *op.results):
        shape = tensor_shape(v)
        if any(d < 0 for d in shape):
            raise VerifyException(f"{op.name}: shapes must be static, got {_fmt(shape)}")


class _ComputeOp(IRDLOperation):
    """Shared behaviour of the nm compute ops (those with a `layer`)."""

    layer = prop_def(StringAttr)

    KIND: ClassVar[str]  # short kind used in layer names: linear, layer_norm, gelu, add

    @property
    def layer_name(self) -> str:
        return self.layer.data

    def _verify_layer(self) -> None:
        if not self.layer.data:
            raise VerifyException(f"{self.name}: the `layer` property must not be empty")

    def _check_result_shape(self, expected: Sequence[int]) -> None:
        got = tensor_shape(self.results[0])
        if tuple(got) != tuple(expected):
            raise VerifyException(
                f"{self.name} ({self.layer.data}): result shape {_fmt(got)} "
                f"should be {_fmt(expected)}"
            )


@irdl_op_definition
class ParamOp(IRDLOperation):
    """`nm.param {name = "fc1.weight"}`: the model's tensor of that state_dict key."""

    name = "nm.param"

    param_name = prop_def(StringAttr, prop_name="name")
    result = result_def(F32Tensor)

    traits = traits_def(Pure())

    def __init__(self, param_name: str | StringAttr, shape: Sequence[int]):
        if isinstance(param_name, str):
            param_name = StringAttr(param_name)
        super().__init__(properties={"name": param_name}, result_types=[f32_tensor(shape)])

    def verify_(self) -> None:
        if not self.param_name.data:
            raise VerifyException("nm.param: the `name` property must not be empty")
        _check_static(self)


@irdl_op_definition
class LinearOp(_ComputeOp):
    """`nm.linear`: input [..., K] . weight[N, K]^T (+ bias [N]) -> [..., N]."""

    name = "nm.linear"
    KIND: ClassVar[str] = "linear"

    input = operand_def(F32Tensor)
    weight = operand_def(F32Tensor)
    bias = opt_operand_def(F32Tensor)
    result = result_def(F32Tensor)

    traits = traits_def(Pure())

    def __init__(
        self,
        input: SSAValue,
        weight: SSAValue,
        bias: SSAValue | None,
        layer: str | StringAttr,
    ):
        if isinstance(layer, str):
            layer = StringAttr(layer)
        in_shape = tensor_shape(input)
        w_shape = tensor_shape(weight)
        out_shape = (*in_shape[:-1], w_shape[0])
        super().__init__(
            operands=[input, weight, [bias] if bias is not None else []],
            result_types=[f32_tensor(out_shape)],
            properties={"layer": layer},
        )

    def verify_(self) -> None:
        self._verify_layer()
        _check_static(self)
        where = f"nm.linear ({self.layer.data})"
        x = tensor_shape(self.input)
        w = tensor_shape(self.weight)
        if len(x) < 1:
            raise VerifyException(f"{where}: input must have rank >= 1, got a scalar")
        if len(w) != 2:
            raise VerifyException(f"{where}: weight must be [N, K], got {_fmt(w)}")
        if x[-1] != w[1]:
            raise VerifyException(
                f"{where}: K mismatch: input {_fmt(x)} has K={x[-1]} "
                f"but weight {_fmt(w)} has K={w[1]}"
            )
        if self.bias is not None:
            b = tensor_shape(self.bias)
            if b != (w[0],):
                raise VerifyException(
                    f"{where}: bias must be [{w[0]}] (N of weight {_fmt(w)}), got {_fmt(b)}"
                )
        self._check_result_shape((*x[:-1], w[0]))


@irdl_op_definition
class LayerNormOp(_ComputeOp):
    """`nm.layer_norm`: normalise input [..., C] over the last dim, then * gamma + beta."""

    name = "nm.layer_norm"
    KIND: ClassVar[str] = "layer_norm"

    input = operand_def(F32Tensor)
    gamma = operand_def(F32Tensor)
    beta = operand_def(F32Tensor)
    result = result_def(F32Tensor)

    eps = prop_def(FloatAttr[Float64Type])

    traits = traits_def(Pure())

    def __init__(
        self,
        input: SSAValue,
        gamma: SSAValue,
        beta: SSAValue,
        eps: float | FloatAttr,
        layer: str | StringAttr,
    ):
        if isinstance(layer, str):
            layer = StringAttr(layer)
        if not isinstance(eps, FloatAttr):
            eps = FloatAttr(float(eps), Float64Type())
        super().__init__(
            operands=[input, gamma, beta],
            result_types=[f32_tensor(tensor_shape(input))],
            properties={"layer": layer, "eps": eps},
        )

    @property
    def eps_value(self) -> float:
        return float(self.eps.value.data)

    def verify_(self) -> None:
        self._verify_layer()
        _check_static(self)
        where = f"nm.layer_norm ({self.layer.data})"
        x = tensor_shape(self.input)
        if len(x) < 1:
            raise VerifyException(f"{where}: input must have rank >= 1, got a scalar")
        c = x[-1]
        for label, v in (("gamma", self.gamma), ("beta", self.beta)):
            s = tensor_shape(v)
            if s != (c,):
                raise VerifyException(
                    f"{where}: {label} must be [{c}] (last dim of input {_fmt(x)}), "
                    f"got {_fmt(s)}"
                )
        if not self.eps_value >= 0.0:
            raise VerifyException(f"{where}: eps must be >= 0, got {self.eps_value}")
        self._check_result_shape(x)


@irdl_op_definition
class GeluOp(_ComputeOp):
    """`nm.gelu`: elementwise GELU, exact (`approximate = "none"`) or tanh approximation."""

    name = "nm.gelu"
    KIND: ClassVar[str] = "gelu"

    input = operand_def(F32Tensor)
    result = result_def(F32Tensor)

    approximate = prop_def(StringAttr)

    traits = traits_def(Pure())

    def __init__(
        self,
        input: SSAValue,
        layer: str | StringAttr,
        approximate: str | StringAttr = "none",
    ):
        if isinstance(layer, str):
            layer = StringAttr(layer)
        if isinstance(approximate, str):
            approximate = StringAttr(approximate)
        super().__init__(
            operands=[input],
            result_types=[f32_tensor(tensor_shape(input))],
            properties={"layer": layer, "approximate": approximate},
        )

    def verify_(self) -> None:
        self._verify_layer()
        _check_static(self)
        if self.approximate.data not in GELU_APPROXIMATIONS:
            raise VerifyException(
                f"nm.gelu ({self.layer.data}): approximate must be one of "
                f"{', '.join(repr(a) for a in GELU_APPROXIMATIONS)}, "
                f"got {self.approximate.data!r}"
            )
        self._check_result_shape(tensor_shape(self.input))


@irdl_op_definition
class AddOp(_ComputeOp):
    """`nm.add`: elementwise lhs + rhs, both of the same shape (no broadcasting)."""

    name = "nm.add"
    KIND: ClassVar[str] = "add"

    lhs = operand_def(F32Tensor)
    rhs = operand_def(F32Tensor)
    result = result_def(F32Tensor)

    traits = traits_def(Pure())

    def __init__(self, lhs: SSAValue, rhs: SSAValue, layer: str | StringAttr):
        if isinstance(layer, str):
            layer = StringAttr(layer)
        super().__init__(
            operands=[lhs, rhs],
            result_types=[f32_tensor(tensor_shape(lhs))],
            properties={"layer": layer},
        )

    def verify_(self) -> None:
        self._verify_layer()
        _check_static(self)
        a = tensor_shape(self.lhs)
        b = tensor_shape(self.rhs)
        if a != b:
            raise VerifyException(
                f"nm.add ({self.layer.data}): operand shapes must be equal, "
                f"got {_fmt(a)} and {_fmt(b)}"
            )
        self._check_result_shape(a)


COMPUTE_OPS: tuple[type[_ComputeOp], ...] = (LinearOp, LayerNormOp, GeluOp, AddOp)

NM = Dialect("nm", [ParamOp, LinearOp, LayerNormOp, GeluOp, AddOp], [])

__all__ = [
    "NM",
    "ParamOp",
    "LinearOp",
    "LayerNormOp",
    "GeluOp",
    "AddOp",
    "COMPUTE_OPS",
    "MODEL_ATTR",
    "INPUT_NAMES_ATTR",
    "OUTPUT_NAMES_ATTR",
    "PARAM_ARG_ATTR",
    "GELU_APPROXIMATIONS",
    "f32_tensor",
    "tensor_shape",
]

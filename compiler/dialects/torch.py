"""A small, typed xDSL model of the torch-mlir `torch` dialect.

Only what nmc's frontend meets in Vision Transformers is modelled: the value-tensor type
with its shape and dtype, the scalar types, lists and optionals, the constant ops,
`torch.prim.ListConstruct` and the aten ops that `raise-torch-to-nm` converts or folds into
its patterns (`aten.linear`, `aten.layer_norm`, `aten.gelu`, `aten.add.Tensor`; and for DeiT
`aten.conv2d`, `aten.view` / `aten.reshape` / `aten._unsafe_view` / `aten.flatten.using_ints`,
`aten.transpose.int`, `aten.permute`, `aten.select.int`, `aten.slice.Tensor`,
`aten.squeeze.dim`, `aten.expand`, `aten.broadcast_to`, `aten.cat`,
`aten.scaled_dot_product_attention`, `aten.mul.Scalar`, `aten.div.Scalar`, `aten.matmul`,
`aten.softmax.int`; and for Swin `aten.roll`, `aten.mean.dim`). The non-tensor
operands of those ops are left unconstrained (any type) so that every form torch-mlir
prints parses and verifies; the raise pass checks their values. Every other torch op and
type still parses when the context allows unregistered constructs (`make_context()` does):
ops become `UnregisteredOp` (their name is in `op.op_name.data`) and are reported by the
raise pass as unsupported.

Textual forms follow torch-mlir exactly, so IR printed by torch-mlir parses and xDSL prints
it back identically:

    !torch.vtensor<[1,197,192],f32>   !torch.vtensor<[?,8],f32>   !torch.vtensor<*,f32>
    !torch.int  !torch.float  !torch.bool  !torch.str  !torch.none  !torch.number
    !torch.list<int>   !torch.list<vtensor<[2],f32>>   !torch.optional<int>
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

from xdsl.dialects.builtin import (
    ArrayAttr,
    BoolAttr,
    Float64Type,
    FloatAttr,
    IntAttr,
    IntegerAttr,
    IntegerType,
    NoneAttr,
    StringAttr,
    UnregisteredAttr,
    i1,
    i64,
)
from xdsl.ir import Attribute, Dialect, ParametrizedAttribute, SSAValue, TypeAttribute
from xdsl.irdl import (
    base,
    IRDLOperation,
    irdl_attr_definition,
    irdl_op_definition,
    operand_def,
    param_def,
    prop_def,
    result_def,
    traits_def,
    var_operand_def,
)
from xdsl.parser import AttrParser
from xdsl.printer import Printer
from xdsl.traits import ConstantLike, Pure
from xdsl.utils.exceptions import VerifyException

DYNAMIC = -1
"""A `?` dimension of a `!torch.vtensor`."""


# --------------------------------------------------------------------------------- types


class _TorchType(ParametrizedAttribute, TypeAttribute):
    """Base of the torch types: knows how to print itself nested (`list<int>`)."""

    def print_nested(self, printer: Printer) -> None:
        printer.print_string(self.name.removeprefix("torch."))
        self.print_parameters(printer)


def _parse_nested_type(parser: AttrParser) -> Attribute:
    """Parse a torch type written without its `!torch.` prefix (inside list<...> etc.)."""
    kw = parser.parse_optional_identifier()
    if kw is None:
        # torch-mlir may nest builtin types too.
        return parser.parse_type()
    cls = _NESTED_TYPES.get(kw)
    if cls is not None:
        return cls.new(cls.parse_parameters(parser))
    # An unknown torch type: keep its text, like xDSL does for unregistered types.
    name = f"torch.{kw}"
    attr_def = parser.ctx.get_optional_type(name)
    if attr_def is None or not issubclass(attr_def, UnregisteredAttr):
        parser.raise_error(f"unknown torch type '{kw}' (unregistered types are not allowed)")
    body = ""
    if parser._current_token.text == "<":  # noqa: SLF001 - xDSL has no public raw-body API
        body = parser._parse_dialect_symbol_body()  # noqa: SLF001
    return attr_def(name, True, False, body)


def _print_nested_type(printer: Printer, typ: Attribute) -> None:
    if isinstance(typ, _TorchType):
        typ.print_nested(printer)
    elif isinstance(typ, UnregisteredAttr) and typ.attr_name.data.startswith("torch."):
        printer.print_string(typ.attr_name.data.removeprefix("torch."))
        if typ.value.data:
            printer.print_string(f"<{typ.value.data}>")
    else:
        printer.print_attribute(typ)


@irdl_attr_definition
class ValueTensorType(_TorchType):
    """`!torch.vtensor<[d0,d1,...],dtype>`; `?` dims are DYNAMIC (-1); `*` = unranked."""

    name = "torch.vtensor"

    shape: Attribute = param_def()  # ArrayAttr[IntAttr], or NoneAttr when unranked
    dtype: Attribute = param_def()  # a builtin type (f32, si64, i1, ...), NoneAttr = unk

    def __init__(self, shape: Sequence[int] | None, dtype: Attribute | None):
        shape_attr = (
            NoneAttr() if shape is None else ArrayAttr([IntAttr(int(d)) for d in shape])
        )
        super().__init__(shape_attr, NoneAttr() if dtype is None else dtype)

    @property
    def is_ranked(self) -> bool:
        return isinstance(self.shape, ArrayAttr)

    def get_shape(self) -> tuple[int, ...] | None:
        if not isinstance(self.shape, ArrayAttr):
            return None
        return tuple(d.data for d in self.shape.data)

    @property
    def has_static_shape(self) -> bool:
        shape = self.get_shape()
        return shape is not None and all(d >= 0 for d in shape)

    @property
    def element_type(self) -> Attribute | None:
        return None if isinstance(self.dtype, NoneAttr) else self.dtype

    def print_parameters(self, printer: Printer) -> None:
        if isinstance(self.shape, NoneAttr) and isinstance(self.dtype, NoneAttr):
            return
        printer.print_string("<")
        if isinstance(self.shape, ArrayAttr):
            dims = ["?" if d.data < 0 else str(d.data) for d in self.shape.data]
            printer.print_string("[" + ",".join(dims) + "]")
        else:
            printer.print_string("*")
        printer.print_string(",")
        if isinstance(self.dtype, NoneAttr):
            printer.print_string("unk")
        else:
            printer.print_attribute(self.dtype)
        printer.print_string(">")

    @classmethod
    def parse_parameters(cls, parser: AttrParser) -> Sequence[Attribute]:
        if parser.parse_optional_punctuation("<") is None:
            return (NoneAttr(), NoneAttr())
        if parser.parse_optional_punctuation("*") is not None:
            shape: Attribute = NoneAttr()
        else:

            def dim() -> IntAttr:
                if parser.parse_optional_punctuation("?") is not None:
                    return IntAttr(DYNAMIC)
                return IntAttr(parser.parse_integer(allow_boolean=False, allow_negative=False))

            shape = ArrayAttr(parser.parse_comma_separated_list(parser.Delimiter.SQUARE, dim))
        parser.parse_punctuation(",")
        if parser.parse_optional_keyword("unk") is not None:
            dtype: Attribute = NoneAttr()
        else:
            dtype = parser.parse_type()
        parser.parse_punctuation(">")
        return (shape, dtype)


class _SimpleTorchType(_TorchType):
    def print_parameters(self, printer: Printer) -> None:
        pass

    @classmethod
    def parse_parameters(cls, parser: AttrParser) -> Sequence[Attribute]:
        return ()


@irdl_attr_definition
class IntType(_SimpleTorchType):
    name = "torch.int"


@irdl_attr_definition
class FloatType(_SimpleTorchType):
    name = "torch.float"


@irdl_attr_definition
class BoolType(_SimpleTorchType):
    name = "torch.bool"


@irdl_attr_definition
class StringType(_SimpleTorchType):
    name = "torch.str"


@irdl_attr_definition
class NoneType(_SimpleTorchType):
    name = "torch.none"


@irdl_attr_definition
class NumberType(_SimpleTorchType):
    name = "torch.number"


@irdl_attr_definition
class DeviceType(_SimpleTorchType):
    name = "torch.Device"


class _ContainerType(_TorchType):
    element: Attribute = param_def()

    def __init__(self, element: Attribute):
        super().__init__(element)

    def print_parameters(self, printer: Printer) -> None:
        printer.print_string("<")
        _print_nested_type(printer, self.element)
        printer.print_string(">")

    @classmethod
    def parse_parameters(cls, parser: AttrParser) -> Sequence[Attribute]:
        parser.parse_punctuation("<")
        element = _parse_nested_type(parser)
        parser.parse_punctuation(">")
        return (element,)


@irdl_attr_definition
class ListType(_ContainerType):
    """`!torch.list<T>`."""

    name = "torch.list"


@irdl_attr_definition
class OptionalType(_ContainerType):
    """`!torch.optional<T>`."""

    name = "torch.optional"


_NESTED_TYPES: dict[str, type[_TorchType]] = {
    t.name.removeprefix("torch."): t
    for t in (
        ValueTensorType,
        IntType,
        FloatType,
        BoolType,
        StringType,
        NoneType,
        NumberType,
        DeviceType,
        ListType,
        OptionalType,
    )
}

TensorOrNone = base(ValueTensorType) | base(NoneType)
Scalar = base(IntType) | base(FloatType) | base(NumberType)


# ----------------------------------------------------------------------------------- ops


@irdl_op_definition
class ConstantIntOp(IRDLOperation):
    name = "torch.constant.int"
    value = prop_def(IntegerAttr)
    result = result_def(IntType)
    traits = traits_def(ConstantLike(), Pure())

    def __init__(self, value: int):
        super().__init__(
            properties={"value": IntegerAttr(value, i64)}, result_types=[IntType()]
        )

    @property
    def py_value(self) -> int:
        return int(self.value.value.data)


@irdl_op_definition
class ConstantFloatOp(IRDLOperation):
    name = "torch.constant.float"
    value = prop_def(FloatAttr)
    result = result_def(FloatType)
    traits = traits_def(ConstantLike(), Pure())

    def __init__(self, value: float):
        super().__init__(
            properties={"value": FloatAttr(value, Float64Type())}, result_types=[FloatType()]
        )

    @property
    def py_value(self) -> float:
        return float(self.value.value.data)


@irdl_op_definition
class ConstantStrOp(IRDLOperation):
    name = "torch.constant.str"
    value = prop_def(StringAttr)
    result = result_def(StringType)
    traits = traits_def(ConstantLike(), Pure())

    def __init__(self, value: str):
        super().__init__(properties={"value": StringAttr(value)}, result_types=[StringType()])

    @property
    def py_value(self) -> str:
        return self.value.data


@irdl_op_definition
class ConstantBoolOp(IRDLOperation):
    name = "torch.constant.bool"
    value = prop_def(IntegerAttr[IntegerType])
    result = result_def(BoolType)
    traits = traits_def(ConstantLike(), Pure())

    def __init__(self, value: bool):
        super().__init__(
            properties={"value": BoolAttr(int(value), i1)}, result_types=[BoolType()]
        )

    @property
    def py_value(self) -> bool:
        return bool(self.value.value.data)


@irdl_op_definition
class ConstantNoneOp(IRDLOperation):
    name = "torch.constant.none"
    result = result_def(NoneType)
    traits = traits_def(ConstantLike(), Pure())

    def __init__(self):
        super().__init__(result_types=[NoneType()])


@irdl_op_definition
class PrimListConstructOp(IRDLOperation):
    name = "torch.prim.ListConstruct"
    elements = var_operand_def()
    result = result_def(ListType)
    traits = traits_def(Pure())


class _AtenOp(IRDLOperation):
    """Base of the modelled aten ops: a single value-tensor result."""

    KIND: ClassVar[str]

    def verify_(self) -> None:
        for v in self.operands:
            if isinstance(v.type, ValueTensorType) and not v.type.is_ranked:
                raise VerifyException(f"{self.name}: unranked tensor operand")


@irdl_op_definition
class AtenLinearOp(_AtenOp):
    """`torch.aten.linear(input, weight, bias|none)`."""

    name = "torch.aten.linear"
    KIND: ClassVar[str] = "linear"
    input = operand_def(ValueTensorType)
    weight = operand_def(ValueTensorType)
    bias = operand_def(TensorOrNone)
    result = result_def(ValueTensorType)
    traits = traits_def(Pure())


@irdl_op_definition
class AtenLayerNormOp(_AtenOp):
    """`torch.aten.layer_norm(input, normalized_shape, weight|none, bias|none, eps, cudnn)`."""

    name = "torch.aten.layer_norm"
    KIND: ClassVar[str] = "layer_norm"
    input = operand_def(ValueTensorType)
    normalized_shape = operand_def(ListType)
    weight = operand_def(TensorOrNone)
    bias = operand_def(TensorOrNone)
    eps = operand_def(FloatType)
    cudnn_enable = operand_def(BoolType)
    result = result_def(ValueTensorType)
    traits = traits_def(Pure())


@irdl_op_definition
class AtenGeluOp(_AtenOp):
    """`torch.aten.gelu(input, approximate: str)`."""

    name = "torch.aten.gelu"
    KIND: ClassVar[str] = "gelu"
    input = operand_def(ValueTensorType)
    approximate = operand_def(StringType)
    result = result_def(ValueTensorType)
    traits = traits_def(Pure())


@irdl_op_definition
class AtenAddTensorOp(_AtenOp):
    """`torch.aten.add.Tensor(input, other, alpha)`: input + alpha * other."""

    name = "torch.aten.add.Tensor"
    KIND: ClassVar[str] = "add"
    input = operand_def(ValueTensorType)
    other = operand_def(ValueTensorType)
    alpha = operand_def(Scalar)
    result = result_def(ValueTensorType)
    traits = traits_def(Pure())


# Ops raise-torch-to-nm folds into its patterns (DeiT). Tensor operands are typed; scalar
# and list operands accept any type (checked by the pass through `constant_value`).


@irdl_op_definition
class AtenConv2dOp(_AtenOp):
    """`torch.aten.conv2d(input, weight, bias|none, stride, padding, dilation, groups)`."""

    name = "torch.aten.conv2d"
    input = operand_def(ValueTensorType)
    weight = operand_def(ValueTensorType)
    bias = operand_def(TensorOrNone)
    stride = operand_def()
    padding = operand_def()
    dilation = operand_def()
    groups = operand_def()
    result = result_def(ValueTensorType)
    traits = traits_def(Pure())


class _ReshapeLike(_AtenOp):
    """A row-major reshape: its semantics are fixed by the operand and result shapes."""


@irdl_op_definition
class AtenViewOp(_ReshapeLike):
    """`torch.aten.view(self, size)`."""

    name = "torch.aten.view"
    input = operand_def(ValueTensorType)
    size = operand_def()
    result = result_def(ValueTensorType)
    traits = traits_def(Pure())


@irdl_op_definition
class AtenReshapeOp(_ReshapeLike):
    """`torch.aten.reshape(self, shape)`."""

    name = "torch.aten.reshape"
    input = operand_def(ValueTensorType)
    size = operand_def()
    result = result_def(ValueTensorType)
    traits = traits_def(Pure())


@irdl_op_definition
class AtenUnsafeViewOp(_ReshapeLike):
    """`torch.aten._unsafe_view(self, size)`."""

    name = "torch.aten._unsafe_view"
    input = operand_def(ValueTensorType)
    size = operand_def()
    result = result_def(ValueTensorType)
    traits = traits_def(Pure())


@irdl_op_definition
class AtenFlattenUsingIntsOp(_ReshapeLike):
    """`torch.aten.flatten.using_ints(self, start_dim, end_dim)`."""

    name = "torch.aten.flatten.using_ints"
    input = operand_def(ValueTensorType)
    start_dim = operand_def()
    end_dim = operand_def()
    result = result_def(ValueTensorType)
    traits = traits_def(Pure())


RESHAPE_OPS = (AtenViewOp, AtenReshapeOp, AtenUnsafeViewOp, AtenFlattenUsingIntsOp)


@irdl_op_definition
class AtenTransposeIntOp(_AtenOp):
    """`torch.aten.transpose.int(self, dim0, dim1)`."""

    name = "torch.aten.transpose.int"
    input = operand_def(ValueTensorType)
    dim0 = operand_def()
    dim1 = operand_def()
    result = result_def(ValueTensorType)
    traits = traits_def(Pure())


@irdl_op_definition
class AtenPermuteOp(_AtenOp):
    """`torch.aten.permute(self, dims)`."""

    name = "torch.aten.permute"
    input = operand_def(ValueTensorType)
    dims = operand_def()
    result = result_def(ValueTensorType)
    traits = traits_def(Pure())


@irdl_op_definition
class AtenSelectIntOp(_AtenOp):
    """`torch.aten.select.int(self, dim, index)`: drops `dim`."""

    name = "torch.aten.select.int"
    input = operand_def(ValueTensorType)
    dim = operand_def()
    index = operand_def()
    result = result_def(ValueTensorType)
    traits = traits_def(Pure())


@irdl_op_definition
class AtenSliceTensorOp(_AtenOp):
    """`torch.aten.slice.Tensor(self, dim, start|none, end|none, step)`."""

    name = "torch.aten.slice.Tensor"
    input = operand_def(ValueTensorType)
    dim = operand_def()
    start = operand_def()
    end = operand_def()
    step = operand_def()
    result = result_def(ValueTensorType)
    traits = traits_def(Pure())


@irdl_op_definition
class AtenSqueezeDimOp(_AtenOp):
    """`torch.aten.squeeze.dim(self, dim)`."""

    name = "torch.aten.squeeze.dim"
    input = operand_def(ValueTensorType)
    dim = operand_def()
    result = result_def(ValueTensorType)
    traits = traits_def(Pure())


@irdl_op_definition
class AtenExpandOp(_AtenOp):
    """`torch.aten.expand(self, size, implicit)`."""

    name = "torch.aten.expand"
    input = operand_def(ValueTensorType)
    size = operand_def()
    implicit = operand_def()
    result = result_def(ValueTensorType)
    traits = traits_def(Pure())


@irdl_op_definition
class AtenBroadcastToOp(_AtenOp):
    """`torch.aten.broadcast_to(self, size)` (what `expand` becomes after decomposition)."""

    name = "torch.aten.broadcast_to"
    input = operand_def(ValueTensorType)
    size = operand_def()
    result = result_def(ValueTensorType)
    traits = traits_def(Pure())


EXPAND_OPS = (AtenExpandOp, AtenBroadcastToOp)


@irdl_op_definition
class AtenCatOp(_AtenOp):
    """`torch.aten.cat(tensors: list<vtensor>, dim)`."""

    name = "torch.aten.cat"
    tensors = operand_def(ListType)
    dim = operand_def()
    result = result_def(ValueTensorType)
    traits = traits_def(Pure())


@irdl_op_definition
class AtenScaledDotProductAttentionOp(_AtenOp):
    """`torch.aten.scaled_dot_product_attention(query, key, value, attn_mask|none,
    dropout_p, is_causal, scale|none, enable_gqa)`."""

    name = "torch.aten.scaled_dot_product_attention"
    query = operand_def(ValueTensorType)
    key = operand_def(ValueTensorType)
    value = operand_def(ValueTensorType)
    attn_mask = operand_def()
    dropout_p = operand_def()
    is_causal = operand_def()
    scale = operand_def()
    enable_gqa = operand_def()
    result = result_def(ValueTensorType)
    traits = traits_def(Pure())


@irdl_op_definition
class AtenMulScalarOp(_AtenOp):
    """`torch.aten.mul.Scalar(self, other: scalar)`."""

    name = "torch.aten.mul.Scalar"
    input = operand_def(ValueTensorType)
    other = operand_def()
    result = result_def(ValueTensorType)
    traits = traits_def(Pure())


@irdl_op_definition
class AtenDivScalarOp(_AtenOp):
    """`torch.aten.div.Scalar(self, other: scalar)`."""

    name = "torch.aten.div.Scalar"
    input = operand_def(ValueTensorType)
    other = operand_def()
    result = result_def(ValueTensorType)
    traits = traits_def(Pure())


@irdl_op_definition
class AtenMatmulOp(_AtenOp):
    """`torch.aten.matmul(self, other)`."""

    name = "torch.aten.matmul"
    input = operand_def(ValueTensorType)
    other = operand_def(ValueTensorType)
    result = result_def(ValueTensorType)
    traits = traits_def(Pure())


@irdl_op_definition
class AtenSoftmaxIntOp(_AtenOp):
    """`torch.aten.softmax.int(self, dim, dtype|none)`."""

    name = "torch.aten.softmax.int"
    input = operand_def(ValueTensorType)
    dim = operand_def()
    dtype = operand_def()
    result = result_def(ValueTensorType)
    traits = traits_def(Pure())


@irdl_op_definition
class AtenRollOp(_AtenOp):
    """`torch.aten.roll(self, shifts: list<int>, dims: list<int>)` (kept whole: Swin's cyclic
    shift, a static permutation of tokens)."""

    name = "torch.aten.roll"
    input = operand_def(ValueTensorType)
    shifts = operand_def()
    dims = operand_def()
    result = result_def(ValueTensorType)
    traits = traits_def(Pure())


@irdl_op_definition
class AtenMeanDimOp(_AtenOp):
    """`torch.aten.mean.dim(self, dim: list<int>, keepdim, dtype|none)`."""

    name = "torch.aten.mean.dim"
    input = operand_def(ValueTensorType)
    dim = operand_def()
    keepdim = operand_def()
    dtype = operand_def()
    result = result_def(ValueTensorType)
    traits = traits_def(Pure())


PATTERN_OPS = (
    AtenConv2dOp,
    *RESHAPE_OPS,
    AtenTransposeIntOp,
    AtenPermuteOp,
    AtenSelectIntOp,
    AtenSliceTensorOp,
    AtenSqueezeDimOp,
    AtenExpandOp,
    AtenBroadcastToOp,
    AtenCatOp,
    AtenScaledDotProductAttentionOp,
    AtenMulScalarOp,
    AtenDivScalarOp,
    AtenMatmulOp,
    AtenSoftmaxIntOp,
    AtenRollOp,
)
"""The modelled aten ops that are converted only as part of a pattern."""


CONSTANT_OPS = (ConstantIntOp, ConstantFloatOp, ConstantStrOp, ConstantBoolOp, ConstantNoneOp)

TORCH = Dialect(
    "torch",
    [
        ConstantIntOp,
        ConstantFloatOp,
        ConstantStrOp,
        ConstantBoolOp,
        ConstantNoneOp,
        PrimListConstructOp,
        AtenLinearOp,
        AtenLayerNormOp,
        AtenGeluOp,
        AtenAddTensorOp,
        *PATTERN_OPS,
        AtenMeanDimOp,
    ],
    [
        ValueTensorType,
        IntType,
        FloatType,
        BoolType,
        StringType,
        NoneType,
        NumberType,
        DeviceType,
        ListType,
        OptionalType,
    ],
)


def constant_value(value: SSAValue) -> int | float | str | bool | None | list:
    """The Python value of a torch constant (or a ListConstruct of constants).

    Raises ValueError when `value` is not produced by such ops.
    """
    op = value.owner
    if isinstance(op, (ConstantIntOp, ConstantFloatOp, ConstantStrOp, ConstantBoolOp)):
        return op.py_value
    if isinstance(op, ConstantNoneOp):
        return None
    if isinstance(op, PrimListConstructOp):
        return [constant_value(v) for v in op.elements]
    raise ValueError("not a torch constant")

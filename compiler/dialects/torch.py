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

The op classes are rows of a table (`_aten_op`, `_constant_op`): the op name, its operands
in torch's order with their constraints, and a note; the class is named after the op
(`torch.aten.flatten.using_ints` -> `AtenFlattenUsingIntsOp`) and takes its result, traits
and verifier from its base class. Adding an aten op is adding one row.

Textual forms follow torch-mlir exactly, so IR printed by torch-mlir parses and xDSL prints
it back identically:

    !torch.vtensor<[1,197,192],f32>   !torch.vtensor<[?,8],f32>   !torch.vtensor<*,f32>
    !torch.int  !torch.float  !torch.bool  !torch.str  !torch.none  !torch.number
    !torch.list<int>   !torch.list<vtensor<[2],f32>>   !torch.optional<int>
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

from xdsl.dialects.builtin import (
    ArrayAttr,
    DenseIntOrFPElementsAttr,
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


TYPES: tuple[type[_TorchType], ...] = (
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
_NESTED_TYPES = {t.name.removeprefix("torch."): t for t in TYPES}

TensorOrNone = base(ValueTensorType) | base(NoneType)
Scalar = base(IntType) | base(FloatType) | base(NumberType)


# ----------------------------------------------------------------------------------- ops


def _class_name(op_name: str) -> str:
    """The Python class of an op: `torch.aten.flatten.using_ints` -> `AtenFlattenUsingIntsOp`,
    `torch.constant.int` -> `ConstantIntOp`."""
    words = op_name.removeprefix("torch.").replace(".", "_").split("_")
    return "".join(w[:1].upper() + w[1:] for w in words if w) + "Op"


def _define_op(name: str, base_cls: type[IRDLOperation], doc: str, **fields: object
               ) -> type[IRDLOperation]:
    """An IRDL op class named after `name`, deriving from `base_cls`, with `fields` (operand,
    property, result definitions or static methods) in that order; a table row below."""
    class_name = _class_name(name)
    namespace = {"__module__": __name__, "__qualname__": class_name, "__doc__": doc,
                 "name": name, **fields}
    return irdl_op_definition(type(class_name, (base_cls,), namespace))


class _ConstantOp(IRDLOperation):
    """`torch.constant.<type>`: a compile-time constant of a torch scalar type."""

    traits = traits_def(ConstantLike(), Pure())


class _ValueConstantOp(_ConstantOp):
    """A constant whose Python value is held in its `value` property; each subclass has the
    static methods `_to_attr` (Python value -> property), `_to_python` (the reverse) and
    `_result_type` (see `_constant_op`)."""

    def __init__(self, value: Any):
        super().__init__(properties={"value": self._to_attr(value)},
                         result_types=[self._result_type()])

    @property
    def py_value(self) -> int | float | str | bool:
        return self._to_python(self.value)  # type: ignore[attr-defined]


def _constant_op(name: str, value: object, result: type[_SimpleTorchType],
                 to_attr: Callable[[Any], Attribute], to_python: Callable[[Any], Any]
                 ) -> type[IRDLOperation]:
    """The constant op `name`: its `value` property (constraint `value`) is built from a
    Python value by `to_attr` and read back by `to_python`; its result has type `result`."""
    return _define_op(
        name, _ValueConstantOp, f"`{name}`: a constant `{result.name}`.",
        value=prop_def(value), result=result_def(result), _to_attr=staticmethod(to_attr),
        _to_python=staticmethod(to_python), _result_type=staticmethod(result))


ConstantIntOp = _constant_op("torch.constant.int", IntegerAttr, IntType,
                             lambda v: IntegerAttr(v, i64), lambda a: int(a.value.data))
ConstantFloatOp = _constant_op("torch.constant.float", FloatAttr, FloatType,
                               lambda v: FloatAttr(v, Float64Type()),
                               lambda a: float(a.value.data))
ConstantStrOp = _constant_op("torch.constant.str", StringAttr, StringType, StringAttr,
                             lambda a: a.data)
ConstantBoolOp = _constant_op("torch.constant.bool", IntegerAttr[IntegerType], BoolType,
                              lambda v: BoolAttr(int(v), i1), lambda a: bool(a.value.data))


@irdl_op_definition
class ConstantNoneOp(_ConstantOp):
    name = "torch.constant.none"
    result = result_def(NoneType)

    def __init__(self):
        super().__init__(result_types=[NoneType()])


@irdl_op_definition
class PrimListConstructOp(IRDLOperation):
    name = "torch.prim.ListConstruct"
    elements = var_operand_def()
    result = result_def(ListType)
    traits = traits_def(Pure())


class _AtenOp(IRDLOperation):
    """Base of the modelled aten ops: a single value-tensor result, no side effects."""

    result = result_def(ValueTensorType)
    traits = traits_def(Pure())

    def verify_(self) -> None:
        for v in self.operands:
            if isinstance(v.type, ValueTensorType) and not v.type.is_ranked:
                raise VerifyException(f"{self.name}: unranked tensor operand")


class _ReshapeLike(_AtenOp):
    """A row-major reshape: its semantics are fixed by the operand and result shapes."""


# Operand constraints of the aten op table below. Tensor operands are typed; scalar and
# list operands accept any type (the raise pass checks their values through
# `constant_value`), so that every form torch-mlir prints parses and verifies.
TENSOR = base(ValueTensorType)
TENSOR_OR_NONE = TensorOrNone
ANY = None


def _aten_op(name: str, note: str = "", *, base_cls: type[_AtenOp] = _AtenOp,
             **operands: object) -> type[_AtenOp]:
    """The op `name` (`torch.aten.<op>[.<overload>]`) with `operands` in torch's order,
    each an operand constraint (`ANY`: unconstrained), and the `_AtenOp` result, traits
    and verifier."""
    signature = f"`{name}({', '.join(operands)})`"
    fields = {k: operand_def() if c is ANY else operand_def(c) for k, c in operands.items()}
    return _define_op(name, base_cls, f"{signature}{': ' + note if note else ''}.", **fields)


# The aten ops raise-torch-to-nm converts one to one.
AtenLinearOp = _aten_op("torch.aten.linear", input=TENSOR, weight=TENSOR, bias=TENSOR_OR_NONE)
AtenLayerNormOp = _aten_op(
    "torch.aten.layer_norm", input=TENSOR, normalized_shape=base(ListType),
    weight=TENSOR_OR_NONE, bias=TENSOR_OR_NONE, eps=base(FloatType),
    cudnn_enable=base(BoolType))
AtenGeluOp = _aten_op("torch.aten.gelu", input=TENSOR, approximate=base(StringType))
AtenAddTensorOp = _aten_op("torch.aten.add.Tensor", "input + alpha * other",
                           input=TENSOR, other=TENSOR, alpha=Scalar)
AtenSubTensorOp = _aten_op("torch.aten.sub.Tensor", "input - alpha * other",
                           input=TENSOR, other=TENSOR, alpha=Scalar)
AtenMulTensorOp = _aten_op("torch.aten.mul.Tensor", input=TENSOR, other=TENSOR)
AtenReluOp = _aten_op("torch.aten.relu", input=TENSOR)

# The aten ops it folds into its patterns (DeiT, Swin).
AtenConv2dOp = _aten_op("torch.aten.conv2d", input=TENSOR, weight=TENSOR, bias=TENSOR_OR_NONE,
                        stride=ANY, padding=ANY, dilation=ANY, groups=ANY)
AtenViewOp = _aten_op("torch.aten.view", base_cls=_ReshapeLike, input=TENSOR, size=ANY)
AtenReshapeOp = _aten_op("torch.aten.reshape", base_cls=_ReshapeLike, input=TENSOR, size=ANY)
AtenUnsafeViewOp = _aten_op("torch.aten._unsafe_view", base_cls=_ReshapeLike,
                            input=TENSOR, size=ANY)
AtenFlattenUsingIntsOp = _aten_op("torch.aten.flatten.using_ints", base_cls=_ReshapeLike,
                                  input=TENSOR, start_dim=ANY, end_dim=ANY)
AtenTransposeIntOp = _aten_op("torch.aten.transpose.int", input=TENSOR, dim0=ANY, dim1=ANY)
AtenPermuteOp = _aten_op("torch.aten.permute", input=TENSOR, dims=ANY)
AtenSelectIntOp = _aten_op("torch.aten.select.int", "drops `dim`",
                           input=TENSOR, dim=ANY, index=ANY)
AtenSliceTensorOp = _aten_op("torch.aten.slice.Tensor", "start and end may be none",
                             input=TENSOR, dim=ANY, start=ANY, end=ANY, step=ANY)
AtenSqueezeDimOp = _aten_op("torch.aten.squeeze.dim", input=TENSOR, dim=ANY)
AtenExpandOp = _aten_op("torch.aten.expand", input=TENSOR, size=ANY, implicit=ANY)
AtenBroadcastToOp = _aten_op("torch.aten.broadcast_to",
                             "what `expand` becomes after decomposition", input=TENSOR, size=ANY)
AtenCatOp = _aten_op("torch.aten.cat", "tensors: list<vtensor>",
                     tensors=base(ListType), dim=ANY)
AtenScaledDotProductAttentionOp = _aten_op(
    "torch.aten.scaled_dot_product_attention", "attn_mask and scale may be none",
    query=TENSOR, key=TENSOR, value=TENSOR, attn_mask=ANY, dropout_p=ANY, is_causal=ANY,
    scale=ANY, enable_gqa=ANY)
AtenMulScalarOp = _aten_op("torch.aten.mul.Scalar", "other: a scalar", input=TENSOR, other=ANY)
AtenDivScalarOp = _aten_op("torch.aten.div.Scalar", "other: a scalar", input=TENSOR, other=ANY)
AtenMatmulOp = _aten_op("torch.aten.matmul", input=TENSOR, other=TENSOR)
AtenSoftmaxIntOp = _aten_op("torch.aten.softmax.int", "dtype may be none",
                            input=TENSOR, dim=ANY, dtype=ANY)
AtenRollOp = _aten_op("torch.aten.roll", "shifts, dims: list<int>; kept whole (Swin's cyclic "
                      "shift, a static permutation of tokens)", input=TENSOR, shifts=ANY, dims=ANY)
AtenConstantPadNdOp = _aten_op(
    "torch.aten.constant_pad_nd", "pad: list<int>, (before, after) pairs from the last dim; "
    "only a zero-width pad reaches raising (the frontend turns others into cat)",
    input=TENSOR, pad=ANY, value=ANY)
AtenMeanDimOp = _aten_op("torch.aten.mean.dim", "dim: list<int>; dtype may be none",
                         input=TENSOR, dim=ANY, keepdim=ANY, dtype=ANY)

# What torch-mlir's ONNX conversion and torch.export's default decompositions produce
# (the decomposed forms raise-torch-to-nm recognises; matchers/decomposed/).
AtenMmOp = _aten_op("torch.aten.mm", input=TENSOR, mat2=TENSOR)
AtenBmmOp = _aten_op("torch.aten.bmm", input=TENSOR, mat2=TENSOR)
AtenDivTensorOp = _aten_op("torch.aten.div.Tensor", input=TENSOR, other=TENSOR)
AtenIndexSelectOp = _aten_op("torch.aten.index_select", "index: a 1-D integer tensor",
                             input=TENSOR, dim=ANY, index=TENSOR)
AtenUnsqueezeOp = _aten_op("torch.aten.unsqueeze", input=TENSOR, dim=ANY)
PrimsSqueezeOp = _aten_op("torch.prims.squeeze", "dimensions: list<int>",
                          input=TENSOR, dimensions=ANY)
AtenConvolutionOp = _aten_op(
    "torch.aten.convolution", "what conv2d becomes after decomposition (ONNX Conv too)",
    input=TENSOR, weight=TENSOR, bias=TENSOR_OR_NONE, stride=ANY, padding=ANY, dilation=ANY,
    transposed=ANY, output_padding=ANY, groups=ANY)


@irdl_op_definition
class AtenNativeLayerNormOp(IRDLOperation):
    """`torch.aten.native_layer_norm(input, normalized_shape, weight, bias, eps)` -> (out,
    mean, rstd): what ONNX LayerNormalization becomes."""

    name = "torch.aten.native_layer_norm"
    input = operand_def(ValueTensorType)
    normalized_shape = operand_def()
    weight = operand_def()
    bias = operand_def()
    eps = operand_def()
    result = result_def(ValueTensorType)
    mean = result_def(ValueTensorType)
    rstd = result_def(ValueTensorType)
    traits = traits_def(Pure())


@irdl_op_definition
class VtensorLiteralOp(IRDLOperation):
    """`torch.vtensor.literal`: a constant tensor (`value`: dense elements)."""

    name = "torch.vtensor.literal"
    value = prop_def(Attribute)
    result = result_def(ValueTensorType)
    traits = traits_def(ConstantLike(), Pure())


RESHAPE_OPS = (AtenViewOp, AtenReshapeOp, AtenUnsafeViewOp, AtenFlattenUsingIntsOp)
EXPAND_OPS = (AtenExpandOp, AtenBroadcastToOp)


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
    AtenConstantPadNdOp,
)
"""The modelled aten ops that are converted only as part of a pattern (or dropped)."""


CONSTANT_OPS = (ConstantIntOp, ConstantFloatOp, ConstantStrOp, ConstantBoolOp, ConstantNoneOp,
                VtensorLiteralOp)

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
        AtenSubTensorOp,
        AtenMulTensorOp,
        AtenReluOp,
        *PATTERN_OPS,
        AtenMeanDimOp,
        AtenMmOp,
        AtenBmmOp,
        AtenDivTensorOp,
        AtenIndexSelectOp,
        AtenUnsqueezeOp,
        PrimsSqueezeOp,
        AtenConvolutionOp,
        AtenNativeLayerNormOp,
        VtensorLiteralOp,
    ],
    list(TYPES),
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
    if isinstance(op, VtensorLiteralOp):
        values = literal_array(value)
        if values is not None and values.size == 1:
            return values.reshape(-1)[0].item()
    raise ValueError("not a torch constant")


def literal_array(value: SSAValue):  # noqa: ANN201 - numpy array or None
    """The elements of a `torch.vtensor.literal` (numpy, its shape); None for anything else
    (or a literal whose data is not in the IR, a dense_resource)."""
    import numpy as np

    op = value.owner
    if not isinstance(op, VtensorLiteralOp) or not isinstance(op.result.type, ValueTensorType):
        return None
    attr = op.value
    if not isinstance(attr, DenseIntOrFPElementsAttr):
        return None
    shape = op.result.type.get_shape()
    values = np.asarray(attr.get_values())
    if shape is None:
        return None
    if values.size == 1 and math.prod(shape) != 1:
        values = np.full(shape, values.reshape(-1)[0])
    return values.reshape(shape)

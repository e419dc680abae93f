"""The `nm` dialect: the tensor-level IR nmc compiles (see docs/ARCHITECTURE.md).

Value semantics, builtin `tensor<...xf32>` types with static shapes. Every compute op has a
`layer` string property (a unique, human-readable name derived from the PyTorch module path).

| op              | operands                                        | properties              |
|-----------------|-------------------------------------------------|-------------------------|
| `nm.param`      | -                                               | `name` (state_dict key) |
| `nm.linear`     | input [..., K], weight [N, K], bias [N] (opt.)  | `layer`, `sparsity`, `activation` (opt.) |
| `nm.layer_norm` | input [..., C], gamma [C], beta [C]             | `layer`, `eps` (f64)    |
| `nm.gelu`       | input                                           | `layer`, `approximate`  |
| `nm.add`        | lhs, rhs (rhs same shape or broadcast, below)   | `layer`                 |
| `nm.patch_embed`| x [B, Cin, H, W], weight [D, Cin, p, p], bias [D] | `layer`, `patch` (p)  |
| `nm.concat`     | inputs (variadic, same rank)                    | `layer`, `axis`         |
| `nm.attention`  | qkv [B, N, 3C], bias [G, heads, N, N] (opt.)    | `layer`, `heads`, `scale` |
| `nm.select`     | input [B, N, D]                                 | `layer`, `axis`, `index`  |
| `nm.reshape`    | input (same data, new shape; not a compute op)  | -                       |
| `nm.permute_rows` | input [..., C] -> [..., k*C]                  | `layer`, `rows` (array<i64>) |
| `nm.mean`       | input [B, T..., C] -> [B, C]                    | `layer`                 |

`nm.add` broadcasting: the rhs shape, with its leading 1s dropped, must be a suffix of the lhs
shape (e.g. the position embedding [1, N, D] added to [B, N, D]); the result has the lhs shape.
`nm.patch_embed` is conv2d(stride = kernel = p, no padding) then flatten(2).transpose(1, 2):
[B, (H/p)*(W/p), D]. `nm.concat` is torch.cat along `axis` (0 <= axis < rank - 1). `nm.attention`
splits qkv [B, N, 3C] into q, k, v (each [B, N, heads, C/heads], in that order along the last
dim), computes softmax(q . k^T * scale) . v per head and merges the heads back: [B, N, C].
`nm.select` is x[:, index] -> [B, D].

Printed form (declarative `assembly_format`s; the generic form parses too): the op, its
layer name, its operands, its properties led by their names, the other attributes, the
types, e.g.
    %fc1.weight = nm.param "fc1.weight" {nm.layout = "nm_pack:2:4"} : tensor<768x192xf32>
    %fc1 = nm.linear "fc1" %norm, %fc1.weight, %fc1.bias sparsity array<i64: 2, 4>
        activation "gelu" : (tensor<1x197x192xf32>, ...) -> tensor<1x197x768xf32>
    %attn = nm.attention "attn" %qkv bias %b heads 2 scale 0.5 : (...) -> ...

The module carries the `nm.model` attribute (path of the model file; `nm.param` values come
by name from the frontend's weight store, `nmc.compiler.frontend.weights`) and
`func.func @main` carries `nm.input_names` / `nm.output_names`;
these and the attributes later passes add are defined, typed and accessed in nm_attrs.py.

Python accessors: `ParamOp.param_name` (the `name` property; `name` itself is the op name),
`LinearOp.input/weight/bias/result/layer/sparsity` + `sparsity_pattern` ((N, M) or None), `LayerNormOp.input/gamma/beta/result/layer/eps`,
`GeluOp.input/result/layer/approximate`, `AddOp.lhs/rhs/result/layer`,
`PatchEmbedOp.input/weight/bias/result/layer/patch` + `patch_size` (int),
`ConcatOp.inputs/result/layer/axis` + `axis_value` (int),
`AttentionOp.qkv/bias/result/layer/heads/scale` + `heads_value` (int), `scale_value` (float),
`head_dim` (int), `SelectOp.input/result/layer/axis/index` + `axis_value`, `index_value` (int),
`ReshapeOp.input/result`, `PermuteRowsOp.input/result/layer/rows` + `row_indices` (list),
`MeanOp.input/result/layer`.
Every compute op has `layer_name` (str) and the helpers `tensor_shape(value)`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

import math

from xdsl.dialects.builtin import (
    I64,
    DenseArrayBase,
    Float32Type,
    Float64Type,
    FloatAttr,
    IntegerAttr,
    IntegerType,
    StringAttr,
    TensorType,
)
from xdsl.ir import Attribute, Dialect, SSAValue
from xdsl.irdl import (
    IRDLOperation,
    irdl_op_definition,
    operand_def,
    opt_operand_def,
    opt_prop_def,
    var_operand_def,
    prop_def,
    result_def,
    traits_def,
)
from xdsl.traits import Pure
from xdsl.utils.exceptions import VerifyException

from nmc.common import nm_format
from nmc.compiler.dialects.nm_attrs import NM_ATTRS

GELU_APPROXIMATIONS = ("none", "tanh")
LINEAR_ACTIVATIONS = {"gelu": "none", "gelu_tanh": "tanh"}
"""nm.linear's fusable activations, and the GELU approximation each one is."""

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


def _i64(value: int | IntegerAttr) -> IntegerAttr:
    if isinstance(value, IntegerAttr):
        return value
    return IntegerAttr(int(value), IntegerType(64))


def _f64(value: float | FloatAttr) -> FloatAttr:
    return value if isinstance(value, FloatAttr) else FloatAttr(float(value), Float64Type())


def _str(value: str | StringAttr) -> StringAttr:
    return StringAttr(value) if isinstance(value, str) else value


def sparsity_attr(n: int, m: int) -> DenseArrayBase:
    """The `sparsity` property of nm.linear: `array<i64: N, M>`."""
    return DenseArrayBase.from_list(IntegerType(64), [int(n), int(m)])


def _check_static(op: IRDLOperation) -> None:
    for v in (*op.operands, *op.results):
        shape = tensor_shape(v)
        if any(d < 0 for d in shape):
            raise VerifyException(f"{op.name}: shapes must be static, got {_fmt(shape)}")


def compute_format(operands: str) -> str:
    """The custom assembly format of a compute op: its layer name, then `operands` (a
    declarative-format fragment: operands and keyword-led properties), then the other
    attributes and the functional type, e.g.
    `%y = nm.add "add" %x, %fc2 {nm.tile = {rows = 29 : i64}} : (T, T) -> T`."""
    return f"$layer {operands} attr-dict `:` functional-type(operands, results)"


class _ComputeOp(IRDLOperation):
    """Shared behaviour of the nm compute ops (those with a `layer`): one f32 tensor
    result, no side effects, static shapes, a non-empty layer name. A subclass checks its
    own operands and properties in `_verify_shapes`."""

    layer = prop_def(StringAttr)
    result = result_def(F32Tensor)

    traits = traits_def(Pure())

    KIND: ClassVar[str]  # short kind used in layer names: linear, layer_norm, gelu, add, ...

    def _build(self, operands: Sequence[SSAValue | Sequence[SSAValue]],
               result_shape: Sequence[int], layer: str | StringAttr,
               **properties: Attribute) -> None:
        """IRDLOperation.__init__ with the result type from its shape, `layer` first."""
        super().__init__(operands=list(operands), result_types=[f32_tensor(result_shape)],
                         properties={"layer": _str(layer), **properties})

    @property
    def layer_name(self) -> str:
        return self.layer.data

    @property
    def where(self) -> str:
        """How error messages name this op: `nm.linear (fc1)`."""
        return f"{self.name} ({self.layer.data})"

    def verify_(self) -> None:
        self._verify_layer()
        _check_static(self)
        self._verify_shapes()

    def _verify_shapes(self) -> None:
        """Operand, property and result checks of one op kind (after layer and static
        shapes)."""

    def _verify_layer(self) -> None:
        if not self.layer.data:
            raise VerifyException(f"{self.name}: the `layer` property must not be empty")

    def _check_result_shape(self, expected: Sequence[int]) -> None:
        got = tensor_shape(self.results[0])
        if tuple(got) != tuple(expected):
            raise VerifyException(
                f"{self.where}: result shape {_fmt(got)} should be {_fmt(expected)}"
            )


@irdl_op_definition
class ParamOp(IRDLOperation):
    """`nm.param "fc1.weight"`: the model's tensor of that state_dict key."""

    name = "nm.param"

    param_name = prop_def(StringAttr, prop_name="name")
    result = result_def(F32Tensor)

    traits = traits_def(Pure())

    assembly_format = "$name attr-dict `:` type($result)"

    def __init__(self, param_name: str | StringAttr, shape: Sequence[int]):
        super().__init__(properties={"name": _str(param_name)},
                         result_types=[f32_tensor(shape)])

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

    # N:M sparsity of the weight, `array<i64: N, M>` (absent = dense; N = M is dense too):
    # per group of M consecutive weights along K, N are kept. Set by assign-sparsity.
    sparsity = opt_prop_def(DenseArrayBase)
    # An elementwise function applied to the result (LINEAR_ACTIVATIONS), fused into the
    # kernel's epilogue by fuse-activations (absent: none).
    activation = opt_prop_def(StringAttr)

    # qualified(): xDSL 0.74 prints a bare DenseArrayBase in a form it cannot parse back
    assembly_format = compute_format(
        "$input `,` $weight (`,` $bias^)? (`sparsity` qualified($sparsity)^)? "
        "(`activation` $activation^)?")

    def __init__(self, input: SSAValue, weight: SSAValue, bias: SSAValue | None,
                 layer: str | StringAttr, sparsity: nm_format.Pattern = None,
                 activation: str | None = None):
        properties: dict[str, Attribute] = {}
        if sparsity is not None:
            properties["sparsity"] = sparsity_attr(*sparsity)
        if activation is not None:
            properties["activation"] = StringAttr(activation)
        out_shape = (*tensor_shape(input)[:-1], tensor_shape(weight)[0])
        self._build([input, weight, [bias] if bias is not None else []], out_shape, layer,
                    **properties)

    @property
    def sparsity_pattern(self) -> nm_format.Pattern:
        """(N, M) of the `sparsity` property; None when it is absent or dense (N = M)."""
        if self.sparsity is None:
            return None
        values = tuple(self.sparsity.iter_values())
        return nm_format.sparse_pattern(values) if len(values) == 2 else None

    @property
    def activation_name(self) -> str | None:
        """The fused activation ("gelu" or "gelu_tanh"), or None."""
        return self.activation.data if self.activation is not None else None

    def set_sparsity(self, pattern: nm_format.Pattern) -> None:
        """Set (N, M), or remove the property with None (dense)."""
        if pattern is None:
            self.properties.pop("sparsity", None)
        else:
            self.properties["sparsity"] = sparsity_attr(*pattern)

    def _verify_sparsity(self, where: str) -> None:
        if self.sparsity is None:
            return
        elt = self.sparsity.elt_type
        values = tuple(self.sparsity.iter_values())
        if not (isinstance(elt, IntegerType) and elt.width.data == 64) or len(values) != 2:
            raise VerifyException(
                f"{where}: sparsity must be array<i64: N, M>, got {self.sparsity}"
            )
        n, m = values
        if not 0 < n <= m:
            raise VerifyException(
                f"{where}: sparsity N:M = {n}:{m} needs 0 < N <= M (keep N of every M "
                f"weights along K)"
            )

    def _verify_shapes(self) -> None:
        where = self.where
        self._verify_sparsity(where)
        if self.activation_name not in (None, *LINEAR_ACTIVATIONS):
            raise VerifyException(
                f"{where}: activation must be one of {', '.join(LINEAR_ACTIVATIONS)}, got "
                f"{self.activation_name!r}")
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

    eps = prop_def(FloatAttr[Float64Type])

    assembly_format = compute_format("$input `,` $gamma `,` $beta `eps` $eps")

    def __init__(self, input: SSAValue, gamma: SSAValue, beta: SSAValue,
                 eps: float | FloatAttr, layer: str | StringAttr):
        self._build([input, gamma, beta], tensor_shape(input), layer, eps=_f64(eps))

    @property
    def eps_value(self) -> float:
        return float(self.eps.value.data)

    def _verify_shapes(self) -> None:
        where = self.where
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

    approximate = prop_def(StringAttr)

    assembly_format = compute_format("$input `approximate` $approximate")

    def __init__(self, input: SSAValue, layer: str | StringAttr,
                 approximate: str | StringAttr = "none"):
        self._build([input], tensor_shape(input), layer, approximate=_str(approximate))

    def _verify_shapes(self) -> None:
        if self.approximate.data not in GELU_APPROXIMATIONS:
            raise VerifyException(
                f"{self.where}: approximate must be one of "
                f"{', '.join(repr(a) for a in GELU_APPROXIMATIONS)}, "
                f"got {self.approximate.data!r}"
            )
        self._check_result_shape(tensor_shape(self.input))


class _RowwiseUnaryOp(_ComputeOp):
    """An op of one operand whose result has its shape (a function of each element or of
    each row)."""

    input = operand_def(F32Tensor)

    assembly_format = compute_format("$input")

    def __init__(self, input: SSAValue, layer: str | StringAttr):
        self._build([input], tensor_shape(input), layer)

    def _verify_shapes(self) -> None:
        x = tensor_shape(self.input)
        if len(x) < 1:
            raise VerifyException(f"{self.where}: input must have rank >= 1, got a scalar")
        self._check_result_shape(x)


def _rowwise_unary(class_name: str, name: str, doc: str) -> type[_RowwiseUnaryOp]:
    """A `_RowwiseUnaryOp` named `name` (`nm.<kind>`)."""
    body = {"name": name, "KIND": name.removeprefix("nm."), "__doc__": doc,
            "__module__": __name__, "__qualname__": class_name,
            "__annotations__": {"KIND": "ClassVar[str]"}}
    return irdl_op_definition(type(class_name, (_RowwiseUnaryOp,), body))


ReluOp = _rowwise_unary("ReluOp", "nm.relu",
                        "`nm.relu`: elementwise max(x, 0) (NaN stays NaN, as in torch).")
SoftmaxOp = _rowwise_unary("SoftmaxOp", "nm.softmax",
                           "`nm.softmax`: softmax over the last dim (each row of [..., C]).")


@irdl_op_definition
class ScaleOp(_ComputeOp):
    """`nm.scale`: elementwise x * s, s a constant rounded to f32 (as PyTorch multiplies an
    f32 tensor by a Python number); x / 2^k is x * 2^-k, the same value bit for bit."""

    name = "nm.scale"
    KIND: ClassVar[str] = "scale"

    input = operand_def(F32Tensor)

    scale = prop_def(FloatAttr[Float64Type])

    assembly_format = compute_format("$input `by` $scale")

    def __init__(self, input: SSAValue, scale: float | FloatAttr, layer: str | StringAttr):
        self._build([input], tensor_shape(input), layer, scale=_f64(scale))

    @property
    def scale_value(self) -> float:
        return float(self.scale.value.data)

    def _verify_shapes(self) -> None:
        if not math.isfinite(self.scale_value):
            raise VerifyException(f"{self.where}: scale must be finite, got {self.scale_value}")
        self._check_result_shape(tensor_shape(self.input))


def broadcasts_to(rhs: Sequence[int], lhs: Sequence[int]) -> bool:
    """True if `rhs` broadcasts to `lhs` under the nm.add rule: `rhs` with its leading 1s
    dropped is a suffix of `lhs` (equal shapes included)."""
    rhs = tuple(rhs)
    lhs = tuple(lhs)
    if len(rhs) > len(lhs):
        # e.g. [1, 1, D] + [N, D]: the torch result would be [1, N, D], not the lhs shape.
        return False
    i = 0
    while i < len(rhs) and rhs[i] == 1:
        i += 1
    core = rhs[i:]
    return len(core) == 0 or tuple(lhs[len(lhs) - len(core) :]) == core


class _ElementwiseBinaryOp(_ComputeOp):
    """An elementwise op of two operands: rhs has the shape of lhs, or broadcasts to it over
    the leading dims (its shape with leading 1s dropped is a suffix of the lhs shape: a
    position embedding [1, N, D] over [B, N, D], a per-channel vector [D] such as a
    LayerScale's gamma)."""

    lhs = operand_def(F32Tensor)
    rhs = operand_def(F32Tensor)

    assembly_format = compute_format("$lhs `,` $rhs")

    def __init__(self, lhs: SSAValue, rhs: SSAValue, layer: str | StringAttr):
        self._build([lhs, rhs], tensor_shape(lhs), layer)

    @property
    def is_broadcast(self) -> bool:
        """True if rhs is broadcast (its shape differs from the lhs shape)."""
        return tensor_shape(self.lhs) != tensor_shape(self.rhs)

    def _verify_shapes(self) -> None:
        a = tensor_shape(self.lhs)
        b = tensor_shape(self.rhs)
        if not broadcasts_to(b, a):
            raise VerifyException(
                f"{self.where}: rhs {_fmt(b)} does not broadcast to lhs "
                f"{_fmt(a)} (rhs must have the lhs shape, or be a suffix of it after "
                f"dropping leading 1s)"
            )
        self._check_result_shape(a)


@irdl_op_definition
class AddOp(_ElementwiseBinaryOp):
    """`nm.add`: elementwise lhs + rhs (rhs may broadcast, see _ElementwiseBinaryOp)."""

    name = "nm.add"
    KIND: ClassVar[str] = "add"


@irdl_op_definition
class SubOp(_ElementwiseBinaryOp):
    """`nm.sub`: elementwise lhs - rhs (rhs may broadcast, see _ElementwiseBinaryOp)."""

    name = "nm.sub"
    KIND: ClassVar[str] = "sub"


@irdl_op_definition
class MulOp(_ElementwiseBinaryOp):
    """`nm.mul`: elementwise lhs * rhs (rhs may broadcast, see _ElementwiseBinaryOp);
    a LayerScale (DINOv2, CaiT) is an nm.mul by its per-channel gamma."""

    name = "nm.mul"
    KIND: ClassVar[str] = "mul"


@irdl_op_definition
class PatchEmbedOp(_ComputeOp):
    """`nm.patch_embed`: conv2d(x, weight, bias, stride = kernel = patch, no padding) then
    flatten(2).transpose(1, 2): x [B, Cin, H, W], weight [D, Cin, p, p], bias [D]
    -> [B, (H/p)*(W/p), D] (tokens in row-major patch order)."""

    name = "nm.patch_embed"
    KIND: ClassVar[str] = "patch_embed"

    input = operand_def(F32Tensor)
    weight = operand_def(F32Tensor)
    bias = operand_def(F32Tensor)

    patch = prop_def(IntegerAttr[I64])

    assembly_format = compute_format("$input `,` $weight `,` $bias `patch` $patch")

    def __init__(self, input: SSAValue, weight: SSAValue, bias: SSAValue,
                 patch: int | IntegerAttr, layer: str | StringAttr):
        patch = _i64(patch)
        p = patch.value.data
        x = tensor_shape(input)
        w = tensor_shape(weight)
        if len(x) == 4 and len(w) >= 1 and p > 0:
            out_shape = (x[0], (x[2] // p) * (x[3] // p), w[0])
        else:  # malformed; the verifier reports it
            out_shape = (0,)
        self._build([input, weight, bias], out_shape, layer, patch=patch)

    @property
    def patch_size(self) -> int:
        return self.patch.value.data

    def _verify_shapes(self) -> None:
        where = self.where
        p = self.patch_size
        x = tensor_shape(self.input)
        w = tensor_shape(self.weight)
        b = tensor_shape(self.bias)
        if p <= 0:
            raise VerifyException(f"{where}: patch must be > 0, got {p}")
        if len(x) != 4:
            raise VerifyException(f"{where}: input must be [B, Cin, H, W], got {_fmt(x)}")
        if len(w) != 4:
            raise VerifyException(f"{where}: weight must be [D, Cin, p, p], got {_fmt(w)}")
        if w[1] != x[1]:
            raise VerifyException(
                f"{where}: Cin mismatch: input {_fmt(x)} has Cin={x[1]} "
                f"but weight {_fmt(w)} has Cin={w[1]}"
            )
        if (w[2], w[3]) != (p, p):
            raise VerifyException(
                f"{where}: weight {_fmt(w)} must have a {p}x{p} kernel (patch = {p})"
            )
        if x[2] % p or x[3] % p:
            raise VerifyException(
                f"{where}: input {x[2]}x{x[3]} is not divisible by patch {p}"
            )
        if b != (w[0],):
            raise VerifyException(
                f"{where}: bias must be [{w[0]}] (D of weight {_fmt(w)}), got {_fmt(b)}"
            )
        self._check_result_shape((x[0], (x[2] // p) * (x[3] // p), w[0]))


@irdl_op_definition
class ConcatOp(_ComputeOp):
    """`nm.concat`: torch.cat(inputs, axis); inputs of the same rank, equal except along
    `axis`, with 0 <= axis < rank - 1 (every input already expanded to the batch)."""

    name = "nm.concat"
    KIND: ClassVar[str] = "concat"

    inputs = var_operand_def(F32Tensor)

    axis = prop_def(IntegerAttr[I64])

    assembly_format = compute_format("$inputs `axis` $axis")

    def __init__(self, inputs: Sequence[SSAValue], axis: int | IntegerAttr,
                 layer: str | StringAttr):
        axis = _i64(axis)
        a = axis.value.data
        shapes = [tensor_shape(v) for v in inputs]
        if shapes and 0 <= a < len(shapes[0]):
            out = list(shapes[0])
            out[a] = sum(s[a] if len(s) > a else 0 for s in shapes)
        else:  # malformed; the verifier reports it
            out = [0]
        self._build([list(inputs)], out, layer, axis=axis)

    @property
    def axis_value(self) -> int:
        return self.axis.value.data

    def _verify_shapes(self) -> None:
        where = self.where
        if len(self.inputs) == 0:
            raise VerifyException(f"{where}: needs at least one input")
        shapes = [tensor_shape(v) for v in self.inputs]
        rank = len(shapes[0])
        a = self.axis_value
        if not 0 <= a < rank - 1:
            raise VerifyException(
                f"{where}: axis must satisfy 0 <= axis < rank - 1 = {rank - 1}, got {a}"
            )
        for i, s in enumerate(shapes):
            if len(s) != rank:
                raise VerifyException(
                    f"{where}: input {i} {_fmt(s)} has rank {len(s)}, "
                    f"input 0 {_fmt(shapes[0])} has rank {rank}"
                )
            for d in range(rank):
                if d != a and s[d] != shapes[0][d]:
                    raise VerifyException(
                        f"{where}: input {i} {_fmt(s)} differs from input 0 "
                        f"{_fmt(shapes[0])} in dim {d} (only axis {a} may differ)"
                    )
        out = list(shapes[0])
        out[a] = sum(s[a] for s in shapes)
        self._check_result_shape(out)


@irdl_op_definition
class AttentionOp(_ComputeOp):
    """`nm.attention`: multi-head self-attention core on the output of the qkv linear.
    qkv [B, N, 3C] is split along the last dim into q, k, v (in that order), each viewed as
    [B, N, heads, C/heads]; per head softmax(q . k^T * scale + bias[b % G, h]) . v; heads
    merged back (head h -> columns [h*C/heads, (h+1)*C/heads)): result [B, N, C]. The
    optional bias [G, heads, N, N] is an additive term of the scores (Swin: relative
    position bias, plus the shifted-window mask, one [N, N] block per (window, head);
    B = images * windows, G = 1 or B)."""

    name = "nm.attention"
    KIND: ClassVar[str] = "attention"

    qkv = operand_def(F32Tensor)
    bias = opt_operand_def(F32Tensor)

    heads = prop_def(IntegerAttr[I64])
    scale = prop_def(FloatAttr[Float64Type])

    assembly_format = compute_format("$qkv (`bias` $bias^)? `heads` $heads `scale` $scale")

    def __init__(self, qkv: SSAValue, heads: int | IntegerAttr, scale: float | FloatAttr,
                 layer: str | StringAttr, bias: SSAValue | None = None):
        x = tensor_shape(qkv)
        out = (*x[:-1], x[-1] // 3) if len(x) >= 1 else (0,)
        self._build([qkv, [bias] if bias is not None else []], out, layer,
                    heads=_i64(heads), scale=_f64(scale))

    @property
    def heads_value(self) -> int:
        return self.heads.value.data

    @property
    def scale_value(self) -> float:
        return float(self.scale.value.data)

    @property
    def embed_dim(self) -> int:
        """C: the width of the result (a third of the qkv width)."""
        return tensor_shape(self.qkv)[-1] // 3

    @property
    def head_dim(self) -> int:
        """C / heads."""
        return self.embed_dim // self.heads_value

    def _verify_shapes(self) -> None:
        where = self.where
        x = tensor_shape(self.qkv)
        h = self.heads_value
        s = self.scale_value
        if len(x) != 3:
            raise VerifyException(f"{where}: qkv must be [B, N, 3C], got {_fmt(x)}")
        if x[2] % 3:
            raise VerifyException(
                f"{where}: qkv {_fmt(x)}: last dim {x[2]} is not divisible by 3 (q, k, v)"
            )
        if h <= 0:
            raise VerifyException(f"{where}: heads must be > 0, got {h}")
        c = x[2] // 3
        if c % h:
            raise VerifyException(
                f"{where}: embedding dim C={c} (qkv {_fmt(x)}) is not divisible by "
                f"heads={h}"
            )
        if not (math.isfinite(s) and s > 0.0):
            raise VerifyException(f"{where}: scale must be finite and > 0, got {s}")
        if self.bias is not None:
            bs = tensor_shape(self.bias)
            if len(bs) != 4 or bs[1:] != (h, x[1], x[1]) or bs[0] < 1 or x[0] % bs[0]:
                raise VerifyException(
                    f"{where}: bias must be [G, heads, N, N] = [G, {h}, {x[1]}, {x[1]}] with "
                    f"G dividing B = {x[0]}, got {_fmt(bs)}"
                )
        self._check_result_shape((x[0], x[1], c))


@irdl_op_definition
class SelectOp(_ComputeOp):
    """`nm.select`: x[:, index] of input [B, N, D] -> [B, D] (`axis` must be 1)."""

    name = "nm.select"
    KIND: ClassVar[str] = "select"

    input = operand_def(F32Tensor)

    axis = prop_def(IntegerAttr[I64])
    index = prop_def(IntegerAttr[I64])

    assembly_format = compute_format("$input `axis` $axis `index` $index")

    def __init__(self, input: SSAValue, axis: int | IntegerAttr, index: int | IntegerAttr,
                 layer: str | StringAttr):
        axis = _i64(axis)
        x = tensor_shape(input)
        a = axis.value.data
        out = (*x[:a], *x[a + 1 :]) if 0 <= a < len(x) else (0,)
        self._build([input], out, layer, axis=axis, index=_i64(index))

    @property
    def axis_value(self) -> int:
        return self.axis.value.data

    @property
    def index_value(self) -> int:
        return self.index.value.data

    def _verify_shapes(self) -> None:
        where = self.where
        x = tensor_shape(self.input)
        a = self.axis_value
        i = self.index_value
        if len(x) != 3:
            raise VerifyException(f"{where}: input must be [B, N, D], got {_fmt(x)}")
        if a != 1:
            raise VerifyException(f"{where}: axis must be 1, got {a}")
        if not 0 <= i < x[1]:
            raise VerifyException(
                f"{where}: index {i} is out of range for input {_fmt(x)} (0 <= index < {x[1]})"
            )
        self._check_result_shape((x[0], x[2]))


@irdl_op_definition
class ReshapeOp(IRDLOperation):
    """`nm.reshape`: the same row-major data under another shape (same number of elements).
    Not a compute op: plan-memory gives the result the address of the input."""

    name = "nm.reshape"

    input = operand_def(F32Tensor)
    result = result_def(F32Tensor)

    traits = traits_def(Pure())

    assembly_format = "$input attr-dict `:` type($input) `->` type($result)"

    def __init__(self, input: SSAValue, shape: Sequence[int]):
        super().__init__(operands=[input], result_types=[f32_tensor(shape)])

    def verify_(self) -> None:
        _check_static(self)
        a, b = tensor_shape(self.input), tensor_shape(self.result)
        if math.prod(a) != math.prod(b):
            raise VerifyException(
                f"nm.reshape: {_fmt(a)} and {_fmt(b)} have different numbers of elements"
            )


@irdl_op_definition
class PermuteRowsOp(_ComputeOp):
    """`nm.permute_rows`: a static gather of rows. The input [..., C] is viewed as R rows
    of C words; the result [..., k*C] (the same or more words per row) is the rows
    `rows[0], rows[1], ...` of the input laid end to end (k consecutive entries per result
    row). Swin's cyclic shift, window partition / reverse and the 2x2 gather of patch
    merging are such permutations (raise-torch-to-nm composes chains of them into one)."""

    name = "nm.permute_rows"
    KIND: ClassVar[str] = "permute_rows"

    input = operand_def(F32Tensor)

    rows = prop_def(DenseArrayBase)

    assembly_format = compute_format("$input `rows` qualified($rows)")

    def __init__(self, input: SSAValue, rows: Sequence[int], shape: Sequence[int],
                 layer: str | StringAttr):
        self._build([input], shape, layer,
                    rows=DenseArrayBase.from_list(IntegerType(64), list(rows)))

    @property
    def row_indices(self) -> list[int]:
        return [int(r) for r in self.rows.iter_values()]

    def _verify_shapes(self) -> None:
        where = self.where
        x, y = tensor_shape(self.input), tensor_shape(self.result)
        if not x or not y:
            raise VerifyException(f"{where}: input and result must have rank >= 1")
        c = x[-1]
        if c <= 0 or y[-1] % c:
            raise VerifyException(
                f"{where}: the result's last dim {y[-1]} must be a multiple of the input's "
                f"row width {c}"
            )
        rows = self.row_indices
        if len(rows) * c != math.prod(y):
            raise VerifyException(
                f"{where}: {len(rows)} rows of {c} do not make the result {_fmt(y)}"
            )
        n = math.prod(x[:-1])
        if any(not 0 <= r < n for r in rows):
            raise VerifyException(f"{where}: a row index is out of range [0, {n})")


@irdl_op_definition
class MeanOp(_ComputeOp):
    """`nm.mean`: input [B, T1, ..., C] -> [B, C], the mean over every dim between the
    first and the last (global average pooling of tokens)."""

    name = "nm.mean"
    KIND: ClassVar[str] = "mean"

    input = operand_def(F32Tensor)

    assembly_format = compute_format("$input")

    def __init__(self, input: SSAValue, layer: str | StringAttr):
        x = tensor_shape(input)
        self._build([input], (x[0], x[-1]) if len(x) >= 3 else (0,), layer)

    def _verify_shapes(self) -> None:
        x = tensor_shape(self.input)
        if len(x) < 3:
            raise VerifyException(
                f"{self.where}: input must be [B, tokens..., C], got {_fmt(x)}"
            )
        self._check_result_shape((x[0], x[-1]))


COMPUTE_OPS: tuple[type[_ComputeOp], ...] = (
    LinearOp,
    LayerNormOp,
    GeluOp,
    ReluOp,
    ScaleOp,
    SoftmaxOp,
    AddOp,
    SubOp,
    MulOp,
    PatchEmbedOp,
    ConcatOp,
    AttentionOp,
    SelectOp,
    PermuteRowsOp,
    MeanOp,
)

NM = Dialect("nm", [ParamOp, ReshapeOp, *COMPUTE_OPS], list(NM_ATTRS))

__all__ = [
    "NM",
    "ParamOp",
    "LinearOp",
    "LayerNormOp",
    "GeluOp",
    "ReluOp",
    "ScaleOp",
    "SoftmaxOp",
    "AddOp",
    "SubOp",
    "MulOp",
    "PatchEmbedOp",
    "ConcatOp",
    "AttentionOp",
    "SelectOp",
    "ReshapeOp",
    "PermuteRowsOp",
    "MeanOp",
    "COMPUTE_OPS",
    "GELU_APPROXIMATIONS",
    "LINEAR_ACTIVATIONS",
    "broadcasts_to",
    "sparsity_attr",
    "f32_tensor",
    "tensor_shape",
]

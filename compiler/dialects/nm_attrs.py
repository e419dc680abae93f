"""The contracts between nmc's stages: every attribute a pass leaves for a later one.

Each fact has one name, one type and one accessor pair here, and nowhere else: a pass reads
and writes `tiling(op)` / `set_tiling(op, ...)`, never `op.attributes["nm.tile"]`, and never
imports another pass to learn a name. The facts the backend computes (tiling, layout,
DRAM placement, target) are typed attributes of the nm dialect, each with a verifier, so a
hand-edited IR file with an impossible value fails when it is parsed, not in a kernel.
docs/ARCHITECTURE.md ("Attributes passes hand on") lists each key, what it holds, which
pass writes it and which read it.

The bookkeeping records (names, kinds) stay builtin strings, arrays and dictionaries; their
accessors check the shape they read.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from xdsl.dialects.builtin import (
    ArrayAttr, DenseArrayBase, DictionaryAttr, Float32Type, Float64Type, FloatAttr, IntAttr,
    IntegerAttr, IntegerType, StringAttr, f64, i64,
)
from xdsl.ir import Attribute, Operation, ParametrizedAttribute, SSAValue
from xdsl.irdl import irdl_attr_definition
from xdsl.parser import AttrParser
from xdsl.printer import Printer
from xdsl.utils.exceptions import VerifyException

from nmc.common import nm_format
from nmc.isa.table import ADDR_BITS, OP_BY_MNEMONIC


def _parsed(parser: AttrParser, build):
    """`build()`'s parameters, a verifier's complaint reported at the parser's position."""
    try:
        return build()
    except VerifyException as e:
        parser.raise_error(str(e))


# ---------------------------------------------------------------------------- target


@irdl_attr_definition
class TargetAttr(ParametrizedAttribute):
    """`#nm.target<"sta_ref">`: the machine the module is compiled for, a built-in target
    name or a TOML file (what `--target` / a pass's `target` option names)."""

    name = "nm.target"

    spec: StringAttr

    def verify(self) -> None:
        if not self.spec.data:
            raise VerifyException("nm.target: the target name must not be empty")

    @classmethod
    def parse_parameters(cls, parser: AttrParser) -> Sequence[Attribute]:
        with parser.in_angle_brackets():
            spec = parser.parse_str_literal("target name")
        return _parsed(parser, lambda: TargetAttr(StringAttr(spec)).parameters)

    def print_parameters(self, printer: Printer) -> None:
        with printer.in_angle_brackets():
            printer.print_string_literal(self.spec.data)


def module_target(module: Operation) -> str | None:
    """The target the module is compiled for; None before a targeted pass ran."""
    attr = module.attributes.get(TargetAttr.name)
    return attr.spec.data if isinstance(attr, TargetAttr) else None


def set_module_target(module: Operation, spec: str) -> None:
    module.attributes[TargetAttr.name] = TargetAttr(StringAttr(spec))


# ---------------------------------------------------------------------------- tiling


SCHEDULE_OPTIONS = ("a", "acc", "depth", "o_in_s")
"""Tiling entries that pick a buffering variant of a kernel rather than a tile extent
(linear: one A / one ACC buffer; attention: pipeline depth, O kept in the S buffers), so
they may be 0. Every other entry is a tile extent, at least 1."""


@irdl_attr_definition
class TilingAttr(ParametrizedAttribute):
    """`#nm.tile<m = 64, n = 192, k = 96, acc = 1>`: an op's schedule, by the kernel's names:
    tile extents and SCHEDULE_OPTIONS (schedule-tiles chooses it, the kernel's emission
    reads it)."""

    name = "nm.tile"

    dims: ArrayAttr[StringAttr]
    sizes: ArrayAttr[IntAttr]

    def verify(self) -> None:
        names = [d.data for d in self.dims.data]
        if len(names) != len(self.sizes.data):
            raise VerifyException("nm.tile: one size per dimension")
        if not names:
            raise VerifyException("nm.tile: a tiling names at least one dimension")
        if len(set(names)) != len(names):
            raise VerifyException(f"nm.tile: a dimension is named twice in {names}")
        for dim, size in zip(names, self.sizes.data):
            least = 0 if dim in SCHEDULE_OPTIONS else 1
            if size.data < least:
                what = "schedule option" if least == 0 else "tile size"
                raise VerifyException(f"nm.tile: {what} {dim} = {size.data} must be >= {least}")

    @staticmethod
    def of(sizes: Mapping[str, int]) -> "TilingAttr":
        return TilingAttr(ArrayAttr([StringAttr(k) for k in sizes]),
                          ArrayAttr([IntAttr(int(v)) for v in sizes.values()]))

    def as_dict(self) -> dict[str, int]:
        return {d.data: s.data for d, s in zip(self.dims.data, self.sizes.data)}

    @classmethod
    def parse_parameters(cls, parser: AttrParser) -> Sequence[Attribute]:
        def entry() -> tuple[str, int]:
            dim = parser.parse_identifier("tile dimension name")
            parser.parse_punctuation("=")
            return dim, parser.parse_integer(allow_boolean=False)

        entries = parser.parse_comma_separated_list(parser.Delimiter.ANGLE, entry)
        return _parsed(parser, lambda: TilingAttr(
            ArrayAttr([StringAttr(k) for k, _ in entries]),
            ArrayAttr([IntAttr(v) for _, v in entries])).parameters)

    def print_parameters(self, printer: Printer) -> None:
        printer.print_string("<" + ", ".join(f"{k} = {v}" for k, v in self.as_dict().items())
                             + ">")


def tiling(op: Operation) -> dict[str, int]:
    """The tile sizes schedule-tiles chose for `op`."""
    attr = op.attributes.get(TilingAttr.name)
    if not isinstance(attr, TilingAttr):
        raise ValueError(f"{op.name} has no {TilingAttr.name}: run schedule-tiles first")
    return attr.as_dict()


def has_tiling(op: Operation) -> bool:
    return isinstance(op.attributes.get(TilingAttr.name), TilingAttr)


def set_tiling(op: Operation, sizes: Mapping[str, int]) -> None:
    op.attributes[TilingAttr.name] = TilingAttr.of(sizes)


# ---------------------------------------------------------------------------- layout


IDENTITY, TRANSPOSE, NM_PACK = "identity", "transpose", nm_format.LAYOUT_PREFIX
_SPMATMUL = OP_BY_MNEMONIC["spmatmul"]
MAX_PATTERN_M = (1 << next(f.bits for f in _SPMATMUL.all_fields if f.name == "pat_m")) - 1
"""The largest M a spmatmul's `pat_m` field holds."""


@irdl_attr_definition
class LayoutAttr(ParametrizedAttribute):
    """How a parameter [rows, cols] is stored in DRAM, and its element type:

        #nm.layout<identity, f32>        row-major as in the model
        #nm.layout<transpose, f32>       W^T (a kernel asked for it, `Kernel.transposed`)
        #nm.layout<nm_pack 2:4, f32>     N:M packed W^T: the kept values, then their
                                         in-group indices (nmc.common.nm_format)
        #nm.layout<transpose, i8>        int8 W^T, four to a word, then the layer's
        #nm.layout<nm_pack 2:4, i8>      rescale table (docs/INT8.md; the quantize pass)

    n and m are 0 for the dense layouts. A packed layout needs 0 < N < M (N = M is dense)
    and M within the ISA's `pat_m` field. The isa.buffer records keep the text form
    (`text`: "identity", "transpose", "nm_pack:2:4", with ":i8" for int8), which `from_text`
    reads back."""

    name = "nm.layout"

    kind: StringAttr
    n: IntAttr
    m: IntAttr
    element_type: Attribute

    def __init__(self, kind: str, n: int = 0, m: int = 0,
                 element_type: Attribute = Float32Type()):
        super().__init__(StringAttr(kind), IntAttr(n), IntAttr(m), element_type)

    def verify(self) -> None:
        kind, n, m = self.kind.data, self.n.data, self.m.data
        if kind not in (IDENTITY, TRANSPOSE, NM_PACK):
            raise VerifyException(f"nm.layout: '{kind}' is not one of identity, transpose, "
                                  f"{NM_PACK}")
        if kind == NM_PACK and not 0 < n < m <= MAX_PATTERN_M:
            raise VerifyException(f"nm.layout: the pattern {n}:{m} of a packed layout needs "
                                  f"0 < N < M <= {MAX_PATTERN_M}")
        if kind != NM_PACK and (n or m):
            raise VerifyException(f"nm.layout: the {kind} layout has no N:M pattern")
        if not (isinstance(self.element_type, Float32Type) or self.element_type == I8):
            raise VerifyException(f"nm.layout: element type {self.element_type} is not f32 "
                                  f"or i8, the types DRAM holds")
        if self.element_type == I8 and kind == IDENTITY:
            raise VerifyException("nm.layout: int8 weights are stored transposed or packed")

    @property
    def int8(self) -> bool:
        return self.element_type == I8

    @property
    def pattern(self) -> tuple[int, int] | None:
        """(N, M) of a packed layout, None for the dense ones."""
        return (self.n.data, self.m.data) if self.kind.data == NM_PACK else None

    @property
    def text(self) -> str:
        pattern = self.pattern
        base = self.kind.data if pattern is None else nm_format.layout_name(pattern)
        return base + (nm_format.INT8_SUFFIX if self.int8 else "")

    def with_kind(self, kind: str) -> "LayoutAttr":
        """This layout's element type under a dense layout `kind`."""
        return LayoutAttr(kind, element_type=self.element_type)

    @staticmethod
    def from_text(text: str) -> "LayoutAttr":
        """The layout an isa.buffer's `layout` string names; ValueError if none."""
        base, element = nm_format.split_element(text)
        element_type = I8 if element == "i8" else Float32Type()
        pattern = nm_format.parse_layout(base)
        try:
            if pattern is not None:
                return LayoutAttr(NM_PACK, *pattern, element_type)
            if base in (IDENTITY, TRANSPOSE):
                return LayoutAttr(base, element_type=element_type)
        except VerifyException:  # M beyond the ISA's pat_m field
            pass
        raise ValueError(f"unknown layout '{text}'")

    @classmethod
    def parse_parameters(cls, parser: AttrParser) -> Sequence[Attribute]:
        with parser.in_angle_brackets():
            kind = parser.parse_identifier("layout kind")
            n = m = 0
            if kind == NM_PACK:
                n = parser.parse_integer(allow_boolean=False)
                parser.parse_punctuation(":")
                m = parser.parse_integer(allow_boolean=False)
            parser.parse_punctuation(",")
            element_type = parser.parse_type()
        return _parsed(parser, lambda: LayoutAttr(kind, n, m, element_type).parameters)

    def print_parameters(self, printer: Printer) -> None:
        pattern = self.pattern
        printer.print_string(f"<{self.kind.data}")
        if pattern is not None:
            printer.print_string(f" {pattern[0]}:{pattern[1]}")
        printer.print_string(", ")
        printer.print_attribute(self.element_type)
        printer.print_string(">")


I8 = IntegerType(8)


def layout(param: Operation) -> LayoutAttr | None:
    """The DRAM layout of an nm.param; None before prune-and-pack / plan-memory chose it."""
    attr = param.attributes.get(LayoutAttr.name)
    return attr if isinstance(attr, LayoutAttr) else None


def set_layout(param: Operation, value: LayoutAttr) -> None:
    param.attributes[LayoutAttr.name] = value


# ---------------------------------------------------------------------------- quantization


@irdl_attr_definition
class QuantAttr(ParametrizedAttribute):
    """`#nm.quant<input = 0.0123, weights = [0.004, 0.0051, ...]>`: an nm.linear or
    nm.patch_embed computed in int8 (docs/INT8.md): the scale of its input (per tensor)
    and of its weight (per output channel). Written by the quantize pass, read by the
    kernels (the input's quantisation) and the emitter (int8 weights, rescale table)."""

    name = "nm.quant"

    input_scale: FloatAttr
    weight_scales: DenseArrayBase

    def verify(self) -> None:
        scales = [self.input_scale.value.data, *self.weight_scales.get_values()]
        if not scales[1:]:
            raise VerifyException("nm.quant: no weight scales")
        bad = [s for s in scales if not (s > 0 and s != float("inf"))]
        if bad:
            raise VerifyException(f"nm.quant: scale {bad[0]} is not a finite positive number")

    @staticmethod
    def of(input_scale: float, weight_scales: Sequence[float]) -> "QuantAttr":
        return QuantAttr(FloatAttr(float(input_scale), f64),
                         DenseArrayBase.from_list(f64, [float(s) for s in weight_scales]))

    @classmethod
    def parse_parameters(cls, parser: AttrParser) -> Sequence[Attribute]:
        with parser.in_angle_brackets():
            parser.parse_keyword("input")
            parser.parse_punctuation("=")
            s_x = parser.parse_float()
            parser.parse_punctuation(",")
            parser.parse_keyword("weights")
            parser.parse_punctuation("=")
            s_w = parser.parse_comma_separated_list(parser.Delimiter.SQUARE, parser.parse_float)
        return _parsed(parser, lambda: QuantAttr.of(s_x, s_w).parameters)

    def print_parameters(self, printer: Printer) -> None:
        weights = ", ".join(repr(float(s)) for s in self.weight_scales.get_values())
        printer.print_string(f"<input = {float(self.input_scale.value.data)!r}, "
                             f"weights = [{weights}]>")


def quant(op: Operation) -> tuple[float, list[float]] | None:
    """(input scale, weight scales) of an op the quantize pass made int8; None for fp32."""
    attr = op.attributes.get(QuantAttr.name)
    if not isinstance(attr, QuantAttr):
        return None
    return float(attr.input_scale.value.data), [float(s) for s in attr.weight_scales.get_values()]


def set_quant(op: Operation, input_scale: float, weight_scales: Sequence[float]) -> None:
    op.attributes[QuantAttr.name] = QuantAttr.of(input_scale, weight_scales)


_MODEL_SCALES = "nm.model_scales"


def model_scales(module: Operation) -> dict[str, tuple[float, list[float]]]:
    """The int8 scales a quantized model file carries (PT2E; frontend/pt2e.py), by the
    name of the layer's weight (`nm.param`): the module attribute
    `nm.model_scales = {"fc1.weight" = #nm.quant<...>, ...}`; {} for other models."""
    attr = module.attributes.get(_MODEL_SCALES)
    if not isinstance(attr, DictionaryAttr):
        return {}
    return {name: (float(q.input_scale.value.data), [float(s) for s in
                                                    q.weight_scales.get_values()])
            for name, q in attr.data.items() if isinstance(q, QuantAttr)}


def set_model_scales(module: Operation, scales: Mapping[str, tuple[float, Sequence[float]]],
                     ) -> None:
    module.attributes[_MODEL_SCALES] = DictionaryAttr(
        {name: QuantAttr.of(s_x, s_w) for name, (s_x, s_w) in scales.items()})


# ---------------------------------------------------------------------------- DRAM placement


class _OneIntAttr(ParametrizedAttribute):
    """An attribute holding one integer (its only parameter, an IntAttr), printed
    `#nm.<name><value>`."""

    @classmethod
    def parse_parameters(cls, parser: AttrParser) -> Sequence[Attribute]:
        with parser.in_angle_brackets():
            value = parser.parse_integer(allow_boolean=False)
        return _parsed(parser, lambda: cls(IntAttr(value)).parameters)

    def print_parameters(self, printer: Printer) -> None:
        printer.print_string(f"<{self.parameters[0].data}>")


@irdl_attr_definition
class DramAddrAttr(_OneIntAttr):
    """`#nm.addr<4096>`: a word address in DRAM (plan-memory's placement of a tensor or of
    a kernel's scratch space)."""

    name = "nm.addr"

    addr: IntAttr

    def verify(self) -> None:
        if not 0 <= self.addr.data < 1 << ADDR_BITS:
            raise VerifyException(f"nm.addr: {self.addr.data} is not a DRAM word address "
                                  f"(0 .. 2^{ADDR_BITS} - 1)")


def _addr(value: int) -> DramAddrAttr:
    return DramAddrAttr(IntAttr(int(value)))


_SCRATCH = "nm.scratch"
_INPUT_ADDRS = "nm.input_addrs"


def set_dram_addr(op: Operation, addr: int) -> None:
    """Where `op`'s result lives in DRAM."""
    op.attributes[DramAddrAttr.name] = _addr(addr)


def dram_addr_of_op(op: Operation) -> int:
    attr = op.attributes.get(DramAddrAttr.name)
    if not isinstance(attr, DramAddrAttr):
        raise ValueError(f"{op.name} has no {DramAddrAttr.name}: run plan-memory first")
    return attr.addr.data


def set_input_addrs(func: Operation, addrs: Sequence[int]) -> None:
    """Where the function's arguments (the program inputs) live in DRAM."""
    func.attributes[_INPUT_ADDRS] = ArrayAttr([_addr(a) for a in addrs])


def dram_addr(value: SSAValue, func: Operation) -> int:
    """The DRAM address plan-memory gave `value` (an argument of `func` or an op result)."""
    owner = value.owner
    if owner is func.body.block:
        attr = func.attributes.get(_INPUT_ADDRS)
        if not isinstance(attr, ArrayAttr):
            raise ValueError(f"the function has no {_INPUT_ADDRS}: run plan-memory first")
        return attr.data[value.index].addr.data
    return dram_addr_of_op(owner)


def scratch_addr(op: Operation) -> int:
    """The DRAM address of the scratch space plan-memory gave `op`'s kernel."""
    attr = op.attributes.get(_SCRATCH)
    if not isinstance(attr, DramAddrAttr):
        raise ValueError(f"{op.name} has no {_SCRATCH}: run plan-memory first")
    return attr.addr.data


def has_scratch(op: Operation) -> bool:
    return isinstance(op.attributes.get(_SCRATCH), DramAddrAttr)


def set_scratch_addr(op: Operation, addr: int) -> None:
    op.attributes[_SCRATCH] = _addr(addr)


@irdl_attr_definition
class DramWordsAttr(_OneIntAttr):
    """`#nm.dram_words<N>`: the DRAM words the program needs (plan-memory's high mark)."""

    name = "nm.dram_words"

    words: IntAttr

    def verify(self) -> None:
        if not 0 < self.words.data <= 1 << ADDR_BITS:
            raise VerifyException(f"nm.dram_words: {self.words.data} is not a DRAM size "
                                  f"(1 .. 2^{ADDR_BITS})")


def dram_words(module: Operation) -> int:
    attr = module.attributes.get(DramWordsAttr.name)
    if not isinstance(attr, DramWordsAttr):
        raise ValueError(f"the module has no {DramWordsAttr.name}: run plan-memory first")
    return attr.words.data


def set_dram_words(module: Operation, words: int) -> None:
    module.attributes[DramWordsAttr.name] = DramWordsAttr(IntAttr(int(words)))


# ---------------------------------------------------------------------------- frontend records


_MODEL = "nm.model"
_INPUT_NAMES = "nm.input_names"
_OUTPUT_NAMES = "nm.output_names"
_PARAM_ARG = "nm.state_key"


def param_arg_attrs(key: str | None) -> DictionaryAttr:
    """The argument attributes of the torch-level `@main`'s argument: `nm.state_key` names
    the state_dict key of a parameter / buffer / constant argument (None: a program input)."""
    return DictionaryAttr({} if key is None else {_PARAM_ARG: StringAttr(key)})


def param_arg_key(arg_attrs: Attribute) -> str | None:
    """The state_dict key `param_arg_attrs` recorded; None for a program input."""
    if isinstance(arg_attrs, DictionaryAttr):
        key = arg_attrs.data.get(_PARAM_ARG)
        if isinstance(key, StringAttr):
            return key.data
    return None


def model_path(module: Operation) -> str | None:
    """The model file the module was imported from (its parameters' values); None for IR
    built by hand."""
    attr = module.attributes.get(_MODEL)
    return attr.data if isinstance(attr, StringAttr) else None


def set_model_path(module: Operation, path: str) -> None:
    module.attributes[_MODEL] = StringAttr(path)


def _names(func: Operation, key: str) -> list[str]:
    attr = func.attributes.get(key)
    if not isinstance(attr, ArrayAttr):
        raise ValueError(f"the function has no {key}")
    return [s.data for s in attr.data]


def input_names(func: Operation) -> list[str]:
    """The program's input names, one per argument of `@main`."""
    return _names(func, _INPUT_NAMES)


def output_names(func: Operation) -> list[str]:
    """The program's output names, one per result of `@main`."""
    return _names(func, _OUTPUT_NAMES)


def has_input_names(func: Operation) -> bool:
    return isinstance(func.attributes.get(_INPUT_NAMES), ArrayAttr)


def set_io_names(func: Operation, inputs: Sequence[str], outputs: Sequence[str]) -> None:
    func.attributes[_INPUT_NAMES] = ArrayAttr([StringAttr(n) for n in inputs])
    func.attributes[_OUTPUT_NAMES] = ArrayAttr([StringAttr(n) for n in outputs])


# ---------------------------------------------------------------------------- window-prune


_WINDOW_KEEP = "nm.window_keep"


def window_keep(module: Operation) -> dict[str, float] | None:
    """The keep ratio of every Swin block window-prune pruned; None when it did not run."""
    attr = module.attributes.get(_WINDOW_KEEP)
    if not isinstance(attr, DictionaryAttr):
        return None
    return {block: ratio.value.data for block, ratio in attr.data.items()}


def set_window_keep(module: Operation, ratios: Mapping[str, float]) -> None:
    module.attributes[_WINDOW_KEEP] = DictionaryAttr(
        {block: FloatAttr(float(r), Float64Type()) for block, r in ratios.items()})


# ---------------------------------------------------------------------------- lowered program


_LAYER_KINDS = "nm.layer_kinds"
_LAYER_WEIGHTS = "nm.layer_weights"
_PROGRAM_TARGET = "isa.target"
_PROGRAM_TARGET_ID = "isa.target_id"


@dataclass(frozen=True)
class ProgramRecord:
    """What lower-nm-to-isa leaves on the module for the emitter besides the isa ops."""

    target_name: str
    target_id: int
    layer_kinds: dict[str, str]  # layer -> op kind (the debug section)
    layer_weights: dict[str, str]  # linear layer -> its weight's parameter name


def set_program_record(module: Operation, record: ProgramRecord) -> None:
    attrs = module.attributes
    attrs[_PROGRAM_TARGET] = StringAttr(record.target_name)
    attrs[_PROGRAM_TARGET_ID] = IntegerAttr(record.target_id, i64)
    attrs[_LAYER_KINDS] = DictionaryAttr({k: StringAttr(v) for k, v in record.layer_kinds.items()})
    attrs[_LAYER_WEIGHTS] = DictionaryAttr(
        {k: StringAttr(v) for k, v in record.layer_weights.items()})


def program_record(module: Operation) -> ProgramRecord:
    attrs = module.attributes
    if not isinstance(attrs.get(_PROGRAM_TARGET), StringAttr):
        raise ValueError(f"the module has no {_PROGRAM_TARGET}: run lower-nm-to-isa first")
    weights = attrs.get(_LAYER_WEIGHTS)
    return ProgramRecord(
        attrs[_PROGRAM_TARGET].data,
        attrs[_PROGRAM_TARGET_ID].value.data,
        {k: v.data for k, v in attrs[_LAYER_KINDS].data.items()},
        {k: v.data for k, v in weights.data.items()} if weights is not None else {},
    )


NM_ATTRS = (TargetAttr, TilingAttr, LayoutAttr, QuantAttr, DramAddrAttr, DramWordsAttr)
"""The typed attributes, registered with the nm dialect."""

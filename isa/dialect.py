"""The xDSL `isa` dialect: one operation per instruction, generated from `nmc.isa.table`.

The last compiler stages (lower-nm-to-isa, insert-tokens) work on a module whose ops are
instructions in program order, so every pass can print, dump and re-parse the program with
xDSL's tooling before it becomes a prog.bin. Each `OpSpec` becomes an op class `isa.<mnemonic>`
whose properties are its fields, as `IntegerAttr` of type i64 (the generic form then prints
as `<{rows = 16 : i64, ...}>` and parses back exactly); its verifier checks every value with
`nmc.isa.encoding.field_error`, the same check the encoder applies. An optional `layer`
string property names the model layer the instruction came from (the debug section of
prog.bin is built from it). xDSL prints non-ASCII strings as escaped bytes that parse back
as a bytes attribute, so only ASCII layer names survive the text form (module paths are).

`isa.buffer` is the one hand-written op: a DRAM allocation (program input/output, constant
or temporary). Its `shape` is a `DenseArrayBase` of i64 (`array<i64: 1, 197, 192>`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from xdsl.dialects.builtin import I64, DenseArrayBase, IntegerAttr, StringAttr, f64, i64
from xdsl.ir import Dialect, Operation
from xdsl.parser import Parser
from xdsl.printer import Printer
from xdsl.irdl import IRDLOperation, irdl_op_definition, opt_prop_def, prop_def
from xdsl.utils.exceptions import VerifyException

from nmc.common import nm_format
from nmc.isa.encoding import field_error
from nmc.isa.irsyntax import parse_fields, print_fields
from nmc.isa.table import OP_BY_MNEMONIC, OPS, Instr, OpSpec

LAYER_PROP = "layer"
BUFFER_KINDS = ("input", "output", "const", "temp")
BUFFER_LAYOUTS = ("identity", "transpose")
"""How a const buffer's DRAM words relate to its model parameter (see the codegen)."""


class IsaInstrOp(IRDLOperation):
    """Base of the generated instruction ops; `SPEC` is the OpSpec an op class encodes."""

    SPEC: ClassVar[OpSpec]

    def field_values(self) -> dict[str, int]:
        """The raw property values, by field name (missing ones are reported by verify)."""
        return {
            f.name: self.properties[f.name].value.data
            for f in self.SPEC.all_fields
            if isinstance(self.properties.get(f.name), IntegerAttr)
        }

    def verify_(self) -> None:
        self.verify_fields()

    def verify_fields(self) -> None:
        """Every field present, an i64 integer attribute, with a legal value: what makes the
        op an instruction (cheaper than the full op verification, which also runs it)."""
        props = self.properties
        for f in self.SPEC.all_fields:
            attr = props.get(f.name)
            if not isinstance(attr, IntegerAttr) or attr.type != i64:
                raise VerifyException(f"{self.name}: field '{f.name}' must be an i64 integer "
                                      f"property, got {attr}")
            why = field_error(f, attr.value.data)
            if why is not None:
                raise VerifyException(f"{self.name}: {why}")

    @property
    def layer_name(self) -> str | None:
        attr = self.properties.get(LAYER_PROP)
        return attr.data if isinstance(attr, StringAttr) else None

    # Custom syntax, the assembler's spelling of every field (nmc.isa.irsyntax), so that
    # IR dumps of the lowered program read like `nmc disasm`:
    #   isa.matmul wait=load signal=vector a=0x0 w=0x6000 ... accumulate=0 layer "fc1"
    def print(self, printer: Printer) -> None:
        printer.print_string(" " + print_fields(self.SPEC, self.field_values()))
        if self.layer_name is not None:
            printer.print_string(" layer ")
            printer.print_string_literal(self.layer_name)
        printer.print_op_attributes(self.attributes)

    @classmethod
    def parse(cls, parser: Parser) -> "IsaInstrOp":
        values = parse_fields(cls.SPEC, parser)
        props = {name: IntegerAttr(v, i64) for name, v in values.items()}
        if parser.parse_optional_keyword("layer"):
            props[LAYER_PROP] = StringAttr(parser.parse_str_literal())
        attrs = parser.parse_optional_attr_dict()
        return cls.create(properties=props, attributes=attrs)


def _class_name(mnemonic: str) -> str:
    return "".join(part.capitalize() for part in mnemonic.split("_")) + "Op"


def _make_op_class(spec: OpSpec) -> type[IsaInstrOp]:
    namespace: dict[str, object] = {
        "__doc__": f"`{spec.mnemonic}` ({spec.unit.name.lower()} unit): {spec.doc}",
        "__module__": __name__,
        "__qualname__": _class_name(spec.mnemonic),
        "name": f"isa.{spec.mnemonic}",
        "__annotations__": {"SPEC": ClassVar[OpSpec]},
        "SPEC": spec,
        LAYER_PROP: opt_prop_def(StringAttr),
    }
    for f in spec.all_fields:
        clash = f.name in namespace or hasattr(IRDLOperation, f.name)
        assert not clash, f"field '{f.name}' of {spec.mnemonic} clashes with an op attribute"
        namespace[f.name] = prop_def(IntegerAttr[I64])
    return irdl_op_definition(type(_class_name(spec.mnemonic), (IsaInstrOp,), namespace))


INSTR_OPS: dict[str, type[IsaInstrOp]] = {op.mnemonic: _make_op_class(op) for op in OPS}
"""The generated op class of every mnemonic."""
globals().update({cls.__name__: cls for cls in INSTR_OPS.values()})  # HaltOp, LoadOp, ...


@dataclass(frozen=True)
class BufferInfo:
    """The properties of an `isa.buffer` as plain Python values."""

    name: str
    kind: str
    addr: int
    shape: tuple[int, ...]
    param: str | None = None
    layout: str | None = None
    bias: str | None = None  # int8 weights: the bias parameter of the rescale table
    scales: tuple[float, ...] = ()  # int8 weights: the input scale, then the weight scales


@irdl_op_definition
class BufferOp(IRDLOperation):
    """A DRAM allocation: `name` at word `addr`, a dense row-major f32 tensor of `shape`.

    `kind` is input / output (program symbols), const (a model parameter, named by
    `param`, stored with `layout`) or temp (an intermediate).
    """

    name = "isa.buffer"

    buf_name = prop_def(StringAttr, prop_name="name")
    kind = prop_def(StringAttr)
    addr = prop_def(IntegerAttr[I64])
    shape = prop_def(DenseArrayBase[I64])
    param = opt_prop_def(StringAttr)
    layout = opt_prop_def(StringAttr)
    bias = opt_prop_def(StringAttr)
    scales = opt_prop_def(DenseArrayBase)

    def __init__(
        self,
        name: str,
        kind: str,
        addr: int,
        shape: tuple[int, ...] | list[int],
        param: str | None = None,
        layout: str | None = None,
        bias: str | None = None,
        scales: tuple[float, ...] = (),
    ):
        props: dict[str, object] = {
            "name": StringAttr(name),
            "kind": StringAttr(kind),
            "addr": IntegerAttr(addr, i64),
            "shape": DenseArrayBase.from_list(i64, list(shape)),
        }
        if param is not None:
            props["param"] = StringAttr(param)
        if layout is not None:
            props["layout"] = StringAttr(layout)
        if bias is not None:
            props["bias"] = StringAttr(bias)
        if scales:
            props["scales"] = DenseArrayBase.from_list(f64, [float(s) for s in scales])
        super().__init__(properties=props)

    @property
    def shape_values(self) -> tuple[int, ...]:
        return tuple(self.shape.get_values())

    def info(self) -> BufferInfo:
        return BufferInfo(
            self.buf_name.data, self.kind.data, self.addr.value.data, self.shape_values,
            self.param.data if self.param is not None else None,
            self.layout.data if self.layout is not None else None,
            self.bias.data if self.bias is not None else None,
            tuple(float(s) for s in self.scales.get_values()) if self.scales is not None else (),
        )

    def verify_(self) -> None:
        where = f"isa.buffer '{self.buf_name.data}'"
        if self.kind.data not in BUFFER_KINDS:
            raise VerifyException(
                f"{where}: kind '{self.kind.data}' is not one of {', '.join(BUFFER_KINDS)}"
            )
        if self.addr.value.data < 0:
            raise VerifyException(f"{where}: negative address {self.addr.value.data}")
        if any(d < 0 for d in self.shape_values):
            raise VerifyException(f"{where}: negative dimension in shape {list(self.shape_values)}")
        if self.kind.data != "const" and (self.param is not None or self.layout is not None):
            raise VerifyException(f"{where}: only const buffers have 'param' and 'layout'")
        base = nm_format.split_element(self.layout.data)[0] if self.layout is not None else ""
        if (self.layout is not None and base not in BUFFER_LAYOUTS
                and nm_format.parse_layout(base) is None):
            raise VerifyException(
                f"{where}: layout '{self.layout.data}' is not one of "
                f"{', '.join(BUFFER_LAYOUTS)}, nm_pack:N:M (each with :i8 for int8)"
            )


ISA = Dialect("isa", [*INSTR_OPS.values(), BufferOp], [])


def op_class(mnemonic: str) -> type[IsaInstrOp]:
    """The op class of `mnemonic`; KeyError if the ISA has no such instruction."""
    return INSTR_OPS[mnemonic]


def is_instruction_op(op: Operation) -> bool:
    """Whether `op` is one of the generated `isa.<mnemonic>` ops."""
    return isinstance(op, IsaInstrOp)



_INT_ATTRS: dict[int, IntegerAttr] = {}


def int_attr(value: int) -> IntegerAttr:
    """`IntegerAttr(value, i64)`, shared: attributes are immutable, and building one costs
    far more than a lookup (a program has ~10 fields per instruction, few distinct values)."""
    attr = _INT_ATTRS.get(value)
    if attr is None:
        if len(_INT_ATTRS) > 1 << 20:
            _INT_ATTRS.clear()
        attr = _INT_ATTRS[value] = IntegerAttr(value, i64)
    return attr


def instr_to_op(instr: Instr, layer: str | None = None) -> IsaInstrOp:
    """The `isa.<mnemonic>` op holding `instr`'s field values (and the layer name)."""
    props: dict[str, object] = {
        f.name: int_attr(instr.fields[f.name]) for f in instr.spec.all_fields
    }
    if layer is not None:
        props[LAYER_PROP] = StringAttr(layer)
    return op_class(instr.mnemonic).create(properties=props)


def op_to_instr(op: Operation) -> Instr:
    """The instruction an `isa.<mnemonic>` op stands for; VerifyException if a field is
    missing or out of range, ValueError if `op` is not an instruction op."""
    if not isinstance(op, IsaInstrOp):
        raise ValueError(f"'{op.name}' is not an isa instruction op")
    op.verify_fields()  # not the whole op verification: this runs once per instruction
    return Instr(op.SPEC, op.field_values())


assert set(INSTR_OPS) == set(OP_BY_MNEMONIC)

"""The generated xDSL `isa` dialect: op per opcode, exact round trips through generic-form
text, and verifiers that catch out-of-range fields and malformed buffers."""

import io

import pytest
from hypothesis import given
from hypothesis import strategies as st
from xdsl.context import Context
from xdsl.dialects.builtin import Builtin, IntegerAttr, ModuleOp, StringAttr, i32, i64
from xdsl.parser import Parser
from xdsl.printer import Printer
from xdsl.utils.exceptions import VerifyException

from isa_strategies import instrs
from nmc.isa.dialect import (
    ISA,
    BufferInfo,
    BufferOp,
    IsaInstrOp,
    instr_to_op,
    is_instruction_op,
    op_class,
    op_to_instr,
)
from nmc.isa.table import OPS, Instr


def context() -> Context:
    ctx = Context()
    ctx.load_dialect(Builtin)
    ctx.load_dialect(ISA)
    return ctx


def generic(op) -> str:
    out = io.StringIO()
    Printer(out, print_generic_format=True).print_op(op)
    return out.getvalue()


def reparse(module: ModuleOp) -> ModuleOp:
    parsed = Parser(context(), generic(module)).parse_module()
    parsed.verify()
    return parsed


def test_one_op_per_opcode():
    names = {op.name for op in ISA.operations}
    assert names == {f"isa.{op.mnemonic}" for op in OPS} | {"isa.buffer"}
    for spec in OPS:
        cls = op_class(spec.mnemonic)
        assert cls.SPEC is spec and cls.name == f"isa.{spec.mnemonic}"
        props = set(cls.get_irdl_definition().properties)
        assert props == {f.name for f in spec.all_fields} | {"layer"}
    with pytest.raises(KeyError):
        op_class("nop")


@given(instrs, st.none() | st.text(max_size=10))
def test_instr_op_round_trip(instr, layer):
    op = instr_to_op(instr, layer=layer)
    op.verify()
    assert op_to_instr(op) == instr
    assert op.layer_name == layer


# xDSL prints non-ASCII string attributes as escaped bytes that parse back as a bytes
# attribute, so only ASCII layer names survive the text form (module paths are ASCII).
ascii_names = st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=6)


@given(st.lists(st.tuples(instrs, st.none() | ascii_names), max_size=8))
def test_generic_text_round_trip(items):
    ops = [instr_to_op(i, layer) for i, layer in items]
    module = ModuleOp([*ops, BufferOp("x", "input", 0, (1, 197, 192))])
    module.verify()
    parsed = reparse(module)
    assert parsed.is_structurally_equivalent(module)
    got = [(op_to_instr(op), op.layer_name) for op in parsed.ops if isinstance(op, IsaInstrOp)]
    assert got == items


def test_generic_form_spelling():
    op = instr_to_op(Instr.make("matmul", m=16, k=64, n=16, accumulate=1), layer="fc1")
    assert generic(op) == (
        '"isa.matmul"() <{wait = 0 : i64, signal = 0 : i64, a = 0 : i64, w = 0 : i64, '
        'out = 0 : i64, m = 16 : i64, k = 64 : i64, n = 16 : i64, accumulate = 1 : i64, '
        'transpose_w = 0 : i64, '
        'layer = "fc1"}> : () -> ()'
    )


def test_buffers_round_trip():
    bufs = [
        BufferOp("x", "input", 0, (1, 197, 192)),
        BufferOp("y", "output", 0x10000, (1, 1000)),
        BufferOp("fc1.weight", "const", 0x20000, (192, 768), param="blocks.0.mlp.fc1.weight", layout="transpose"),
        BufferOp("t0", "temp", 0x40000, ()),
    ]
    module = ModuleOp(bufs)
    module.verify()
    text = generic(module)
    assert 'shape = array<i64: 1, 197, 192>' in text and 'shape = array<i64>' in text
    parsed = list(reparse(module).ops)
    assert [(b.buf_name.data, b.kind.data, b.addr.value.data, b.shape_values) for b in parsed] == [
        ("x", "input", 0, (1, 197, 192)),
        ("y", "output", 0x10000, (1, 1000)),
        ("fc1.weight", "const", 0x20000, (192, 768)),
        ("t0", "temp", 0x40000, ()),
    ]
    assert parsed[2].param.data == "blocks.0.mlp.fc1.weight" and parsed[2].layout.data == "transpose"
    assert parsed[0].param is None


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("m", 1 << 16, "isa.matmul: field 'm'=65536 does not fit 16 bits"),
        ("a", -1, "isa.matmul: field 'a'=-1 does not fit 32 bits"),
        ("wait", 16, "isa.matmul: field 'wait'=16 does not fit 4 bits"),
    ],
)
def test_verify_rejects_out_of_range_fields(field, value, message):
    op = instr_to_op(Instr.make("matmul"))
    op.properties[field] = IntegerAttr(value, i64)
    with pytest.raises(VerifyException, match=message):
        op.verify()
    with pytest.raises(VerifyException, match=message):
        op_to_instr(op)


def test_verify_rejects_enum_outside_enum_and_bad_types():
    op = instr_to_op(Instr.make("vrow"))
    op.properties["fn"] = IntegerAttr(7, i64)
    with pytest.raises(VerifyException, match="isa.vrow: field 'fn'=7 is not a VRowFn"):
        op.verify()
    op = instr_to_op(Instr.make("vrow"))
    op.properties["rows"] = IntegerAttr(1, i32)
    with pytest.raises(VerifyException):
        op.verify()
    op = instr_to_op(Instr.make("vrow"))
    del op.properties["cols"]
    with pytest.raises(VerifyException, match="property 'cols' expected"):
        op.verify()


def test_verify_error_survives_parsing():
    text = '"builtin.module"() ({\n  "isa.halt"() <{wait = 99 : i64, signal = 0 : i64}> : () -> ()\n}) : () -> ()'
    module = Parser(context(), text).parse_module()
    with pytest.raises(VerifyException, match="isa.halt: field 'wait'=99 does not fit 4 bits"):
        module.verify()


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(name="b", kind="scratch", addr=0, shape=(1,)), "isa.buffer 'b': kind 'scratch' is not one of input, output, const, temp"),
        (dict(name="b", kind="temp", addr=-4, shape=(1,)), "isa.buffer 'b': negative address -4"),
        (dict(name="b", kind="temp", addr=0, shape=(2, -1)), r"isa.buffer 'b': negative dimension in shape \[2, -1\]"),
        (dict(name="b", kind="input", addr=0, shape=(1,), param="w"), "isa.buffer 'b': only const buffers have 'param' and 'layout'"),
        (dict(name="b", kind="const", addr=0, shape=(1,), layout="zigzag"), "isa.buffer 'b': layout 'zigzag' is not one of identity, transpose"),
    ],
)
def test_buffer_verifier(kwargs, message):
    with pytest.raises(VerifyException, match=message):
        BufferOp(**kwargs).verify()


def test_op_to_instr_rejects_other_ops():
    with pytest.raises(ValueError, match="'isa.buffer' is not an isa instruction op"):
        op_to_instr(BufferOp("x", "temp", 0, (1,)))


def test_layer_property_is_a_string():
    op = instr_to_op(Instr.make("halt"), layer="blocks.3.attn")
    assert op.properties["layer"] == StringAttr("blocks.3.attn")
    assert instr_to_op(Instr.make("halt")).layer_name is None


def test_helpers_used_by_the_compiler():
    assert is_instruction_op(instr_to_op(Instr.make("halt")))
    assert not is_instruction_op(BufferOp("x", "temp", 0, (1,)))
    b = BufferOp("w", "const", 64, [3, 2], param="fc.weight", layout="identity")
    b.verify()
    assert b.info() == BufferInfo("w", "const", 64, (3, 2), "fc.weight", "identity")
    assert BufferOp("x", "input", 0, (4,)).info() == BufferInfo("x", "input", 0, (4,))

"""The binary instruction encoding: round trips, the documented bit layout, rejections."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from isa_strategies import instrs
from nmc.isa.encoding import (
    DecodeError,
    EncodeError,
    decode,
    decode_stream,
    encode,
    encode_stream,
)
from nmc.common.errors import NmcError
from nmc.isa.table import OP_BY_MNEMONIC, OPCODE_BITS, OPS, WORD_BYTES, Instr


def shift_of(mnemonic: str, field: str) -> int:
    """Bit offset of a field, computed from the table as docs/PROGRAM_FORMAT.md states it."""
    shift = OPCODE_BITS
    for f in OP_BY_MNEMONIC[mnemonic].all_fields:
        if f.name == field:
            return shift
        shift += f.bits
    raise KeyError(field)


def used_bits(mnemonic: str) -> int:
    return OPCODE_BITS + sum(f.bits for f in OP_BY_MNEMONIC[mnemonic].all_fields)


def word_int(instr: Instr) -> int:
    return int.from_bytes(encode(instr), "little")


@given(instrs)
def test_decode_encode_round_trip(instr):
    word = encode(instr)
    assert len(word) == WORD_BYTES
    assert decode(word) == instr


@given(st.lists(instrs, max_size=20))
def test_stream_round_trip(stream):
    data = encode_stream(stream)
    assert len(data) == WORD_BYTES * len(stream)
    assert decode_stream(data) == stream


@given(instrs)
def test_layout_matches_table(instr):
    """Opcode in the low byte, fields LSB-first in all_fields order, high bits zero."""
    w = word_int(instr)
    assert w & 0xFF == instr.spec.opcode
    for f in instr.spec.all_fields:
        assert (w >> shift_of(instr.mnemonic, f.name)) & f.max_value == instr[f.name]
    assert w >> used_bits(instr.mnemonic) == 0


def test_known_answer_words():
    halt = Instr.make("halt", wait=0b0101, signal=0b1010)
    assert encode(halt) == bytes([0x01, 0xA5]) + bytes(30)
    mm = Instr.make("matmul", a=0x11223344)
    assert encode(mm)[:7] == bytes([0x10, 0x00, 0x44, 0x33, 0x22, 0x11, 0x00])


def test_every_opcode_fits_and_has_distinct_opcode():
    assert len({op.opcode for op in OPS}) == len(OPS)
    for op in OPS:
        assert used_bits(op.mnemonic) <= 8 * WORD_BYTES


def test_unknown_opcode_names_pc():
    data = encode_stream([Instr.make("halt")]) + bytes([0xFF]) + bytes(31)
    with pytest.raises(DecodeError, match=r"^pc 1: unknown opcode 0xff \(known: 0x01, "):
        decode_stream(data)
    with pytest.raises(DecodeError, match=r"^pc 7: unknown opcode 0x00"):
        decode(bytes(32), pc=7)


@pytest.mark.parametrize("op", OPS, ids=lambda op: op.mnemonic)
def test_nonzero_unused_bits(op):
    w = word_int(Instr.make(op.mnemonic)) | 1 << used_bits(op.mnemonic)
    with pytest.raises(DecodeError, match=rf"^pc 3: {op.mnemonic}: unused bits \[\d+, 256\) are not zero"):
        decode(w.to_bytes(32, "little"), pc=3)
    top = word_int(Instr.make(op.mnemonic)) | 1 << 255
    with pytest.raises(DecodeError, match="unused bits"):
        decode(top.to_bytes(32, "little"))


def test_enum_value_outside_enum():
    w = word_int(Instr.make("vun")) | 15 << shift_of("vun", "fn")
    with pytest.raises(DecodeError, match=r"^pc 0: vun: field 'fn'=15 is not a VUnFn \(copy, gelu"):
        decode(w.to_bytes(32, "little"))
    w = word_int(Instr.make("load")) | 3 << shift_of("load", "mem")
    with pytest.raises(DecodeError, match=r"load: field 'mem'=3 is not a Mem"):
        decode(w.to_bytes(32, "little"))


def test_stream_length_not_multiple_of_word():
    with pytest.raises(DecodeError, match=r"^pc 1: instruction stream of 40 bytes is not a multiple of 32 \(8 trailing bytes\)"):
        decode_stream(encode(Instr.make("halt")) + bytes(8))


def test_single_word_wrong_length():
    with pytest.raises(DecodeError, match="pc 0: an instruction is 32 bytes, got 31"):
        decode(bytes(31))


def test_decode_error_is_nmc_error():
    assert issubclass(DecodeError, NmcError) and issubclass(EncodeError, NmcError)


def test_encode_rejects_what_decode_would():
    fields = dict(Instr.make("vun").fields)
    with pytest.raises(EncodeError, match="vun: field 'fn'=9 is not a VUnFn"):
        encode(Instr(OP_BY_MNEMONIC["vun"], {**fields, "fn": 9}))
    with pytest.raises(EncodeError, match="vun: field 'rows'=65536 does not fit 16 bits"):
        encode(Instr(OP_BY_MNEMONIC["vun"], {**fields, "rows": 1 << 16}))
    with pytest.raises(EncodeError, match="vun: field 'rows'=-1 does not fit 16 bits"):
        encode(Instr(OP_BY_MNEMONIC["vun"], {**fields, "rows": -1}))
    with pytest.raises(EncodeError, match="vun: field 'imm' is missing"):
        encode(Instr(OP_BY_MNEMONIC["vun"], {k: v for k, v in fields.items() if k != "imm"}))
    with pytest.raises(EncodeError, match="vun: unknown field"):
        encode(Instr(OP_BY_MNEMONIC["vun"], {**fields, "bogus": 1}))


def test_a_long_stream_round_trips():
    """A DeiT program holds ~100k instructions: a long stream of mixed instructions decodes
    to what was encoded, in order. (Its speed is not a unit test's business: a wall-clock
    bound failed on a loaded machine; load time is in the bench scripts' numbers.)"""
    program = [Instr.make("vrow", rows=3 + i % 5, cols=4, imm=0x3F800000) if i % 2
               else Instr.make("load", rows=1 + i % 7, cols=8, dram=i, stride=8)
               for i in range(20000)]
    decoded = decode_stream(encode_stream(program))
    assert [(d.mnemonic, d.fields) for d in decoded] == [(p.mnemonic, p.fields)
                                                          for p in program]

"""Binary encoding of instructions, derived from `nmc.isa.table`.

An instruction is one 256-bit little-endian word: the opcode in bits [0, 8), then the
fields of `spec.all_fields` in order, each packed LSB first right after the previous one;
the bits above the last field are zero. Nothing here names an opcode or a field: the bit
layout of every instruction is computed once from `OPS`, so adding an `OpSpec` to the table
is enough for it to encode and decode.

Decoding is the boundary where untrusted bytes (a prog.bin from disk) become `Instr`s, so it
rejects everything the table does not allow (unknown opcode, nonzero unused bits, enum values
outside their enum) with a `DecodeError` naming the pc. Encoding refuses the same things, so
whatever `encode` accepts, `decode` gives back unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

from nmc.common.errors import NmcError
from nmc.isa.table import OPCODE_BITS, OPS, WORD_BYTES, Field, Instr, OpSpec


class DecodeError(NmcError):
    """Bytes that are not a valid instruction stream."""


class EncodeError(NmcError):
    """An `Instr` whose field values cannot be encoded (do not fit, not in their enum)."""


def field_error(f: Field, value: int) -> str | None:
    """Why `value` is not a legal value of field `f`, or None if it is.

    The one definition of "legal field value", shared by the encoder, the decoder, the
    assembler and the `isa` dialect's verifier.
    """
    if not isinstance(value, int) or isinstance(value, bool):
        return f"field '{f.name}' must be an integer, got {value!r}"
    if not 0 <= value <= f.max_value:
        return f"field '{f.name}'={value} does not fit {f.bits} bits"
    if f.enum is not None and value not in _ENUM_VALUES[f.enum]:
        names = ", ".join(e.name.lower() for e in f.enum)
        return f"field '{f.name}'={value} is not a {f.enum.__name__} ({names})"
    return None


@dataclass(frozen=True)
class _Slot:
    """Where one field lives in the word."""

    field: Field
    shift: int
    mask: int
    allowed: frozenset[int] | None  # enum fields: the legal values


@dataclass(frozen=True)
class _Layout:
    spec: OpSpec
    slots: tuple[_Slot, ...]
    used_bits: int  # bits [used_bits, 256) must be zero


_ENUM_VALUES: dict[type, frozenset[int]] = {
    f.enum: frozenset(int(e) for e in f.enum)
    for op in OPS
    for f in op.all_fields
    if f.enum is not None
}


def _layout(spec: OpSpec) -> _Layout:
    slots, shift = [], OPCODE_BITS
    for f in spec.all_fields:
        allowed = _ENUM_VALUES[f.enum] if f.enum is not None else None
        slots.append(_Slot(f, shift, f.max_value, allowed))
        shift += f.bits
    return _Layout(spec, tuple(slots), shift)


LAYOUTS: dict[int, _Layout] = {op.opcode: _layout(op) for op in OPS}
"""Bit layout of every opcode, computed once from the table."""

_OPCODE_MASK = (1 << OPCODE_BITS) - 1
_KNOWN_OPCODES = ", ".join(f"0x{op.opcode:02x}" for op in OPS)


def encode(instr: Instr) -> bytes:
    """One instruction as its 32-byte little-endian word. Raises EncodeError if a field is
    missing, unknown, or holds a value that `decode` would reject."""
    layout = LAYOUTS.get(instr.spec.opcode)
    if layout is None or layout.spec != instr.spec:
        raise EncodeError(f"{instr.spec.mnemonic}: opcode 0x{instr.spec.opcode:02x} is not in the ISA table")
    values = instr.fields
    extra = set(values) - set(layout.spec.field_by_name)
    if extra:
        raise EncodeError(f"{instr.mnemonic}: unknown field(s) {', '.join(sorted(extra))}")
    word = layout.spec.opcode
    for slot in layout.slots:
        name = slot.field.name
        if name not in values:
            raise EncodeError(f"{instr.mnemonic}: field '{name}' is missing")
        v = values[name]
        why = field_error(slot.field, v)
        if why is not None:
            raise EncodeError(f"{instr.mnemonic}: {why}")
        word |= v << slot.shift
    return word.to_bytes(WORD_BYTES, "little")


def encode_stream(instrs: Iterable[Instr]) -> bytes:
    """The concatenated words of `instrs`."""
    return b"".join(encode(i) for i in instrs)


def _decode_int(word: int, pc: int) -> Instr:
    layout = LAYOUTS.get(word & _OPCODE_MASK)
    if layout is None:
        raise DecodeError(
            f"pc {pc}: unknown opcode 0x{word & _OPCODE_MASK:02x} (known: {_KNOWN_OPCODES})"
        )
    if word >> layout.used_bits:
        raise DecodeError(
            f"pc {pc}: {layout.spec.mnemonic}: unused bits [{layout.used_bits}, 256) are not zero"
        )
    fields = {}
    for slot in layout.slots:
        v = (word >> slot.shift) & slot.mask
        if slot.allowed is not None and v not in slot.allowed:
            raise DecodeError(f"pc {pc}: {layout.spec.mnemonic}: {field_error(slot.field, v)}")
        fields[slot.field.name] = v
    return Instr(layout.spec, fields)


def decode(word: bytes, pc: int = 0) -> Instr:
    """The instruction in one 32-byte word; `pc` only labels error messages."""
    if len(word) != WORD_BYTES:
        raise DecodeError(f"pc {pc}: an instruction is {WORD_BYTES} bytes, got {len(word)}")
    return _decode_int(int.from_bytes(word, "little"), pc)


def decode_stream(data: bytes) -> list[Instr]:
    """Every instruction of an encoded stream (pc = index in the stream)."""
    if len(data) % WORD_BYTES:
        raise DecodeError(
            f"pc {len(data) // WORD_BYTES}: instruction stream of {len(data)} bytes is not a "
            f"multiple of {WORD_BYTES} ({len(data) % WORD_BYTES} trailing bytes)"
        )
    view = memoryview(data)
    from_bytes = int.from_bytes
    return [
        _decode_int(from_bytes(view[off : off + WORD_BYTES], "little"), pc)
        for pc, off in enumerate(range(0, len(data), WORD_BYTES))
    ]

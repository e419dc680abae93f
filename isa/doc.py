"""docs/ISA.md, generated from the ISA table so the reference cannot drift from the code.

    python -m nmc.isa.doc > docs/ISA.md      (tests/test_isa_doc.py checks it is current)
"""

from __future__ import annotations

from nmc.isa.table import (
    COMMON_FIELDS, OPCODE_BITS, OPS, QUEUE_UNITS, WORD_BITS, Field, Mem, __doc__ as TABLE_DOC,
)

INTRO = f"""# The nmc ISA

Generated from `isa/table.py` by `python -m nmc.isa.doc`; do not edit by hand.

Machine model:
{TABLE_DOC.split("Machine model", 1)[1].split(chr(10), 1)[1].strip()}

Every instruction is one {WORD_BITS}-bit little-endian word: the opcode in bits 0..{OPCODE_BITS - 1},
then the fields of the instruction in the order listed, least significant first; unused high
bits are zero. Token masks have one bit per unit: {", ".join(f"bit {i} = {u.name.lower()}" for i, u in enumerate(QUEUE_UNITS))}.
Memories: {", ".join(f"{m.value} = {m.name.lower()}" for m in Mem)}. Timing of every instruction:
`runtime/timing.py`.
"""


def _value_text(f: Field) -> str:
    if f.kind == "enum":
        return ", ".join(f"{e.value}={e.name.lower()}" for e in f.enum)
    return {"mask": "unit mask", "f32": "IEEE-754 single (raw bits)"}.get(f.kind, "unsigned")


def _field_rows(fields: tuple[Field, ...], first_bit: int) -> list[str]:
    rows, bit = [], first_bit
    for f in fields:
        rows.append(f"| `{f.name}` | {bit}..{bit + f.bits - 1} | {f.bits} | {_value_text(f)} | {f.doc} |")
        bit += f.bits
    return rows


def render() -> str:
    out = [INTRO]
    out.append("## Fields common to every instruction\n")
    out.append("| field | bits | width | values | meaning |\n|---|---|---|---|---|")
    out += _field_rows(COMMON_FIELDS, OPCODE_BITS)
    out.append("\n## Instructions\n")
    out.append("| opcode | mnemonic | unit | what it does |\n|---|---|---|---|")
    out += [f"| 0x{op.opcode:02x} | `{op.mnemonic}` | {op.unit.name.lower()} | {op.doc} |"
            for op in OPS]
    for op in OPS:
        out.append(f"\n### `{op.mnemonic}` (0x{op.opcode:02x}, {op.unit.name.lower()} unit)\n")
        out.append(op.doc + "\n")
        if op.fields:
            start = OPCODE_BITS + sum(f.bits for f in COMMON_FIELDS)
            out.append("| field | bits | width | values | meaning |\n|---|---|---|---|---|")
            out += _field_rows(op.fields, start)
    return "\n".join(out) + "\n"


if __name__ == "__main__":
    print(render(), end="")

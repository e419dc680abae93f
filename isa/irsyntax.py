"""The field syntax of the `isa` dialect's instruction ops in xDSL IR text.

It spells every field as the assembler does (`nmc.isa.asm`: masks as unit names joined by
`|`, enums by name, addresses in hex), within what the MLIR lexer accepts: an f32 field is
a float literal with a decimal point, or, when that cannot hold its exact bits (NaN
payloads), a hex integer of the raw bits.
"""

from __future__ import annotations

import numpy as np
from xdsl.parser import Parser

from nmc.isa.asm import _FORMAT, _PARSE
from nmc.isa.table import Field, OpSpec, bits_f32, f32_bits


def _f32_text(bits: int) -> str:
    x = np.float32(bits_f32(bits))
    if np.isfinite(x):
        text = (np.format_float_positional(x, unique=True) if x == 0 or 1e-4 <= abs(x) < 1e6
                else np.format_float_scientific(x, unique=True))
        if f32_bits(float(text)) == bits:
            return text
    return f"{bits:#x}"


def print_fields(spec: OpSpec, values: dict[str, int]) -> str:
    return " ".join(
        f"{f.name}={_f32_text(values[f.name]) if f.kind == 'f32' else _FORMAT[f.kind](f, values[f.name])}"
        for f in spec.all_fields)


def _parse_value(f: Field, parser: Parser) -> int:
    if f.kind == "f32":
        number = parser.parse_number()
        return number if isinstance(number, int) else f32_bits(number)
    if f.kind == "uint":
        return parser.parse_integer(allow_boolean=False)
    if f.kind == "mask":
        if parser.parse_optional_punctuation("-"):
            return 0
        names = [parser.parse_identifier()]
        while parser.parse_optional_punctuation("|"):
            names.append(parser.parse_identifier())
        text = "|".join(names)
    else:
        text = parser.parse_identifier()
    try:
        return _PARSE[f.kind](f, text)
    except ValueError as e:
        parser.raise_error(str(e))


def parse_fields(spec: OpSpec, parser: Parser) -> dict[str, int]:
    values = {}
    for f in spec.all_fields:
        parser.parse_keyword(f.name)
        parser.parse_punctuation("=")
        values[f.name] = _parse_value(f, parser)
    return values



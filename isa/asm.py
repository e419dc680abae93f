"""Assembly text for programs: a human-readable, editable, exact spelling of prog.bin.

`assemble(disassemble(p))` re-encodes to the same prog.bin bytes, so the text form can be
used to inspect, diff, hand-edit and write test programs. The lark grammar is generated
from `nmc.isa.table.OPS` (one alternative per mnemonic, each listing that opcode's field
names), and field values are spelled by `Field.kind`; nothing here lists opcodes by hand.

Syntax (one statement per line, `#` starts a comment):

    .target sta-ref 1                        # target name and id
    .dram_words 268435456
    .meta {"opt_level":2}                    # a JSON object, merged with other .meta lines
    .symbol input x f32[1,197,192] 0x0       # kind name dtype[shape] addr
    .const 0x1000 4 AACAPwAAAEAAAEBAAACAQA== # addr count base64(little-endian f32)
    .layer blocks.0.mlp.fc1 linear 0 1       # name kind start_pc end_pc (end exclusive)
    matmul wait=load signal=vector a=0x0 w=0x100 out=0x0 m=16 k=64 n=16 accumulate=1

Field values: uint as decimal or 0x-hex (32-bit fields, the addresses, are written in hex);
masks as `|`-joined unit names (`load|matrix`) or `-` for none; enums by lower-case name
(`mem=spad`, `fn=gelu`); f32 as a float literal (`1e-05`, `-inf`, `nan`) or as raw bits
`0x7fc00001f32`. Omitted fields are 0. Names that are not plain words are JSON strings.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from functools import lru_cache
from typing import Any, Callable

import numpy as np
from lark import Lark, Token, Transformer
from lark.exceptions import UnexpectedEOF, UnexpectedInput, UnexpectedToken

from nmc.isa.container import (
    SYMBOL_KINDS,
    LayerRange,
    Program,
    ProgramFormatError,
    Symbol,
    canonical_json,
    validate_program,
)
from nmc.isa.encoding import field_error
from nmc.common.errors import NmcError
from nmc.common.json_strict import parse_json
from nmc.isa.table import (
    ADDR_BITS, OP_BY_MNEMONIC, OPS, QUEUE_UNITS, Field, Instr, bits_f32, f32_bits,
)


class AsmError(NmcError):
    """Assembly text that is not a valid program; the message names line and column."""


# --------------------------------------------------------------------------------------
# Field values, by Field.kind: one formatter and one parser per kind.

_UNIT_BITS = {u.name.lower(): 1 << i for i, u in enumerate(QUEUE_UNITS)}
_F32_BITS = re.compile(r"0x([0-9a-fA-F]{1,8})f32")


def _fmt_uint(f: Field, v: int) -> str:
    return f"{v:#x}" if f.bits == ADDR_BITS else str(v)


def _fmt_mask(f: Field, v: int) -> str:
    if v == 0:
        return "-"
    if v >> len(QUEUE_UNITS):
        return str(v)
    return "|".join(name for name, bit in _UNIT_BITS.items() if v & bit)


def _fmt_enum(f: Field, v: int) -> str:
    try:
        return f.enum(v).name.lower()
    except ValueError:
        return str(v)  # not encodable anyway; the assembler will say so




def _fmt_f32(f: Field, v: int) -> str:
    text = str(np.float32(bits_f32(v)))
    try:
        if _parse_f32(text) == v:
            return text
    except ValueError:
        pass
    return f"{v:#010x}f32"  # NaN payloads, -nan


def _parse_int(text: str) -> int:
    try:
        return int(text, 0)
    except ValueError:
        raise ValueError(f"'{text}' is not an integer") from None


def _parse_uint(f: Field, text: str) -> int:
    return _parse_int(text)


def _parse_mask(f: Field, text: str) -> int:
    if text == "-":
        return 0
    if text[:1].isdigit():
        return _parse_int(text)
    value = 0
    for name in text.split("|"):
        if name not in _UNIT_BITS:
            raise ValueError(
                f"bad unit name '{name}' in mask (units: {', '.join(_UNIT_BITS)}, or - for none)"
            )
        value |= _UNIT_BITS[name]
    return value


def _parse_enum(f: Field, text: str) -> int:
    member = f.enum.__members__.get(text.upper())
    if member is None or text != text.lower():
        names = ", ".join(e.name.lower() for e in f.enum)
        raise ValueError(f"bad {f.enum.__name__} name '{text}' for field '{f.name}' (expected {names})")
    return int(member)


def _parse_f32(text: str) -> int:
    m = _F32_BITS.fullmatch(text)
    if m:
        return int(m.group(1), 16)
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"'{text}' is not a float (or 0x<8 hex digits>f32 bits)") from None
    try:
        return f32_bits(value)
    except OverflowError:
        raise ValueError(f"{text} does not fit f32") from None


_FORMAT: dict[str, Callable[[Field, int], str]] = {
    "uint": _fmt_uint, "mask": _fmt_mask, "enum": _fmt_enum, "f32": _fmt_f32,
}
_PARSE: dict[str, Callable[[Field, str], int]] = {
    "uint": _parse_uint, "mask": _parse_mask, "enum": _parse_enum,
    "f32": lambda f, text: _parse_f32(text),
}
assert {f.kind for op in OPS for f in op.all_fields} <= set(_FORMAT), "a Field.kind has no spelling"


# --------------------------------------------------------------------------------------
# Disassembly.

_BARE = re.compile(r"[A-Za-z0-9_.:/\-\[\]]+", re.ASCII)


def _word(text: str) -> str:
    """A name as one token: bare when it is a plain word, else a JSON string."""
    return text if _BARE.fullmatch(text) and text != "-" else json.dumps(text, ensure_ascii=True)


def disassemble_instr(instr: Instr) -> str:
    """One instruction as an assembly line (no comment)."""
    parts = [instr.mnemonic]
    for f in instr.spec.all_fields:
        parts.append(f"{f.name}={_FORMAT[f.kind](f, instr.fields[f.name])}")
    return " ".join(parts)


def disassemble(program: Program) -> str:
    """The whole program as assembly text; `assemble` gives back identical prog.bin bytes."""
    p = program
    lines = [
        "# nmc assembly",
        f".target {_word(p.target_name)} {p.target_id}",
        f".dram_words {p.dram_words}",
    ]
    lines += [f".meta {canonical_json({k: p.meta[k]})}" for k in sorted(p.meta)]
    for s in p.symbols:
        shape = ",".join(str(d) for d in s.shape)
        lines.append(f".symbol {s.kind} {_word(s.name)} {s.dtype}[{shape}] {s.addr:#x}")
    for addr, data in p.constants:
        raw = data.astype("<f4", copy=False).tobytes()
        text = base64.b64encode(raw).decode("ascii") if raw else "-"
        lines.append(f".const {addr:#x} {data.size} {text}")
    starts: dict[int, list[LayerRange]] = {}
    for r in p.debug:
        lines.append(f".layer {_word(r.name)} {_word(r.kind)} {r.start_pc} {r.end_pc}")
        starts.setdefault(r.start_pc, []).append(r)
    for pc, instr in enumerate(p.instructions):
        for r in starts.get(pc, ()):
            lines.append(f"# layer {_word(r.name)} ({_word(r.kind)}): pc {r.start_pc}..{r.end_pc}")
        lines.append(f"{disassemble_instr(instr)}  # {pc}")
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------------------
# The grammar, generated from the table.


_VALUE = r"[^\s#=]*"  # a field value: everything up to blank, comment or '='


def _term(prefix: str, name: str) -> str:
    return f"{prefix}_{name.upper()}"


def grammar() -> str:
    """The lark grammar of assembly text: one `instr` alternative per OpSpec, whose field
    names are that opcode's fields. Values are checked by Field.kind after parsing."""
    field_names = sorted({f.name for op in OPS for f in op.all_fields})
    instr_alts = [
        f'{_term("M", op.mnemonic)} ({" | ".join(_term("F", f.name) for f in op.all_fields)})*'
        for op in OPS
    ]
    rules = [
        "start: (_line? _NL)* _line?",
        "_line: instr | directive | meta",
        "instr: " + "\n     | ".join(instr_alts),
        "directive: DIRECTIVE WORD*",
        "meta: META JSON",
        # \b keeps `loadx` from lexing as `load` + `x`, so errors name the whole word.
        *(f'{_term("M", op.mnemonic)}: /{re.escape(op.mnemonic)}\\b/' for op in OPS),
        # `name=value` is one token: a third of the tokens for the LALR parser to feed.
        *(f'{_term("F", n)}: /{re.escape(n)}[ \\t]*=[ \\t]*{_VALUE}/' for n in field_names),
        f"DIRECTIVE: /\\.({'|'.join(_DIRECTIVES)})\\b/",
        "META: /\\.meta\\b/",
        'JSON: /\\{[^\\n\\r]*/',
        'WORD: /"(?:[^"\\\\\\n\\r]|\\\\.)*"|[^\\s#"]+/',
        "COMMENT: /#[^\\n]*/",
        "_NL: /\\r?\\n/",
        "%ignore /[ \\t\\f]+/",
        "%ignore COMMENT",
    ]
    return "\n".join(rules) + "\n"


class _Tree(Transformer):
    """Turns parse-tree nodes into statements; stateless so one parser serves all calls."""

    def start(self, children):
        return children

    def instr(self, children):
        return ("instr", children[0], children[1:])

    def directive(self, children):
        return ("directive", children[0], children[1:])

    def meta(self, children):
        return ("meta", children[0], children[1:])


@lru_cache(maxsize=1)
def _parser() -> Lark:
    return Lark(grammar(), parser="lalr", lexer="contextual", transformer=_Tree())


# --------------------------------------------------------------------------------------
# Assembly.


class _Assembler:
    """Builds a Program from parsed statements; errors carry source:line:column."""

    def __init__(self, source: str):
        self.source = source
        self.target: tuple[str, int] | None = None
        self.dram_words: int | None = None
        self.instructions: list[Instr] = []
        self.constants: list[tuple[int, np.ndarray]] = []
        self.symbols: list[Symbol] = []
        self.debug: list[LayerRange] = []
        self.meta: dict[str, Any] = {}

    def error(self, tok: Token, what: str, offset: int = 0) -> AsmError:
        return AsmError(f"{self.source}:{tok.line}:{tok.column + offset}: {what}")

    def instr(self, mnemonic: Token, args: list[Token]) -> None:
        spec = OP_BY_MNEMONIC[str(mnemonic)]
        values: dict[str, int] = {}
        for tok in args:
            name, _, text = str(tok).partition("=")
            name, text = name.rstrip(), text.lstrip()
            at = len(tok) - len(text)  # column offset of the value
            f = spec.field_by_name[name]
            if f.name in values:
                raise self.error(tok, f"{spec.mnemonic}: field '{f.name}' given twice")
            if not text:
                raise self.error(tok, f"{spec.mnemonic}: missing value for field '{f.name}'", at)
            try:
                v = _PARSE[f.kind](f, text)
            except ValueError as e:
                raise self.error(tok, f"{spec.mnemonic}: {e}", at) from None
            why = field_error(f, v)
            if why is not None:
                raise self.error(tok, f"{spec.mnemonic}: {why}", at)
            values[f.name] = v
        self.instructions.append(
            Instr(spec, {f.name: values.get(f.name, 0) for f in spec.all_fields})
        )

    def meta_line(self, kw: Token, args: list[Token]) -> None:
        tok = args[0]
        try:
            value, end = json.JSONDecoder().raw_decode(str(tok))
            rest = str(tok)[end:].strip()
            if rest and not rest.startswith("#"):
                raise ValueError(f"unexpected text after the JSON object: {rest!r}")
            value = parse_json(str(tok)[:end])
        except ValueError as e:
            raise self.error(tok, f".meta: bad JSON: {e}") from None
        for k, v in value.items():
            if k in self.meta:
                raise self.error(tok, f".meta: key '{k}' given twice")
            self.meta[k] = v

    def directive(self, kw: Token, args: list[Token]) -> None:
        name = str(kw)[1:]
        params, handler = _DIRECTIVES[name]
        if len(args) != len(params):
            where = args[len(params)] if len(args) > len(params) else kw
            raise self.error(
                where,
                f".{name} takes {len(params)} arguments ({' '.join(params)}), got {len(args)}",
            )
        try:
            handler(self, *(_unquote(a) for a in args))
        except ValueError as e:
            raise self.error(kw, f".{name}: {e}") from None

    # Directive handlers: arguments are unquoted strings; ValueError = bad argument.

    def d_target(self, name: str, target_id: str) -> None:
        if self.target is not None:
            raise ValueError("given twice")
        self.target = (name, _parse_int(target_id))

    def d_dram_words(self, words: str) -> None:
        if self.dram_words is not None:
            raise ValueError("given twice")
        self.dram_words = _parse_int(words)

    def d_symbol(self, kind: str, name: str, type_: str, addr: str) -> None:
        if kind not in SYMBOL_KINDS:
            raise ValueError(f"kind '{kind}' is not one of {', '.join(SYMBOL_KINDS)}")
        m = re.fullmatch(r"(\w+)\[([0-9,\s]*)\]", type_)
        if not m:
            raise ValueError(f"'{type_}' is not of the form f32[d0,d1,...]")
        dims = m.group(2).strip()
        shape = tuple(_parse_int(d) for d in dims.split(",")) if dims else ()
        self.symbols.append(Symbol(name, kind, shape, m.group(1), _parse_int(addr)))

    def d_const(self, addr: str, count: str, data: str) -> None:
        n = _parse_int(count)
        try:
            raw = b"" if data == "-" else base64.b64decode(data, validate=True)
        except binascii.Error as e:
            raise ValueError(f"bad base64 data: {e}") from None
        if len(raw) != 4 * n:
            raise ValueError(f"count is {n} words but the data holds {len(raw) / 4:g}")
        self.constants.append((_parse_int(addr), np.frombuffer(raw, "<f4").astype(np.float32)))

    def d_layer(self, name: str, kind: str, start: str, end: str) -> None:
        self.debug.append(LayerRange(name, kind, _parse_int(start), _parse_int(end)))

    def program(self) -> Program:
        if self.target is None:
            raise AsmError(f"{self.source}: missing .target directive")
        if self.dram_words is None:
            raise AsmError(f"{self.source}: missing .dram_words directive")
        p = Program(
            self.target[0], self.target[1], self.dram_words, self.instructions,
            self.constants, self.symbols, self.debug, self.meta,
        )
        try:
            validate_program(p)
        except ProgramFormatError as e:
            raise AsmError(f"{self.source}: {e}") from None
        return p


_DIRECTIVES: dict[str, tuple[tuple[str, ...], Callable[..., None]]] = {
    "target": (("name", "id"), _Assembler.d_target),
    "dram_words": (("words",), _Assembler.d_dram_words),
    "symbol": (("kind", "name", "dtype[shape]", "addr"), _Assembler.d_symbol),
    "const": (("addr", "count", "base64"), _Assembler.d_const),
    "layer": (("name", "kind", "start_pc", "end_pc"), _Assembler.d_layer),
}


def _unquote(tok: Token) -> str:
    text = str(tok)
    if text.startswith('"'):
        try:
            return json.loads(text)
        except ValueError:
            raise ValueError(f"bad string literal {text}") from None
    return text


def _syntax_error(e: UnexpectedInput, text: str, source: str) -> AsmError:
    """A lark error, said in the terms of the ISA (unknown mnemonic / field, ...)."""
    line, col = e.line, e.column
    if isinstance(e, UnexpectedEOF) or line < 1:
        return AsmError(f"{source}: unexpected end of input")
    lines = text.split("\n")
    src_line = lines[line - 1] if line <= len(lines) else ""
    word_m = re.match(r"[^\s#=]*", src_line[col - 1 :])
    word = word_m.group(0) if word_m else ""
    if not word.isprintable():
        word = ascii(word)[1:-1]
    expected = set(e.expected if isinstance(e, UnexpectedToken) else e.allowed or ())
    where = f"{source}:{line}:{col}"
    if any(t.startswith("M_") for t in expected):
        if word.startswith("."):
            known = ", ".join(["." + d for d in _DIRECTIVES] + [".meta"])
            return AsmError(f"{where}: unknown directive '{word}' (known: {known})")
        known = ", ".join(op.mnemonic for op in OPS)
        return AsmError(f"{where}: unknown mnemonic '{word}' (known: {known})")
    head = re.match(r"\s*(\w*)", src_line).group(1)
    spec = OP_BY_MNEMONIC.get(head)
    if spec is not None and any(t.startswith("F_") for t in expected):
        fields = ", ".join(f.name for f in spec.all_fields)
        if not word:
            return AsmError(f"{where}: {spec.mnemonic}: expected field=value, got '{src_line[col - 1]}'")
        if word in spec.field_by_name:
            return AsmError(f"{where}: {spec.mnemonic}: expected '=' after field '{word}'")
        return AsmError(f"{where}: unknown field '{word}' for {spec.mnemonic} (fields: {fields})")
    if "JSON" in expected:
        return AsmError(f"{where}: .meta: expected a JSON object")
    got = word or src_line[col - 1 : col]
    return AsmError(f"{where}: unexpected '{got}'")


def assemble(text: str, source: str = "<input>") -> Program:
    """Parse assembly text into a Program. Raises AsmError naming source:line:column."""
    try:
        statements = _parser().parse(text)
    except UnexpectedInput as e:
        raise _syntax_error(e, text, source) from None
    asm = _Assembler(source)
    for kind, head, args in statements:
        if kind == "instr":
            asm.instr(head, args)
        elif kind == "directive":
            asm.directive(head, args)
        else:
            asm.meta_line(head, args)
    return asm.program()

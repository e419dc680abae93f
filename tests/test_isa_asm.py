"""Assembly text: exact round trips to prog.bin bytes, the syntax, and error messages."""

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings

from isa_strategies import instrs, programs
from nmc.isa.asm import AsmError, assemble, disassemble, disassemble_instr, grammar
from nmc.isa.container import LayerRange, Program, Symbol, program_to_bytes
from nmc.common.errors import NmcError
from nmc.isa.table import OPS, Instr

HEAD = ".target sta-ref 1\n.dram_words 4096\n"


def one(line: str) -> Instr:
    (instr,) = assemble(HEAD + line + "\n").instructions
    return instr


@given(programs())
@settings(suppress_health_check=[HealthCheck.too_slow], deadline=None)
def test_assemble_disassemble_is_byte_identical(p):
    text = disassemble(p)
    assert program_to_bytes(assemble(text)) == program_to_bytes(p)


@given(instrs)
def test_instruction_line_round_trip(instr):
    assert one(disassemble_instr(instr)) == instr


def test_example_program_text():
    p = Program(
        "sta-ref", 1, 65536,
        [
            Instr.make("matmul", wait=0b0001, signal=0b1000, w=0x100, m=16, k=64, n=16, accumulate=1),
            Instr.make("vun", fn=2, dst_mem=1, src_mem=2, rows=1, cols=16, imm=0x3727C5AC),
            Instr.make("halt"),
        ],
        [(0x10, np.array([1.0, 2.0], np.float32))],
        [Symbol("x", "input", (1, 197, 192), "f32", 0x0), Symbol("out put", "output", (), "f32", 0x20)],
        [LayerRange("blocks.0.mlp.fc1", "linear", 0, 2)],
        {"opt_level": 2},
    )
    text = disassemble(p)
    assert text.splitlines() == [
        "# nmc assembly",
        ".target sta-ref 1",
        ".dram_words 65536",
        '.meta {"opt_level":2}',
        ".symbol input x f32[1,197,192] 0x0",
        '.symbol output "out put" f32[] 0x20',
        ".const 0x10 2 AACAPwAAAEA=",
        ".layer blocks.0.mlp.fc1 linear 0 2",
        "# layer blocks.0.mlp.fc1 (linear): pc 0..2",
        "matmul wait=load signal=vector a=0x0 w=0x100 out=0x0 m=16 k=64 n=16 accumulate=1 transpose_w=0  # 0",
        "vun wait=- signal=- fn=gelu_tanh dst_mem=spad dst=0x0 src_mem=acc src=0x0 rows=1 cols=16 imm=1e-05  # 1",
        "halt wait=- signal=-  # 2",
    ]
    assert assemble(text) == p


def test_omitted_fields_comments_blank_lines_and_crlf():
    text = "# a program\r\n\r\n.target sta-ref 1  # the target\r\n.dram_words 64\r\n   \r\nmatmul m=4 n=2 k = 8\r\nhalt"
    p = assemble(text)
    assert p.instructions == [Instr.make("matmul", m=4, n=2, k=8), Instr.make("halt")]


def test_field_value_spellings():
    assert one("vbin wait=load|vector signal=0 fn=max b=0x20 rows=0b11")["wait"] == 0b1001
    assert one("vbin wait=9 fn=max b=0x20 rows=0b11")["wait"] == 9
    assert one("vbin fn=max b=0x20 rows=0b11")["b"] == 0x20
    assert one("vbin fn=max b=0x20 rows=0b11")["rows"] == 3
    assert one("load mem=acc")["mem"] == 2


@pytest.mark.parametrize(
    "text, bits",
    [
        ("1.0", 0x3F800000), ("-0.0", 0x80000000), ("1e-05", 0x3727C5AC), ("inf", 0x7F800000),
        ("-inf", 0xFF800000), ("nan", 0x7FC00000), ("0x7fc00001f32", 0x7FC00001),
        ("0xffc00000f32", 0xFFC00000), ("1e-45", 1), ("3.4028235e+38", 0x7F7FFFFF),
    ],
)
def test_f32_spellings(text, bits):
    instr = one(f"vun imm={text}")
    assert instr["imm"] == bits
    assert one(disassemble_instr(instr))["imm"] == bits


def test_nan_payloads_use_bits_form():
    assert "imm=0x7fc00001f32" in disassemble_instr(Instr.make("vun", imm=0x7FC00001))
    assert "imm=0xffc00000f32" in disassemble_instr(Instr.make("vun", imm=0xFFC00000))
    assert "imm=nan" in disassemble_instr(Instr.make("vun", imm=0x7FC00000))


def test_grammar_is_generated_from_the_table():
    g = grammar()
    for op in OPS:
        assert f"/{op.mnemonic}\\b/" in g
        alts = [l.removeprefix("instr:").lstrip("| ") for l in g.splitlines()]
        line = next(l for l in alts if l.startswith(f"M_{op.mnemonic.upper()} "))
        for f in op.all_fields:
            assert f"F_{f.name.upper()}" in line


def asm_error(text: str, message: str):
    with pytest.raises(AsmError) as info:
        assemble(text, "t.s")
    assert str(info.value) == message


@pytest.mark.parametrize(
    "line, message",
    [
        ("foo a=1", "t.s:3:1: unknown mnemonic 'foo' (known: halt, load, store, gload, gstore, matmul, spmatmul, imatmul, ispmatmul, vbin, vun, vrow, vred, topk)"),
        ("  loadx", "t.s:3:3: unknown mnemonic 'loadx' (known: halt, load, store, gload, gstore, matmul, spmatmul, imatmul, ispmatmul, vbin, vun, vrow, vred, topk)"),
        ("matmul foo=1", "t.s:3:8: unknown field 'foo' for matmul (fields: wait, signal, a, w, out, m, k, n, accumulate, transpose_w)"),
        ("halt rows=1", "t.s:3:6: unknown field 'rows' for halt (fields: wait, signal)"),
        ("matmul m", "t.s:3:8: matmul: expected '=' after field 'm'"),
        ("matmul m=", "t.s:3:10: matmul: missing value for field 'm'"),
        ("matmul m=1 m=2", "t.s:3:12: matmul: field 'm' given twice"),
        ("matmul m=65536", "t.s:3:10: matmul: field 'm'=65536 does not fit 16 bits"),
        ("matmul m=-1", "t.s:3:10: matmul: field 'm'=-1 does not fit 16 bits"),
        ("matmul m=x1", "t.s:3:10: matmul: 'x1' is not an integer"),
        ("matmul accumulate=2", "t.s:3:19: matmul: field 'accumulate'=2 does not fit 1 bits"),
        ("vun fn=sigmoid", "t.s:3:8: vun: bad VUnFn name 'sigmoid' for field 'fn' (expected copy, gelu, gelu_tanh, relu, exp, scale, quant)"),
        ("vun fn=GELU", "t.s:3:8: vun: bad VUnFn name 'GELU' for field 'fn' (expected copy, gelu, gelu_tanh, relu, exp, scale, quant)"),
        ("load mem=l1", "t.s:3:10: load: bad Mem name 'l1' for field 'mem' (expected dram, spad, acc)"),
        ("halt wait=load|dma", "t.s:3:11: halt: bad unit name 'dma' in mask (units: load, store, matrix, vector, or - for none)"),
        ("halt wait=16", "t.s:3:11: halt: field 'wait'=16 does not fit 4 bits"),
        ("vun imm=1e39", "t.s:3:9: vun: 1e39 does not fit f32"),
        ("vun imm=one", "t.s:3:9: vun: 'one' is not a float (or 0x<8 hex digits>f32 bits)"),
        (".targt x", "t.s:3:1: unknown directive '.targt' (known: .target, .dram_words, .symbol, .const, .layer, .meta)"),
        (".target x 2", "t.s:3:1: .target: given twice"),
        (".symbol input x f32[2 0", "t.s:3:1: .symbol: 'f32[2' is not of the form f32[d0,d1,...]"),
        (".symbol input x", "t.s:3:1: .symbol takes 4 arguments (kind dtype[shape] addr name), got 2".replace("kind dtype[shape] addr name", "kind name dtype[shape] addr")),
        (".symbol param x f32[1] 0", "t.s:3:1: .symbol: kind 'param' is not one of input, output"),
        (".const 0 2 AAAA", "t.s:3:1: .const: count is 2 words but the data holds 0.75"),
        (".const 0 1 AA*A", "t.s:3:1: .const: bad base64 data: Only base64 data is allowed"),
        (".layer a b 0", "t.s:3:1: .layer takes 4 arguments (name kind start_pc end_pc), got 3"),
        (".meta", "t.s:3:6: .meta: expected a JSON object"),
        ('.meta {"a":1} extra', "t.s:3:7: .meta: bad JSON: unexpected text after the JSON object: 'extra'"),
        ('.meta {"a":NaN}', "t.s:3:7: .meta: bad JSON: NaN is not JSON"),
    ],
)
def test_errors_name_line_column_and_problem(line, message):
    asm_error(HEAD + line + "\n", message)


def test_program_level_errors():
    asm_error("halt\n", "t.s: missing .target directive")
    asm_error(".target a 1\nhalt\n", "t.s: missing .dram_words directive")
    asm_error(HEAD + ".layer l k 0 2\nhalt\n", "t.s: layer 'l' pc range [0, 2) is not inside the 1 instructions")
    asm_error(HEAD + ".symbol input x f32[4097] 0\n", "t.s: symbol 'x' [0x0, 0x1001) lies outside DRAM (0x1000 words)")
    asm_error(HEAD + '.meta {"a":1}\n.meta {"a":2}\n', "t.s:4:7: .meta: key 'a' given twice")


def test_meta_allows_trailing_comment_and_merges():
    p = assemble(HEAD + '.meta {"a":"#x"}  # note\n.meta {"b":[1,2]}\n')
    assert p.meta == {"a": "#x", "b": [1, 2]}


def test_quoted_names():
    p = assemble('.target "my target" 7\n.dram_words 8\n.layer "a b#c" "\\u00e9" 0 0\n')
    assert p.target_name == "my target" and p.debug == [LayerRange("a b#c", "\u00e9", 0, 0)]


def test_asm_error_is_nmc_error():
    assert issubclass(AsmError, NmcError)


def test_module_docstring_example_assembles():
    import nmc.isa.asm as asm

    text = "\n".join(l[4:] for l in asm.__doc__.splitlines() if l.startswith(("    .", "    matmul")))
    p = assemble(text)
    assert p.constants[0][1].tolist() == [1.0, 2.0, 3.0, 4.0] and len(p.instructions) == 1

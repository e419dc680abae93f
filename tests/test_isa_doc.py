"""docs/ISA.md is generated from the ISA table; it must be current."""

from pathlib import Path

from nmc.isa.doc import render
from nmc.isa.table import OPS


def test_isa_md_is_current():
    doc = Path(__file__).parents[1] / "docs" / "ISA.md"
    assert doc.read_text() == render(), "regenerate: python -m nmc.isa.doc > docs/ISA.md"


def test_every_opcode_and_field_is_documented():
    text = render()
    for op in OPS:
        assert f"### `{op.mnemonic}`" in text
        for f in op.fields:
            assert f"| `{f.name}` |" in text

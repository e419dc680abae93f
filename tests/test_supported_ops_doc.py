"""docs/SUPPORTED_OPS.md is what `python -m nmc.compiler.supported_ops` generates from the
compiler's tables, so a new op or pattern cannot be missing from it."""

from pathlib import Path

from nmc.compiler import supported_ops
from nmc.compiler.transforms.raise_torch_to_nm.matchers import single

DOC = Path(__file__).resolve().parents[1] / "docs" / "SUPPORTED_OPS.md"


def test_committed_page_is_the_generated_one():
    assert DOC.read_text() == supported_ops.render(), (
        "docs/SUPPORTED_OPS.md is stale: run "
        "`python -m nmc.compiler.supported_ops docs/SUPPORTED_OPS.md`")


def test_every_one_to_one_op_is_listed():
    text = supported_ops.render()
    for op in single.ONE_TO_ONE:
        assert f"| `{op.name}` |" in text


def test_main_writes_the_page(tmp_path):
    assert supported_ops.main([str(tmp_path / "ops.md")]) == 0
    assert (tmp_path / "ops.md").read_text() == DOC.read_text()

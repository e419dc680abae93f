"""The two printed forms of nmc's IR: `--dump-ir` files are in MLIR's generic op form, which
upstream MLIR parses (torch-mlir ships its Python bindings) and `nmc opt` reads back; the
stages printed by --print-ir-after* and `nmc opt` are readable (custom assembly formats)
unless --print-op-generic."""

from __future__ import annotations

import pytest
from torch_mlir import ir

from nmc.cli import main
from nmc.compiler.pipeline import DEFAULT_PIPELINE

STAGES = ("input", *DEFAULT_PIPELINE)


@pytest.fixture(scope="module")
def dumped(tmp_path_factory):
    """swin_micro with window pruning and 2:4 sparsity (nm, win and isa ops), every stage
    dumped."""
    d = tmp_path_factory.mktemp("ir_forms")
    assert main(["export", "swin_micro", "--set", "img_size=32", "-o", str(d / "model.pt")]) == 0
    assert main(["compile", str(d / "model.pt"), "-o", str(d / "prog.bin"), "-q",
                 "--window-keep", "0.5", "--sparsity", "2:4", "--dump-ir", str(d / "ir")]) == 0
    assert '"win.gather"' in _dump(d, STAGES.index("window-prune")).read_text()
    return d


def _dump(d, i: int):
    return d / "ir" / f"{i:02d}-{STAGES[i]}.mlir"


def _upstream_parse(text: str) -> None:
    """Parse with upstream MLIR (no nm, win or isa dialect: unregistered ones allowed)."""
    ctx = ir.Context()
    ctx.allow_unregistered_dialects = True
    ir.Module.parse(text, ctx)


@pytest.mark.parametrize("stage", range(len(STAGES)), ids=STAGES)
def test_every_dumped_stage_parses_in_upstream_mlir(dumped, stage):
    _upstream_parse(_dump(dumped, stage).read_text())


@pytest.mark.parametrize("stage", range(len(STAGES)), ids=STAGES)
def test_nmc_opt_reads_every_dump_back(dumped, stage, capsys):
    dump = _dump(dumped, stage)
    assert main(["opt", "--print-op-generic", str(dump)]) == 0
    assert capsys.readouterr().out == dump.read_text()


@pytest.mark.parametrize("generic", [False, True])
def test_print_op_generic_on_compile(dumped, capsys, generic):
    """--print-ir-after prints the readable form, which upstream MLIR rejects for isa ops
    (the reason why dumps are generic), or with --print-op-generic the generic form."""
    argv = ["compile", str(dumped / "model.pt"), "-o", str(dumped / "again.bin"), "-q",
            "--print-ir-after=lower-nm-to-isa"]
    assert main(argv + ["--print-op-generic"] * generic) == 0
    out = capsys.readouterr().out.split("//----- //\n", 1)[1]
    assert ('"isa.load"() <{' in out) == generic
    assert ("isa.load wait=" in out) == (not generic)
    if generic:
        _upstream_parse(out)
    else:
        with pytest.raises(ir.MLIRError, match="isa"):
            _upstream_parse(out)

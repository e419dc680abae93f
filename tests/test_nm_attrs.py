"""The typed contracts between passes (compiler/dialects/nm_attrs.py): every attribute
prints and parses back, the verifiers reject impossible values (in Python and in IR text,
with the parser's position), the accessors, and the target that is set once per module."""

from __future__ import annotations

import pytest
from xdsl.dialects.builtin import Float16Type, IntAttr, ModuleOp, StringAttr
from xdsl.parser import Parser
from xdsl.utils.exceptions import ParseError, VerifyException

from nmc.compiler.dialects.nm_attrs import (
    NM_PACK, TRANSPOSE, DramAddrAttr, DramWordsAttr, LayoutAttr, TargetAttr, TilingAttr,
    module_target, set_module_target, set_tiling, tiling,
)
from nmc.compiler.pipeline import make_context
from nmc.compiler.transforms.target_option import TargetMismatchError, resolve_target
from nmc.isa.target import DEFAULT_TARGET, TARGETS_DIR, TargetError

from robust_helpers import REF_TOML, expect_error


def parse(text: str):
    return Parser(make_context(), text).parse_attribute()


@pytest.mark.parametrize("text, cls", [
    ('#nm.target<"sta_ref">', TargetAttr),
    ('#nm.target<"targets/my board.toml">', TargetAttr),
    ("#nm.tile<m = 64, n = 192, k = 96, acc = 1>", TilingAttr),
    ("#nm.tile<m = 32, kv = 2, depth = 0, o_in_s = 0>", TilingAttr),
    ("#nm.layout<identity, f32>", LayoutAttr),
    ("#nm.layout<transpose, f32>", LayoutAttr),
    ("#nm.layout<nm_pack 2:4, f32>", LayoutAttr),
    ("#nm.layout<nm_pack 1:8, f32>", LayoutAttr),
    ("#nm.addr<0>", DramAddrAttr),
    ("#nm.addr<4294967295>", DramAddrAttr),
    ("#nm.dram_words<4096>", DramWordsAttr),
])
def test_round_trip(text, cls):
    attr = parse(text)
    assert isinstance(attr, cls)
    assert str(attr) == text
    assert parse(str(attr)) == attr


def test_round_trip_in_a_module():
    text = ('builtin.module attributes {nm.dram_words = #nm.dram_words<128>, '
            'nm.target = #nm.target<"sta_ref">} {\n}')
    module = Parser(make_context(), text).parse_module()
    assert module_target(module) == "sta_ref"
    assert Parser(make_context(), str(module)).parse_module().attributes == module.attributes


@pytest.mark.parametrize("text, why", [
    ("#nm.tile<m = 0, n = 16>", "tile size m = 0 must be >= 1"),
    ("#nm.tile<m = 16, acc = -1>", "schedule option acc = -1 must be >= 0"),
    ("#nm.tile<m = 16, m = 32>", "named twice"),
    ("#nm.tile<>", "at least one dimension"),
    ("#nm.layout<nm_pack 4:2, f32>", "needs 0 < N < M <= 255"),
    ("#nm.layout<nm_pack 4:4, f32>", "needs 0 < N < M"),
    ("#nm.layout<nm_pack 0:4, f32>", "needs 0 < N < M"),
    ("#nm.layout<nm_pack 2:256, f32>", "M <= 255"),
    ("#nm.layout<nm_pack 2:4, f16>", "element type f16 is not f32"),
    ("#nm.layout<blocked, f32>", "'blocked' is not one of identity, transpose, nm_pack"),
    ("#nm.addr<-64>", "not a DRAM word address"),
    ("#nm.addr<4294967296>", "not a DRAM word address"),
    ("#nm.dram_words<0>", "not a DRAM size"),
    ('#nm.target<"">', "must not be empty"),
])
def test_parser_reports_what_the_verifier_rejects(text, why):
    with pytest.raises(ParseError) as info:
        parse(text)
    assert why in str(info.value)


def test_verifiers_run_when_built_in_python():
    with pytest.raises(VerifyException, match="tile size n = 0"):
        TilingAttr.of({"m": 16, "n": 0})
    with pytest.raises(VerifyException, match="0 < N < M"):
        LayoutAttr(NM_PACK, 5, 4)
    with pytest.raises(VerifyException, match="has no N:M pattern"):
        LayoutAttr(TRANSPOSE, 2, 4)
    with pytest.raises(VerifyException, match="not f32"):
        LayoutAttr(NM_PACK, 2, 4, Float16Type())
    with pytest.raises(VerifyException, match="not a DRAM word address"):
        DramAddrAttr(IntAttr(-1))
    with pytest.raises(VerifyException, match="must not be empty"):
        TargetAttr(StringAttr(""))


def test_layout_text_form_of_the_isa_buffers():
    for text in ("identity", "transpose", "nm_pack:2:4", "nm_pack:1:8"):
        assert LayoutAttr.from_text(text).text == text
    assert LayoutAttr.from_text("nm_pack:2:4").pattern == (2, 4)
    assert LayoutAttr.from_text("identity").pattern is None
    for bad in ("nm_pack:4:2", "nm_pack:2", "nm_pack:a:4", "blocked", "identity:1"):
        with pytest.raises(ValueError, match="unknown layout"):
            LayoutAttr.from_text(bad)


def test_tiling_accessor():
    module = ModuleOp([])
    with pytest.raises(ValueError, match="run schedule-tiles first"):
        tiling(module)
    set_tiling(module, {"m": 64, "k": 32, "acc": 0})
    assert tiling(module) == {"m": 64, "k": 32, "acc": 0}
    assert list(tiling(module)) == ["m", "k", "acc"]  # the kernel's order is kept


# ---------------------------------------------------------------------------- target


def _other_target(tmp_path, name="other", spad=32768):
    path = tmp_path / f"{name}.toml"
    path.write_text(REF_TOML.replace('name = "sta_ref"', f'name = "{name}"')
                    .replace("spad_words = 65536", f"spad_words = {spad}"))
    return str(path)


def test_first_targeted_pass_records_the_target(tmp_path):
    module = ModuleOp([])
    assert resolve_target(module, "", "schedule-tiles").name == DEFAULT_TARGET
    assert module_target(module) == DEFAULT_TARGET

    other = _other_target(tmp_path)
    module = ModuleOp([])
    assert resolve_target(module, other, "schedule-tiles").name == "other"
    assert module_target(module) == other
    # a later pass without the option works for the module's target
    assert resolve_target(module, "", "lower-nm-to-isa").name == "other"


def test_an_unknown_target_is_not_recorded():
    module = ModuleOp([])
    with pytest.raises(TargetError, match="unknown target 'nope'"):
        resolve_target(module, "nope", "schedule-tiles")
    assert module_target(module) is None


def test_a_disagreeing_option_is_an_error(tmp_path):
    module = ModuleOp([])
    set_module_target(module, DEFAULT_TARGET)
    with pytest.raises(TargetMismatchError, match="schedule-tiles: target '.*other.toml' "
                                                  "differs from the module's target 'sta_ref'"):
        resolve_target(module, _other_target(tmp_path), "schedule-tiles")
    assert module_target(module) == DEFAULT_TARGET


def test_the_same_machine_by_another_name_agrees():
    module = ModuleOp([])
    set_module_target(module, DEFAULT_TARGET)
    path = str(TARGETS_DIR / f"{DEFAULT_TARGET}.toml")
    assert resolve_target(module, path, "prune-and-pack").name == DEFAULT_TARGET
    assert module_target(module) == DEFAULT_TARGET


def test_opt_refuses_a_pass_option_that_disagrees_with_the_module(capsys, tmp_path):
    ir = tmp_path / "in.mlir"
    ir.write_text('builtin.module attributes {nm.target = #nm.target<"sta_ref">} {\n}\n')
    other = _other_target(tmp_path)
    out = tmp_path / "out.mlir"
    expect_error(capsys, ["opt", "-p", f'schedule-tiles{{target="{other}"}}', ir, "-o", out],
                 "schedule-tiles: target", "differs from the module's target 'sta_ref'")
    assert not out.exists()
    # the module's own target, named or not, is fine
    for spec in ('schedule-tiles{target="sta_ref"}', "schedule-tiles"):
        expect_ok = ["opt", "-p", spec, ir, "-o", out]
        from robust_helpers import cli

        rc, _, err = cli(capsys, *expect_ok)
        assert rc == 0, err
        assert '#nm.target<"sta_ref">' in out.read_text()


def test_a_pass_with_nothing_to_do_records_nothing_but_checks_its_option(tmp_path):
    from nmc.compiler.pipeline import run_pipeline

    module = ModuleOp([])
    run_pipeline(module, "assign-sparsity,window-prune,prune-and-pack", make_context())
    assert module_target(module) is None
    set_module_target(module, DEFAULT_TARGET)
    other = _other_target(tmp_path)
    for name in ("assign-sparsity", "window-prune", "prune-and-pack"):
        with pytest.raises(TargetMismatchError, match=f"{name}: target"):
            run_pipeline(module, f'{name}{{target="{other}"}}', make_context())

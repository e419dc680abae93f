"""Bad options: target files (missing, mistyped, unknown or impossible fields, each named),
unknown targets, --print-ir-after, `nmc opt -p` pipelines, `nmc export --set`. One line
`nmc: error: ...`, exit status 1, no traceback, nothing written (issue 4, class "options").

Not covered because the options do not exist yet: N:M patterns and keep ratios on the
command line, budgets, sparsity JSON (issues 5 and 6; listed in docs/ROBUSTNESS.md).
"""

from __future__ import annotations

import copy
import json
import math
import os
import tomllib
from pathlib import Path

import pytest

from nmc.compiler.pipeline import DEFAULT_PIPELINE, PASSES
from nmc.isa.target import TargetError, parse_target

from robust_helpers import (
    REF_TOML, built, cli, expect_error, expect_process_error, run_nmc, target_toml,
)

REF = tomllib.loads(REF_TOML)


def _value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        return "nan" if math.isnan(v) else ("inf" if v == math.inf else repr(v))
    if isinstance(v, (int, str, list)):
        return json.dumps(v)
    raise TypeError(v)


def dump_toml(table: dict) -> str:
    """The few TOML shapes a target file has: [section] with scalars, lists and subtables."""
    lines = []
    for name, section in table.items():
        if not isinstance(section, dict):
            lines.append(f"{name} = {_value(section)}")
            continue
        lines.append(f"[{name}]")
        subtables = []
        for key, v in section.items():
            if isinstance(v, dict):
                subtables.append((key, v))
            else:
                lines.append(f"{key} = {_value(v)}")
        for key, sub in subtables:
            lines.append(f"[{name}.{key}]")
            lines.extend(f"{k} = {_value(x)}" for k, x in sub.items())
    return "\n".join(lines) + "\n"


def _with(mutate) -> dict:
    table = copy.deepcopy(REF)
    mutate(table)
    return table


def _target_error(capsys, tmp_path: Path, table: dict | str, *fragments: str) -> str:
    path = tmp_path / "target.toml"
    path.write_text(table if isinstance(table, str) else dump_toml(table))
    out = tmp_path / "prog.bin"
    # the target is checked before the model is even opened: no model file needed
    line = expect_error(capsys, ["compile", tmp_path / "model.pt", "-o", out, "--target", path],
                        f"target file {path}: ", *fragments)
    assert not out.exists()
    return line


def test_the_reference_target_round_trips_through_dump_toml():
    assert tomllib.loads(dump_toml(REF)) == REF
    parse_target(REF)


# ------------------------------------------------------------------------ target files

FIELDS = [(s, k) for s, sec in REF.items() for k, v in sec.items() if not isinstance(v, dict)]


@pytest.mark.parametrize("section, key", FIELDS, ids=[f"{s}.{k}" for s, k in FIELDS])
def test_missing_field_is_named(capsys, tmp_path, section, key):
    table = _with(lambda t: t[section].pop(key))
    line = _target_error(capsys, tmp_path, table, f"missing field [{section}] {key}")
    assert line.endswith(f"missing field [{section}] {key}")


@pytest.mark.parametrize("fn", sorted(REF["vector"]["cost"]))
def test_missing_vector_cost_is_named(capsys, tmp_path, fn):
    table = _with(lambda t: t["vector"]["cost"].pop(fn))
    _target_error(capsys, tmp_path, table, f"[vector.cost] {fn} missing")


@pytest.mark.parametrize("section", list(REF))
def test_missing_section_is_named(capsys, tmp_path, section):
    _target_error(capsys, tmp_path, _with(lambda t: t.pop(section)),
                  f"missing section [{section}]")


IMPOSSIBLE = [
    ("memory", "spad_words", 0, "[memory] spad_words = 0 is impossible (must be >= 1)"),
    ("memory", "acc_words", -16, "[memory] acc_words = -16 is impossible (must be >= 1)"),
    ("memory", "dram_words", 1 << 40, "[memory] dram_words = 1099511627776 is impossible "
                                      "(must be <= 4294967296)"),
    ("memory", "spad_words", "big", "[memory] spad_words must be int, got 'big'"),
    ("memory", "spad_words", 1.5, "[memory] spad_words must be int, got 1.5"),
    ("target", "clock_mhz", float("nan"), "[target] clock_mhz = nan is impossible"),
    ("target", "clock_mhz", float("inf"), "[target] clock_mhz = inf is impossible"),
    ("target", "clock_mhz", 0, "[target] clock_mhz = 0.0 is impossible"),
    ("target", "id", -1, "[target] id = -1 is impossible (must be >= 0)"),
    ("target", "id", 1 << 32, "[target] id = 4294967296 is impossible (must be <= 4294967295)"),
    ("target", "name", "", "[target] name = '' is impossible"),
    ("target", "name", "x" * 33, "is impossible (1 to 32 bytes of UTF-8"),
    ("target", "name", 7, "[target] name must be str, got 7"),
    ("matrix", "rows", 0, "[matrix] rows = 0 is impossible (must be >= 1)"),
    ("matrix", "latency", -1, "[matrix] latency = -1 is impossible (must be >= 0)"),
    ("matrix", "sparse_patterns", ["5:4"], "[matrix] sparse_patterns: '5:4' needs 0 < N <= M"),
    ("matrix", "sparse_patterns", ["2-4"], "[matrix] sparse_patterns: '2-4' is not of the form N:M"),
    ("matrix", "sparse_patterns", [2], "[matrix] sparse_patterns: 2 is not a string"),
    ("matrix", "sparse_patterns", "2:4", "[matrix] sparse_patterns must be list, got '2:4'"),
    ("vector", "lanes", 0, "[vector] lanes = 0 is impossible (must be >= 1)"),
    ("dma", "bytes_per_cycle", 0, "[dma] bytes_per_cycle = 0 is impossible (must be >= 1)"),
    ("dma", "row_overhead", True, "[dma] row_overhead must be int, got True"),
]


@pytest.mark.parametrize("section, key, value, message", IMPOSSIBLE,
                         ids=[f"{s}.{k}={v!r}"[:40] for s, k, v, _ in IMPOSSIBLE])
def test_impossible_field_is_named(capsys, tmp_path, section, key, value, message):
    _target_error(capsys, tmp_path, _with(lambda t: t[section].__setitem__(key, value)), message)


@pytest.mark.parametrize("value, message", [
    (0, "[vector.cost] exp = 0: must be a positive integer"),
    (True, "[vector.cost] exp = True: must be a positive integer"),
    ("4", "[vector.cost] exp = '4': must be a positive integer"),
])
def test_impossible_vector_cost(capsys, tmp_path, value, message):
    _target_error(capsys, tmp_path, _with(lambda t: t["vector"]["cost"].__setitem__("exp", value)),
                  message)


def test_misspelt_field_is_named_with_a_suggestion(capsys, tmp_path):
    def typo(t):
        t["memory"]["spad_word"] = t["memory"].pop("spad_words")

    _target_error(capsys, tmp_path, _with(typo),
                  "unknown field [memory] spad_word (did you mean spad_words?)")


def test_unknown_section_and_cost_are_named(capsys, tmp_path):
    _target_error(capsys, tmp_path, _with(lambda t: t.__setitem__("memroy", {"x": 1})),
                  "unknown section [memroy] (did you mean [memory]?)")
    _target_error(capsys, tmp_path, _with(lambda t: t["vector"]["cost"].__setitem__("tanh", 3)),
                  "unknown field [vector.cost] tanh")


def test_section_that_is_not_a_table(capsys, tmp_path):
    text = "dma = 3\n" + dump_toml(_with(lambda t: t.pop("dma")))
    _target_error(capsys, tmp_path, text, "[dma] must be a table, got 3")


def test_target_file_that_is_not_toml(capsys, tmp_path):
    path = tmp_path / "t.toml"
    path.write_text("[memory\nspad_words = 4\n")
    expect_error(capsys, ["compile", "m.pt", "-o", tmp_path / "x.bin", "--target", path],
                 f"target file {path} is not valid TOML: ", "(at line 1")
    path.write_bytes(b"\xff\xfe\x00binary")
    expect_error(capsys, ["compile", "m.pt", "-o", tmp_path / "x.bin", "--target", path],
                 f"target file {path} is not valid TOML: not UTF-8 text")


def test_target_file_missing_or_a_directory(capsys, tmp_path):
    expect_error(capsys, ["compile", "m.pt", "-o", tmp_path / "x.bin",
                          "--target", tmp_path / "no.toml"],
                 f"cannot read target file {tmp_path / 'no.toml'}: No such file or directory")
    expect_error(capsys, ["compile", "m.pt", "-o", tmp_path / "x.bin", "--target", tmp_path],
                 f"cannot read target file {tmp_path}: Is a directory")


def test_unknown_target_name(capsys, tmp_path):
    line = expect_error(capsys, ["compile", "m.pt", "-o", tmp_path / "x.bin",
                                 "--target", "sta_nope"],
                        "unknown target 'sta_nope' (built-in targets: ", "sta_ref")
    assert line.endswith(")")


def test_bad_target_for_run(capsys, tmp_path, tmp_path_factory):
    d = built(tmp_path_factory)
    path = target_toml(tmp_path / "t.toml", {"spad_words = 65536": "spad_words = 0"})
    expect_error(capsys, ["run", d / "prog.bin", "-i", d / "x.npy", "--target", path],
                 "[memory] spad_words = 0 is impossible")
    expect_error(capsys, ["run", d / "prog.bin", "-i", d / "x.npy", "--target", "nope"],
                 "unknown target 'nope'")


# ------------------------------------------------------------------------ passes


def test_unknown_print_ir_after_pass(capsys, tmp_path):
    rc, out, err = cli(capsys, "compile", "m.pt", "-o", tmp_path / "x.bin",
                       "--print-ir-after", "plan-memory", "--print-ir-after", "tile")
    assert rc == 1 and out == ""
    from robust_helpers import check_one_line

    check_one_line(err, "--print-ir-after: unknown pass tile (passes: " + ", ".join(PASSES))


@pytest.mark.parametrize("spec, fragments", [
    ("no-such-pass", ["bad pass pipeline 'no-such-pass'", "no-such-pass", "known passes: "]),
    ("schedule-tiles{tile=4}", ["bad pass pipeline", "tile", "target"]),
    ("schedule-tiles{target=1}", ["bad pass pipeline", "Incompatible types"]),
    ("schedule-tiles{", ["bad pass pipeline 'schedule-tiles{': Expected argument name here "
                         "(column 16)"]),
    ("schedule-tiles{target=}", ["bad pass pipeline", "(column 23)"]),
    (",,", ["bad pass pipeline ',,': Expected pass name here (column 1)"]),
    ("schedule-tiles{target=nope}", ["unknown target 'nope'"]),
])
def test_bad_opt_pipeline(capsys, tmp_path, tmp_path_factory, spec, fragments):
    ir = tmp_path / "in.mlir"
    ir.write_text("builtin.module {\n}\n")
    expect_error(capsys, ["opt", "-p", spec, ir, "-o", tmp_path / "out.mlir"], *fragments)
    assert not (tmp_path / "out.mlir").exists()


@pytest.fixture(scope="module")
def nm_ir(tmp_path_factory) -> Path:
    """The IR of the small model after raise-torch-to-nm (the input of schedule-tiles)."""
    d = tmp_path_factory.mktemp("options_ir")
    from nmc.cli import main

    model = built(tmp_path_factory) / "model.pt"
    assert main(["compile", str(model), "-o", str(d / "p.bin"), "--dump-ir", str(d / "ir")]) == 0
    return d / "ir" / f"01-{DEFAULT_PIPELINE[0]}.mlir"


def test_opt_pass_on_ir_of_the_wrong_stage(capsys, tmp_path, nm_ir):
    """lower-nm-to-isa needs the attributes that schedule-tiles and plan-memory add."""
    out = tmp_path / "out.mlir"
    expect_error(capsys, ["opt", "-p", "lower-nm-to-isa", nm_ir, "-o", out],
                 f"{nm_ir}: pass 'lower-nm-to-isa' failed on this input",
                 "is the input the output of the passes before it")
    expect_error(capsys, ["opt", "-p", "schedule-tiles,lower-nm-to-isa", nm_ir, "-o", out],
                 "pass 'lower-nm-to-isa' failed on this input")
    assert not out.exists()


def test_opt_input_that_does_not_parse_is_one_line(capsys, tmp_path):
    ir = tmp_path / "bad.mlir"
    ir.write_text("garbage here {\n")
    expect_error(capsys, ["opt", "-p", "schedule-tiles", ir],
                 f"{ir}:1:9: Operation builtin.unregistered does not have a custom format.")
    ir.write_text('"builtin.module"() ({\n  %0 = "nm.linear"() : () -> i32\n}) : () -> ()\n')
    expect_error(capsys, ["opt", ir], f"{ir}: ", "operands")
    expect_error(capsys, ["opt", tmp_path / "none.mlir"], "cannot read")


# ------------------------------------------------------------------------ export --set


@pytest.mark.parametrize("item, message", [
    ("dim", "--set dim: expected KEY=INTEGER"),
    ("dim=abc", "--set dim=abc: expected KEY=INTEGER"),
    ("dim=", "--set dim=: expected KEY=INTEGER"),
    ("dim=1.5", "--set dim=1.5: expected KEY=INTEGER"),
    ("=3", "mlp_block has no parameter"),
    ("colour=3", "mlp_block has no parameter colour (parameters: dim, hidden, tokens, batch)"),
    ("dim=0", "mlp_block: dim must be positive"),
    ("tokens=-5", "mlp_block: tokens must be positive"),
    ("dim=99999999999", "does not fit in memory"),
])
def test_export_set_garbage(capsys, tmp_path, item, message):
    out = tmp_path / "m.pt"
    expect_error(capsys, ["export", "mlp_block", "--set", item, "-o", out], message)
    assert not out.exists()


def test_export_unknown_model_and_missing_output(capsys, tmp_path):
    expect_error(capsys, ["export", "resnet50", "-o", tmp_path / "m.pt"],
                 "unknown model 'resnet50' (built-in: mlp_block")
    expect_error(capsys, ["export", "mlp_block"], "nmc export needs -o FILE")
    expect_error(capsys, ["export", "mlp_block", "-o", tmp_path / "no" / "m.pt"],
                 "cannot write", "No such file or directory")


def test_parse_target_errors_are_target_errors():
    with pytest.raises(TargetError):
        parse_target(_with(lambda t: t["memory"].pop("acc_words")))


def test_console_script_bad_target_field(tmp_path):
    path = target_toml(tmp_path / "t.toml", {"acc_words = 16384": "acc_words = 0"})
    proc = run_nmc("compile", tmp_path / "m.pt", "-o", tmp_path / "x.bin", "--target", path)
    expect_process_error(proc, "[memory] acc_words = 0 is impossible")
    proc = run_nmc("opt", "-p", "schedule-tiles{", "/dev/null")
    expect_process_error(proc, "Expected argument name here")


def test_a_target_file_edited_between_two_compiles_is_read_again(capsys, tmp_path,
                                                                 tmp_path_factory):
    """In one process (a notebook, these tests), the second compile sees the new file."""
    model = built(tmp_path_factory) / "model.pt"
    path = target_toml(tmp_path / "t.toml")
    rc, _, err = cli(capsys, "compile", model, "-o", tmp_path / "a.bin", "--target", path)
    assert rc == 0, err
    target_toml(path, {"spad_words = 65536": "spad_words = 16"})
    expect_error(capsys, ["compile", model, "-o", tmp_path / "b.bin", "--target", path],
                 "cannot fit the scratchpad", "16 SPAD words")


@pytest.mark.skipif(not os.path.exists("/dev/zero"), reason="needs /dev/zero")
def test_endless_files_as_target_or_source(capsys, tmp_path):
    expect_error(capsys, ["compile", "m.pt", "-o", tmp_path / "x.bin", "--target", "/dev/zero"],
                 "cannot read target file /dev/zero: not a regular file")
    expect_error(capsys, ["opt", "-p", "schedule-tiles", "/dev/zero"],
                 "cannot read /dev/zero: not a text file (it holds NUL bytes)")
    expect_error(capsys, ["asm", "/dev/urandom", "-o", tmp_path / "x.bin"],
                 "cannot read /dev/urandom: not a text file (it holds NUL bytes)")
    assert not (tmp_path / "x.bin").exists()


def test_opt_reads_stdin(tmp_path):
    proc = run_nmc("opt", "-p", "schedule-tiles", stdin="builtin.module {\n}\n")
    assert proc.returncode == 0 and "builtin.module" in proc.stdout, proc.stderr
    proc = run_nmc("opt", stdin="\0\0\0")
    expect_process_error(proc, "cannot read <stdin>: not a text file")
    proc = run_nmc("opt", stdin="garbage {\n")
    expect_process_error(proc, "<stdin>:1:9: Operation builtin.unregistered")


@pytest.mark.parametrize("argv, message", [
    (["compile"], "the following arguments are required: model, -o/--output (see `nmc "
                  "compile --help`)"),
    (["bogus"], "argument COMMAND: invalid choice: 'bogus'"),
    (["run", "p.bin", "--max-instructions", "many"],
     "argument --max-instructions: invalid int value: 'many' (see `nmc run --help`)"),
])
def test_command_line_usage_errors_are_one_line_with_status_2(capsys, argv, message):
    with pytest.raises(SystemExit) as info:
        cli(capsys, *argv)
    assert info.value.code == 2
    from robust_helpers import check_one_line

    check_one_line(capsys.readouterr().err, message)


def test_console_script_usage_error():
    expect_process_error(run_nmc("compile", "m.pt"), "the following arguments are required: "
                         "-o/--output", status=2)

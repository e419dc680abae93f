"""A layer that cannot fit the target's on-chip memories under any tiling (a target TOML with
a tiny scratchpad via --target FILE): one line naming the layer and what it needs, exit
status 1, no prog.bin (issue 4, class "schedules")."""

from __future__ import annotations

import re

from nmc.compiler.pipeline import DEFAULT_PIPELINE

from robust_helpers import (
    built, cli, expect_error, expect_process_error, run_nmc, target_toml, temp_files,
)


def _tiny(tmp_path, spad: int = 65536, acc: int = 16384):
    return target_toml(tmp_path / "tiny.toml", {
        "spad_words = 65536": f"spad_words = {spad}",
        "acc_words = 16384": f"acc_words = {acc}",
        'name = "sta_ref"': 'name = "tiny"',
        "id = 1 ": "id = 7 ",
    })


def _need(line: str) -> int:
    m = re.search(r"needs (?:at least )?(\d+) SPAD words", line)
    assert m, line
    return int(m.group(1))


def test_layer_norm_that_cannot_fit(capsys, tmp_path, tmp_path_factory):
    model = built(tmp_path_factory) / "model.pt"
    out = tmp_path / "prog.bin"
    line = expect_error(
        capsys, ["compile", model, "-o", out, "--target", _tiny(tmp_path, spad=64)],
        "layer 'norm' cannot fit the scratchpad under any tiling: it needs ",
        "target 'tiny' has 64 SPAD words and 16384 ACC words",
    )
    assert _need(line) > 64
    assert not out.exists() and temp_files(tmp_path) == []


def test_linear_that_cannot_fit(capsys, tmp_path, tmp_path_factory):
    model = built(tmp_path_factory) / "model.pt"
    line = expect_error(
        capsys, ["compile", model, "-o", tmp_path / "prog.bin",
                 "--target", _tiny(tmp_path, spad=900)],
        "layer 'fc1' cannot fit the scratchpad under any tiling: it needs ",
        "target 'tiny' has 900 SPAD words",
    )
    assert _need(line) > 900


def test_the_stated_need_of_a_layer_norm_is_enough(capsys, tmp_path, tmp_path_factory):
    """With the SPAD the message asks for, that layer fits (the next one may not)."""
    model = built(tmp_path_factory) / "model.pt"
    line = expect_error(capsys, ["compile", model, "-o", tmp_path / "p.bin",
                                 "--target", _tiny(tmp_path, spad=64)], "layer 'norm'")
    rc, _, err = cli(capsys, "compile", model, "-o", tmp_path / "p.bin",
                     "--target", _tiny(tmp_path, spad=_need(line)))
    assert "layer 'norm'" not in err


def test_the_stated_need_of_a_linear_is_the_smallest(capsys, tmp_path, tmp_path_factory):
    model = built(tmp_path_factory) / "model.pt"
    line = expect_error(capsys, ["compile", model, "-o", tmp_path / "p.bin",
                                 "--target", _tiny(tmp_path, spad=900)], "layer 'fc1'")
    rc, _, err = cli(capsys, "compile", model, "-o", tmp_path / "p.bin",
                     "--target", _tiny(tmp_path, spad=_need(line) - 1))
    assert "layer 'fc1'" in err  # one word less than the need must not fit
    rc, _, err = cli(capsys, "compile", model, "-o", tmp_path / "p.bin",
                     "--target", _tiny(tmp_path, spad=_need(line)))
    assert "layer 'fc1'" not in err  # and the need itself is enough


def test_accumulator_that_is_too_small(capsys, tmp_path, tmp_path_factory):
    model = built(tmp_path_factory) / "model.pt"
    expect_error(capsys, ["compile", model, "-o", tmp_path / "prog.bin",
                          "--target", _tiny(tmp_path, acc=16)],
                 "layer 'fc1' cannot fit", "16 ACC words")


def test_accumulator_need_is_stated_in_acc_words(capsys, tmp_path, tmp_path_factory):
    model = built(tmp_path_factory) / "model.pt"
    expect_error(capsys, ["compile", model, "-o", tmp_path / "prog.bin",
                          "--target", _tiny(tmp_path, acc=16)],
                 "layer 'fc1'", "needs at least 144 ACC words for")


def test_a_failed_schedule_leaves_the_old_program(capsys, tmp_path, tmp_path_factory):
    model = built(tmp_path_factory) / "model.pt"
    out = tmp_path / "prog.bin"
    out.write_bytes(b"old")
    expect_error(capsys, ["compile", model, "-o", out, "--target", _tiny(tmp_path, spad=64),
                          "--dump-ir", tmp_path / "ir"], "layer 'norm'")
    assert out.read_bytes() == b"old" and temp_files(tmp_path) == []
    # the stages before schedule-tiles were dumped whole; nothing after it
    before = DEFAULT_PIPELINE[: DEFAULT_PIPELINE.index("schedule-tiles")]
    assert sorted(p.name for p in (tmp_path / "ir").iterdir()) == [
        f"{i:02d}-{s}.mlir" for i, s in enumerate(("input",) + before)]
    assert temp_files(tmp_path / "ir") == []


def test_console_script_names_the_layer(tmp_path, tmp_path_factory):
    model = built(tmp_path_factory) / "model.pt"
    proc = run_nmc("compile", model, "-o", tmp_path / "prog.bin",
                   "--target", _tiny(tmp_path, spad=64))
    expect_process_error(proc, "layer 'norm' cannot fit the scratchpad", "needs")
    assert not (tmp_path / "prog.bin").exists()

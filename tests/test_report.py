"""What a user sees after a run: the cycle report (text and JSON), the dense baseline, the
comparison of several programs, the plot, `nmc inspect`, and the errors of bad paths.

One tiny DeiT (1 block, 32x32 images), compiled dense and 2:4, serves every test."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from nmc.cli import main
from nmc.compiler.driver import compile_model
from nmc.isa.container import read_program, write_program
from nmc.models.registry import build_model, export_to_file
from nmc.runtime.attribution import NO_LAYER, attribute_cycles
from nmc.runtime.report import build_report, render_text

SMALL = {"img_size": 32, "patch": 8, "dim": 64, "depth": 1, "heads": 2, "num_classes": 10}
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def progs(tmp_path_factory):
    d = tmp_path_factory.mktemp("report")
    module, example = build_model("deit_tiny", SMALL, seed=0)
    export_to_file(module, example, d / "m.pt")
    write_program(compile_model(d / "m.pt"), d / "dense.bin")
    write_program(compile_model(d / "m.pt", sparsity={"spec": "2:4"}), d / "sparse.bin")
    np.save(d / "x.npy", np.random.default_rng(0).standard_normal(example.shape).astype(np.float32))
    return d


def _run_cli(capsys, *argv) -> tuple[int, str, str]:
    status = main([str(a) for a in argv])
    out = capsys.readouterr()
    return status, out.out, out.err


# ------------------------------------------------------------------- the attribution


def test_attribution_partitions_the_timeline_by_latest_started_instruction():
    layers = np.array([0, 0, 1, NO_LAYER])  # pc -> layer
    trace = [(0, "load", 0, 10), (1, "matrix", 10, 30), (2, "load", 15, 25),
             (3, "vector", 35, 40)]
    a = attribute_cycles(trace, layers, 40)
    # [15, 25): pc 2 started last, so layer 1 owns it although pc 1 still runs; [30, 35)
    # nothing runs; [35, 40) runs an instruction outside every layer
    assert a.cycles == {0: {"load": 10, "matrix": 10}, 1: {"load": 10},
                        NO_LAYER: {"vector": 5, "idle": 5}}
    assert a.runs == [(0, 15, 0), (15, 25, 1), (25, 30, 0), (30, 40, NO_LAYER)]
    assert sum(a.layer_cycles(i) for i in a.cycles) == 40


def test_attribution_charges_a_layers_cycles_to_compute_before_dma():
    # a load of the layer starts during its matmul: the layer owns those cycles, and they
    # count as matrix time (the load is hidden), not as exposed load time
    layers = np.array([0, 0])
    a = attribute_cycles([(0, "matrix", 0, 20), (1, "load", 5, 30)], layers, 30)
    assert a.cycles == {0: {"matrix": 20, "load": 10}}


# ------------------------------------------------------------------- nmc run --report


def test_json_report_cycles_add_up_and_speedup_against_dense(progs, capsys):
    status, out, _ = _run_cli(capsys, "run", progs / "sparse.bin", "-i", progs / "x.npy",
                              "--report", "--report-json", progs / "r.json",
                              "--dense-baseline", progs / "dense.bin")
    assert status == 0
    report = json.loads((progs / "r.json").read_text())
    layers = report["layers"]
    assert sum(l["cycles"] for l in layers) == report["total_cycles"] > 0
    for l in layers:
        assert sum(l["cycles_by_unit"].values()) == l["cycles"]
    named = {l["name"]: l for l in layers}
    assert named["blocks.0.mlp.fc1"]["pattern"] == "2:4"
    assert named["blocks.0.mlp.fc1"]["density"] == 0.5
    assert named["blocks.0.mlp.fc1"]["dense_cycles"] > named["blocks.0.mlp.fc1"]["cycles"]
    assert named["blocks.0.attn"]["macs"] > 0
    # every load and store counts in one row
    assert sum(l["dram_bytes_read"] for l in layers) == report["dram_bytes_read"]
    assert sum(l["dram_bytes_written"] for l in layers) == report["dram_bytes_written"]
    assert set(report["units"]) == {"load", "store", "matrix", "vector"}
    dense_cycles = report["baseline"]["cycles"]
    assert report["speedup"] == pytest.approx(dense_cycles / report["total_cycles"])
    assert report["speedup"] > 1.0
    # the text says the same
    assert f"total: {report['total_cycles']} cycles" in out
    # counted as `nmc compile` and `nmc inspect` count them (issue 15, item 17)
    from nmc.isa.container import read_program

    held = len(read_program(progs / "sparse.bin").instructions)
    assert f"us, {held} instructions (halt included)" in out
    assert f"speedup vs dense: {report['speedup']:.3f}x" in out
    fc1 = next(line for line in out.splitlines() if line.startswith("blocks.0.mlp.fc1 "))
    assert "2:4" in fc1 and str(named["blocks.0.mlp.fc1"]["cycles"]) in fc1


def test_speedup_is_unknown_without_baseline_else_from_meta(progs):
    from nmc.isa.target import load_target
    from nmc.runtime.emulator import run_program

    program = read_program(progs / "sparse.bin")
    x = {"x": np.load(progs / "x.npy")}
    result = run_program(program, x, load_target(), trace=True)
    assert "speedup vs dense: unknown" in render_text(build_report(result, program))
    program.meta["dense_cycles"] = 2 * result.total_cycles
    report = build_report(result, program)
    assert report.speedup == 2.0 and "compiler estimate" in report.baseline.source
    dense = read_program(progs / "dense.bin")  # its META says every layer is dense
    report = build_report(run_program(dense, x, load_target(), trace=True), dense)
    assert report.speedup == 1.0 and "dense" in report.baseline.source


def test_window_keep_from_meta_shows_in_report_and_inspect(progs, tmp_path, capsys):
    program = read_program(progs / "sparse.bin")
    program.meta["window_keep"] = {"blocks.0": 0.5}
    write_program(program, tmp_path / "keep.bin")
    status, out, _ = _run_cli(capsys, "inspect", tmp_path / "keep.bin")
    assert status == 0
    attn = next(line for line in out.splitlines() if line.strip().startswith("blocks.0.attn "))
    assert " 0.50 " in attn
    norm = next(line for line in out.splitlines() if line.strip().startswith("patch_embed "))
    assert " 0.50 " not in norm
    status, out, _ = _run_cli(capsys, "run", tmp_path / "keep.bin", "-i", progs / "x.npy",
                              "--report", "--baseline-cycles", "100000")
    assert "2:4, keep 0.50" in out and "--baseline-cycles" in out


# ------------------------------------------------------------------- nmc run --trace


def test_trace_has_one_slice_per_executed_instruction(progs, capsys):
    from nmc.isa.target import load_target
    from nmc.runtime.emulator import run_program
    from nmc.runtime.trace import LAYER_TID, UNIT_TIDS

    status, _, _ = _run_cli(capsys, "run", progs / "sparse.bin", "-i", progs / "x.npy",
                            "--trace", progs / "t.json")
    assert status == 0
    doc = json.loads((progs / "t.json").read_text())
    events = doc["traceEvents"]
    program = read_program(progs / "sparse.bin")
    result = run_program(program, {"x": np.load(progs / "x.npy")}, load_target(), trace=True)
    mhz = result.clock_mhz

    tid_unit = {tid: unit for unit, tid in UNIT_TIDS.items()}
    slices = [e for e in events if e["ph"] == "X" and e["tid"] != LAYER_TID]
    got = sorted((e["args"]["pc"], tid_unit[e["tid"]], e["args"]["start_cycle"],
                  e["args"]["end_cycle"]) for e in slices)
    assert got == sorted(result.trace)  # every executed instruction exactly once
    for e in slices:
        assert e["ts"] == pytest.approx(e["args"]["start_cycle"] / mhz)
        assert e["dur"] == pytest.approx((e["args"]["end_cycle"] - e["args"]["start_cycle"]) / mhz)
        assert e["pid"] == 1 and isinstance(e["name"], str) and e["name"]
    names = {e["tid"]: e["args"]["name"] for e in events
             if e["ph"] == "M" and e["name"] == "thread_name"}
    assert {names[t] for t in UNIT_TIDS.values()} == {f"{u} unit" for u in UNIT_TIDS}
    # the attribution track tiles [0, total) without gaps or overlaps
    owned = sorted((e["args"]["start_cycle"], e["args"]["end_cycle"])
                   for e in events if e["ph"] == "X" and e["tid"] == LAYER_TID)
    assert owned[0][0] == 0 and owned[-1][1] == result.total_cycles
    assert all(a[1] == b[0] for a, b in zip(owned, owned[1:]))


# ------------------------------------------------------------------- nmc report


def test_report_compares_programs_and_plots(progs, capsys):
    status, out, _ = _run_cli(capsys, "report", progs / "dense.bin", progs / "sparse.bin",
                              "--labels", "dense,2:4", "--group", "role",
                              "--plot", progs / "cmp.png", "--report-json", progs / "cmp.json")
    assert status == 0
    assert "2:4 vs dense" in out and "blocks.*.mlp.fc1" in out
    total = next(line for line in out.splitlines() if line.startswith("total "))
    doc = json.loads((progs / "cmp.json").read_text())
    dense, sparse = (p["report"]["total_cycles"] for p in doc["programs"])
    assert total.split()[1:3] == [str(dense), str(sparse)]
    png = (progs / "cmp.png").read_bytes()
    assert png.startswith(PNG_MAGIC) and len(png) > 20_000

    status, out, _ = _run_cli(capsys, "report", progs / "sparse.bin", "--group", "block",
                              "--plot", progs / "one.png")
    assert status == 0 and "Units" in out
    png = (progs / "one.png").read_bytes()
    assert png.startswith(PNG_MAGIC) and len(png) > 20_000


# ------------------------------------------------------------------- errors


@pytest.mark.parametrize("extra, message", [
    (["--report-json", "{tmp}/no/such/dir/r.json"], "cannot write"),
    (["--trace", "{tmp}"], "Is a directory"),
    (["--report", "--baseline-cycles", "0"], "must be positive"),
    (["--baseline-cycles", "5"], "need --report"),
    (["--report", "--baseline-cycles", "5", "--dense-baseline", "{tmp}/d.bin"], "not both"),
    (["--report", "--dense-baseline", "{tmp}/missing.bin"], "missing.bin"),
])
def test_bad_run_options_are_one_line_errors(progs, tmp_path, capsys, extra, message):
    argv = ["run", progs / "sparse.bin", "-i", progs / "x.npy",
            *(a.format(tmp=tmp_path) for a in extra)]
    status, _, err = _run_cli(capsys, *argv)
    assert status == 1 and err.startswith("nmc: error:") and message in err
    assert list(tmp_path.iterdir()) == []  # nothing written, not even a temporary file


def test_report_errors_in_a_subprocess_have_no_traceback(progs, tmp_path):
    cli = [sys.executable, "-m", "nmc.cli"]
    proc = subprocess.run([*cli, "report", str(tmp_path / "missing.bin")],
                          capture_output=True, text=True)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert proc.stderr.startswith("nmc: error:") and "missing.bin" in proc.stderr
    proc = subprocess.run([*cli, "report", str(progs / "sparse.bin"), "--plot",
                           str(tmp_path / "nodir" / "p.png")], capture_output=True, text=True)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert "cannot write" in proc.stderr and not (tmp_path / "nodir").exists()


# ------------------------------------------------------------------- progress


def test_progress_bars_are_off_when_quiet_or_not_a_terminal(capsys):
    from nmc.common.progress import progress, quiet

    with quiet():
        assert progress(range(3)).disable
    assert progress(range(3)).disable  # pytest's stderr is not a terminal
    assert list(progress(range(3), desc="x")) == [0, 1, 2]
    assert capsys.readouterr().err == ""

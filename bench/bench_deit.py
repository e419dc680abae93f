"""DeiT benchmark: compile time, program size, emulator speed against PyTorch, modelled cycles
and matrix-unit utilisation, for DeiT-tiny / small / base. Run on demand (not a test):

    .venv/bin/python bench/bench_deit.py                      # all three, updates BENCHMARKS.md
    .venv/bin/python bench/bench_deit.py --models deit_tiny --repeat 5 --no-write

Per model:
- compile: wall time of `nmc compile model.pt -o prog.bin` in a fresh process (Python start,
  imports, torch.export load, torch-mlir import, every pass, writing prog.bin);
- prog.bin size, and the time to read it back (`read_program`);
- emulator vs PyTorch eager, in this one process, interleaved: the eager forward of the very
  module that was exported (torch.no_grad, default threads), `run_program` on the program
  read from prog.bin (one input: memories, constants, decode, timing, race checks,
  execution), and `LoadedProgram.run` (the program loaded and decoded once, as for a
  dataset: reset, inputs, execution), each `--repeat` times after one warm-up run of each,
  on a new random input every repetition; the ratios are of the medians (also of the minima,
  the least disturbed by other load on the machine);
- the emulator's output against eager's (relative max error), its modelled cycles, and the
  matrix unit's utilisation: useful MACs / (cycles x PE array) over the whole run and over
  the linear layers (their spans summed), plus the busy-cycle efficiency (MACs / (matrix busy
  cycles x PE array)).

The results go to BENCHMARKS.md (section between markers, replaced on every run) with the
machine (`uname -a`, CPU model, cores, load average), the date and the exact command.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from sections import replace_section  # bench/sections.py, beside this script

ROOT = Path(__file__).resolve().parent.parent


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def uname() -> str:
    try:
        return subprocess.run(["uname", "-a"], capture_output=True, text=True,
                              check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return " ".join(platform.uname())


def load_average() -> str:
    try:
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "n/a"


def wait_for_quiet(limit: float, timeout_s: float = 600.0) -> None:
    start = time.monotonic()
    while os.getloadavg()[0] >= limit and time.monotonic() - start < timeout_s:
        time.sleep(5)
    if os.getloadavg()[0] >= limit:
        print(f"warning: load average still {os.getloadavg()[0]:.2f} after "
              f"{timeout_s:.0f} s", file=sys.stderr)


def nmc_exe() -> list[str]:
    exe = Path(sys.executable).parent / "nmc"
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "nmc.cli"]


def bench_model(name: str, repeat: int, workdir: Path, batch: int) -> dict:
    from nmc.isa.container import read_program
    from nmc.isa.target import load_target
    from nmc.models.registry import build_model, export_to_file
    from nmc.runtime.emulator import LoadedProgram, run_program

    module, example = build_model(name, {"batch": batch}, seed=0)
    model_path, prog_path = workdir / f"{name}.pt", workdir / f"{name}.bin"
    export_to_file(module, example, model_path)

    t0 = time.perf_counter()
    proc = subprocess.run([*nmc_exe(), "compile", str(model_path), "-o", str(prog_path)],
                          capture_output=True, text=True)
    compile_s = time.perf_counter() - t0
    if proc.returncode:
        raise SystemExit(f"nmc compile failed for {name}:\n{proc.stderr[-4000:]}")

    t0 = time.perf_counter()
    program = read_program(prog_path)
    read_s = time.perf_counter() - t0
    target = load_target(program.target_name)
    (input_name,) = [s.name for s in program.symbols if s.kind == "input"]
    gen = torch.Generator().manual_seed(1)
    loaded = LoadedProgram(program, target)

    def timed(fn, x):
        t0 = time.perf_counter()
        out = fn(x)
        return out, time.perf_counter() - t0

    def eager(x):
        with torch.no_grad():
            return module(x).numpy()

    def emulate(x):
        return run_program(program, {input_name: x.numpy()}, target)

    def emulate_loaded(x):
        return loaded.run({input_name: x.numpy()})

    times: dict[str, list[float]] = {"eager": [], "cold": [], "warm": []}
    err = 0.0
    for rep in range(repeat + 1):  # the first round warms up
        x = torch.randn(example.shape, generator=gen)
        want, t_eager = timed(eager, x)
        result, t_cold = timed(emulate, x)
        warm, t_warm = timed(emulate_loaded, x)
        for got in (*result.outputs.values(), *warm.outputs.values()):
            err = max(err, float(np.abs(got - want).max() / np.abs(want).max()))
        if rep:
            for key, t in (("eager", t_eager), ("cold", t_cold), ("warm", t_warm)):
                times[key].append(t)

    peak = result.mx_peak
    linear = [layer for layer in result.layers if layer.kind == "linear"]
    lin_macs = sum(layer.macs for layer in linear)
    lin_span = sum(layer.span for layer in linear)
    lin_busy = sum(layer.busy["matrix"] for layer in linear)
    lin_utils = [layer.matrix_utilization for layer in linear]
    return {
        "model": name,
        "batch": batch,
        "instructions": len(program.instructions),
        "compile_s": compile_s,
        "prog_bytes": prog_path.stat().st_size,
        "read_s": read_s,
        "eager_med": statistics.median(times["eager"]),
        "eager_min": min(times["eager"]),
        "emu_med": statistics.median(times["cold"]),
        "emu_min": min(times["cold"]),
        "warm_med": statistics.median(times["warm"]),
        "warm_min": min(times["warm"]),
        "err": err,
        "cycles": result.total_cycles,
        "modelled_ms": result.seconds * 1e3,
        "util_all": result.matrix_occupancy,
        "eff_all": result.matrix_utilization,
        "util_linear": lin_macs / (lin_span * peak) if lin_span else 0.0,
        "util_linear_min": min(lin_utils) if lin_utils else 0.0,
        "eff_linear": lin_macs / (lin_busy * peak) if lin_busy else 0.0,
    }


def table(rows: list[dict]) -> str:
    head = ("| model | instrs | compile (s) | prog.bin (MB) | read (s) | eager (ms) med / min "
            "| emulator, one input (ms) med / min | ratio med / min "
            "| emulator, loaded once (ms) med / min | ratio med / min | rel. error "
            "| modelled cycles "
            "(ms @ clock) | mx util: all / linear (min layer) | mx busy efficiency: all / "
            "linear | load |")
    sep = "|" + "|".join("---" for _ in range(head.count("|") - 1)) + "|"
    lines = [head, sep]
    for r in rows:
        lines.append(
            f"| {r['model']} (batch {r['batch']}) | {r['instructions']} | {r['compile_s']:.1f} "
            f"| {r['prog_bytes'] / 1e6:.1f} | {r['read_s']:.2f} "
            f"| {r['eager_med'] * 1e3:.0f} / {r['eager_min'] * 1e3:.0f} "
            f"| {r['emu_med'] * 1e3:.0f} / {r['emu_min'] * 1e3:.0f} "
            f"| {r['emu_med'] / r['eager_med']:.2f}x / {r['emu_min'] / r['eager_min']:.2f}x "
            f"| {r['warm_med'] * 1e3:.0f} / {r['warm_min'] * 1e3:.0f} "
            f"| {r['warm_med'] / r['eager_med']:.2f}x / {r['warm_min'] / r['eager_min']:.2f}x "
            f"| {r['err']:.1e} | {r['cycles']} ({r['modelled_ms']:.2f}) "
            f"| {100 * r['util_all']:.1f}% / {100 * r['util_linear']:.1f}% "
            f"({100 * r['util_linear_min']:.1f}%) "
            f"| {100 * r['eff_all']:.1f}% / {100 * r['eff_linear']:.1f}% "
            f"| {r.get('load', '-')} |")
    return "\n".join(lines)


def write_markdown(path: Path, rows: list[dict], command: str, load_before: str,
                   load_after: str) -> None:
    section = "\n".join([
        f"Measured {datetime.datetime.now().astimezone():%Y-%m-%d %H:%M %Z} with",
        "",
        f"    {command}",
        "",
        f"- machine: `{uname()}`",
        f"- CPU: {cpu_model()}, {os.cpu_count()} cores; torch threads "
        f"{torch.get_num_threads()}; load average before {load_before}, after {load_after}",
        f"- Python {platform.python_version()}, torch {torch.__version__}, numpy "
        f"{np.__version__}",
        "",
        table(rows),
        "",
        "Columns: compile = wall time of `nmc compile` in a fresh process (imports, torch.export "
        "load, torch-mlir import, all passes, writing prog.bin); read = `read_program` of "
        "prog.bin; eager = PyTorch forward of the exported module (no_grad); emulator, one "
        "input = `run_program` (memories, constants, decode, timing, race checks, execution); "
        "emulator, loaded once = `LoadedProgram.run` of a program loaded and decoded once "
        "(reset, inputs, execution: the cost per input of a dataset); all three interleaved "
        "in one process, a new random input each round, after a warm-up round; ratio = "
        "emulator / eager; mx util = useful "
        "MACs / (cycles x 16x16 PE array), over the whole run and over the linear layers' "
        "spans; busy efficiency = MACs / (matrix busy cycles x PE array); load = 1-minute load "
        "average when the model's timings ended (2 cores: anything above ~0.5 means other "
        "jobs shared the machine).",
    ])
    replace_section(path, "bench_deit", section)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=["deit_tiny", "deit_small", "deit_base"])
    parser.add_argument("--repeat", type=int, default=5,
                        help="timed runs of eager and of the emulator, interleaved")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--output", type=Path, default=ROOT / "BENCHMARKS.md")
    parser.add_argument("--no-write", action="store_true", help="print only")
    parser.add_argument("--quiet-load", type=float, default=None, metavar="LOAD",
                        help="before timing each model, wait (up to 10 minutes) until the "
                             "1-minute load average is below LOAD (other jobs on a shared "
                             "machine distort both timings)")
    args = parser.parse_args(argv)

    command = " ".join([".venv/bin/python", "bench/bench_deit.py",
                        *(argv if argv is not None else sys.argv[1:])])
    load_before = load_average()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models:
            if args.quiet_load is not None:
                wait_for_quiet(args.quiet_load)
            row = bench_model(name, args.repeat, Path(tmp), args.batch)
            row["load"] = load_average().split()[0]
            rows.append(row)
            print(table([row]).splitlines()[-1], flush=True)
    load_after = load_average()
    print()
    print(table(rows))
    if not args.no_write:
        write_markdown(args.output, rows, command, load_before, load_after)
        print(f"\nwrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Swin window pruning (SparseViT) benchmark: modelled latency of a Swin at several window
keep ratios and at a searched configuration, the speedup against dense, and what scoring and
gathering windows cost. Run on demand (not a test):

    .venv/bin/python bench/bench_swin.py                         # swin_tiny, updates BENCHMARKS.md
    .venv/bin/python bench/bench_swin.py --models swin_tiny swin_small swin_base
    .venv/bin/python bench/bench_swin.py --models swin_micro --no-write

Per configuration: `nmc compile --window-keep ...` (random weights, fixed seed, 224x224 for
swin_tiny), one emulator run with the trace on, and
- modelled cycles (the emulator's timing model) and the speedup against the dense program;
- the relative max error against the PyTorch reference of the same pruned model
  (models/window_prune.py), on an input whose windows differ in brightness;
- the cycles attributed (runtime/attribution.py: every cycle to one layer, so they add up)
  to scoring (token magnitudes, window scores, ranking) and to gathering (gather of the
  kept windows and of their attention bias, scatter back), as a share of the total.
The section between the bench_swin markers of BENCHMARKS.md is rewritten on each run.
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from sections import replace_section  # bench/sections.py, beside this script

ROOT = Path(__file__).resolve().parent.parent



def brightness_input(shape, seed: int = 1) -> torch.Tensor:
    """Noise whose 32x32-pixel regions have very different gains: windows rank clearly."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(shape, generator=gen) * 0.1
    gain = torch.rand((shape[0], 1, shape[2] // 32, shape[3] // 32), generator=gen) * 8
    up = torch.repeat_interleave(torch.repeat_interleave(gain, 32, 2), 32, 3)
    return x * (1 + up)


def measure(name: str, keeps: list[str], workdir: Path) -> list[dict]:
    from nmc.compiler.driver import compile_model
    from nmc.compiler.sparsity.window_rewrite import GATHERING_OPS, SCORING_OPS
    from nmc.isa.target import load_target
    from nmc.models.registry import build_model, export_to_file
    from nmc.runtime.emulator import run_program
    from nmc.runtime.report import build_report

    module, example = build_model(name, {}, seed=0)
    path = workdir / f"{name}.pt"
    export_to_file(module, example, path)
    x = brightness_input(example.shape)
    target = load_target()
    rows, dense_cycles = [], None
    for keep in keeps:
        out = workdir / "keep.json"
        t0 = time.perf_counter()
        program = compile_model(path, window=None if keep == "1.0" else
                                {"keep": keep, "out": str(out)})
        compile_s = time.perf_counter() - t0
        (input_name,) = [s.name for s in program.symbols if s.kind == "input"]
        result = run_program(program, {input_name: x.numpy()}, target, trace=True)
        ratios = json.loads(out.read_text()) if keep != "1.0" else None
        module.set_window_keep(ratios)
        with torch.no_grad():
            want = module(x).numpy()
        module.set_window_keep(None)
        (got,) = result.outputs.values()
        report = build_report(result, program)
        groups = (("scoring", SCORING_OPS), ("gathering", GATHERING_OPS))
        share = {what: sum(r.cycles or 0 for r in report.layers if r.name.endswith(suffixes))
                 for what, suffixes in groups}
        cycles = result.total_cycles
        dense_cycles = dense_cycles or cycles
        rows.append({
            "model": name, "keep": keep, "ratios": ratios, "cycles": cycles,
            "ms": result.seconds * 1e3,
            "speedup": dense_cycles / cycles, "err": float(np.abs(got - want).max()
                                                          / np.abs(want).max()),
            "scoring": share["scoring"], "gathering": share["gathering"],
            "instructions": len(program.instructions), "compile_s": compile_s,
        })
        print(json.dumps({k: v for k, v in rows[-1].items() if k != "ratios"}), flush=True)
    return rows


def table(rows: list[dict]) -> str:
    lines = ["| model | window keep | modelled cycles (ms @ clock) | speed-up vs dense | "
             "scoring: cycles (share) | gathering: cycles (share) | rel. error vs PyTorch | "
             "instrs | compile (s) |", "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        c = r["cycles"]
        lines.append(
            f"| {r['model']} | {r['keep']} | {c} ({r['ms']:.2f}) | {r['speedup']:.2f}x "
            f"| {r['scoring']} ({100 * r['scoring'] / c:.1f}%) "
            f"| {r['gathering']} ({100 * r['gathering'] / c:.1f}%) | {r['err']:.1e} "
            f"| {r['instructions']} | {r['compile_s']:.1f} |")
    searched = [r for r in rows if r["ratios"] and r["keep"].startswith("sparsevit")]
    for r in searched:
        lines.append("")
        lines.append(f"Searched ratios, {r['model']} ({r['keep']}): "
                     f"`{json.dumps(r['ratios'])}`")
    return "\n".join(lines)


def write_markdown(path: Path, body: str, command: str) -> None:
    section = "\n".join([
        "## Swin window pruning (SparseViT): modelled latency (issue 6)", "",
        f"Measured {datetime.datetime.now().astimezone():%Y-%m-%d %H:%M %Z} with", "",
        f"    {command}", "",
        f"- machine: `{platform.node()}` {platform.machine()}, Python "
        f"{platform.python_version()}; cycles are the timing model's (target sta_ref), "
        "not wall time; random weights (seed 0), one 224x224 input whose 32x32 regions "
        "differ in brightness", "",
        body, "",
        "Columns: scoring = cycles attributed to the token magnitudes, window scores and "
        "ranking (vred, permute, topk); gathering = to the gather of the kept windows (and "
        "of the shifted blocks' bias + mask terms) and the scatter back (gload / gstore "
        "and the copies around them); the window partition and reverse exist in the dense "
        "model too and are not counted. rel. error: emulator output against the PyTorch "
        "reference of the same pruned model.",
    ])
    replace_section(path, "bench_swin", section)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=["swin_tiny"])
    parser.add_argument("--keeps", nargs="+",
                        default=["1.0", "0.6", "0.4", "sparsevit:latency=0.6"])
    parser.add_argument("--output", type=Path, default=ROOT / "BENCHMARKS.md")
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args(argv)
    command = " ".join([".venv/bin/python", "bench/bench_swin.py",
                        *(argv if argv is not None else sys.argv[1:])])
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models:
            rows += measure(name, args.keeps, Path(tmp))
    body = table(rows)
    print(body)
    if not args.no_write:
        write_markdown(args.output, body, command)
        print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""`nmc sparsify --nproc 2` against one process (issue 17): seconds per epoch of the
pre-training and of ELSA's supernet on deit_digits, side by side in one run, and how far
the two results are apart. Run on demand (not a test):

    .venv/bin/python bench/bench_sparsify_nproc.py               # updates BENCHMARKS.md
    .venv/bin/python bench/bench_sparsify_nproc.py --epochs 1 --no-write

Each run is `nmc sparsify deit_digits --budget speedup=2.5 --pretrain-epochs P --epochs E
--finetune-epochs 0 --restart` with --nproc 1 and 2; the per-epoch times are those the
command logs for each stage (measured inside the training loop, so start-up, data loading
and the search are not in them). The section between the bench_sparsify_nproc markers of
BENCHMARKS.md is rewritten.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
OUT = ROOT / "out" / "bench_sparsify_nproc"

from bench_deit import cpu_model  # noqa: E402  (bench/, put on sys.path above)
from sections import publish  # noqa: E402

EPOCH_LINE = re.compile(r"^(\w+): \d+ epochs done .*; ([0-9.]+) s per epoch\)$", re.M)


def _run(nproc: int, pretrain: int, epochs: int) -> dict:
    OUT.mkdir(parents=True, exist_ok=True)
    out = OUT / f"nproc{nproc}.pt"
    command = [str(Path(sys.executable).with_name("nmc")), "sparsify", "deit_digits",
               "--budget", "speedup=2.5", "--pretrain-epochs", str(pretrain), "--epochs",
               str(epochs), "--finetune-epochs", "0", "--restart", "-q", "-o", str(out),
               "--report-json", str(OUT / f"nproc{nproc}.json"), "--nproc", str(nproc)]
    t = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True)
    wall = time.perf_counter() - t
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{done.stderr}")
    per_epoch = {stage: float(s) for stage, s in EPOCH_LINE.findall(done.stderr)}
    report = json.loads((OUT / f"nproc{nproc}.json").read_text())
    return {"wall": wall, "per_epoch": per_epoch, "report": report, "model": out}


def _weight_difference(a: Path, b: Path) -> float:
    import torch

    wa, wb = torch.export.load(str(a)).state_dict, torch.export.load(str(b)).state_dict
    return max(float((wa[k] - wb[k]).detach().abs().max()) for k in wa)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pretrain-epochs", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--no-write", action="store_true", help="do not touch BENCHMARKS.md")
    args = parser.parse_args()
    load = os.getloadavg()[0]
    runs = {n: _run(n, args.pretrain_epochs, args.epochs) for n in (1, 2)}
    rows = []
    for stage in ("pretrain", "supernet"):
        one, two = runs[1]["per_epoch"].get(stage), runs[2]["per_epoch"].get(stage)
        if one and two:
            rows.append(f"| {stage} epoch (s) | {one:.2f} | {two:.2f} | {one / two:.2f}x |")
    rows.append(f"| whole command (s) | {runs[1]['wall']:.1f} | {runs[2]['wall']:.1f} | "
                f"{runs[1]['wall'] / runs[2]['wall']:.2f}x |")
    r1, r2 = runs[1]["report"], runs[2]["report"]
    same_config = r1["config"] == r2["config"]
    lines = [
        "## nmc sparsify --nproc 2 against one process (issue 17)",
        "",
        f"Run {datetime.date.today().isoformat()} on {os.cpu_count()} cores ({cpu_model()}), "
        f"**shared with other jobs** (1-minute load average {load:.2f} when the run began). "
        f"Model: deit_digits (dim 192, depth 4) on digits, batch 64, ELSA at speedup 2.5, "
        f"{args.pretrain_epochs} pre-training and {args.epochs} supernet epochs, no "
        "fine-tune. One process trains on 2 torch threads; 2 ranks on 1 thread each (gloo, "
        "gradients all-reduced every step). Command: `.venv/bin/python "
        f"bench/bench_sparsify_nproc.py --pretrain-epochs {args.pretrain_epochs} --epochs "
        f"{args.epochs}`.",
        "",
        "| measured | --nproc 1 | --nproc 2 | speedup |",
        "|---|---:|---:|---:|",
        *rows,
        "",
        f"Results, N = 1 against N = 2 (not bit-identical: gradients are summed in another "
        f"order): chosen configuration {'the same' if same_config else 'different'}; "
        f"dense test top-1 {r1['dense_accuracy']['test']:.2%} / "
        f"{r2['dense_accuracy']['test']:.2%}; ELSA test top-1 {r1['accuracy']['test']:.2%} / "
        f"{r2['accuracy']['test']:.2%}; largest weight difference "
        f"{_weight_difference(runs[1]['model'], runs[2]['model']):.2e}.",
    ]
    publish(ROOT / "BENCHMARKS.md", "bench_sparsify_nproc", "\n".join(lines), write=not args.no_write)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""The searches with --workers 1 against --workers 2 (issue 17, "Searches in parallel"),
side by side in one run. Run on demand (not a test), under `nice -n 10` on a shared machine:

    .venv/bin/python bench/bench_search_workers.py               # updates BENCHMARKS.md
    .venv/bin/python bench/bench_search_workers.py --no-write

Three whole commands, each run with --workers 1 (no cluster) and --workers 2 (a LocalCluster
of 2 processes, started by the command: its start-up and the workers' imports included),
their output files checked byte-identical:
- `nmc compile deit_tiny.pt --sparsity elsa:speedup=2`: DeiT-tiny (224x224, 10 classes,
  random weights: the time does not depend on them), 48 layer sensitivities;
- `nmc compile swin_micro.pt --window-keep sparsevit:latency=0.8`: SparseViT's search (12
  generations of up to 16 configurations, each interpreted on 2 calibration inputs);
- `nmc sparsify deit_digits --budget speedup=2 --pretrain-epochs 0 --epochs 0
  --finetune-epochs 0`: no training, so the command is ELSA's layer sensitivity and search
  on the digits val split (359 images), with its start-up.
The section between the bench_search_workers markers of BENCHMARKS.md is rewritten.
"""

from __future__ import annotations

import argparse
import datetime
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
OUT = ROOT / "out" / "bench_search_workers"

from bench_deit import cpu_model  # noqa: E402  (bench/, put on sys.path above)
from sections import publish  # noqa: E402

NMC = str(Path(sys.executable).with_name("nmc"))


def _models() -> dict[str, Path]:
    """The two model files (exported once, cached under out/)."""
    OUT.mkdir(parents=True, exist_ok=True)
    files = {"deit": OUT / "deit_tiny10.pt", "swin": OUT / "swin_micro.pt"}
    for arch, extra, path in (("deit_tiny", ["--set", "num_classes=10"], files["deit"]),
                              ("swin_micro", [], files["swin"])):
        if not path.exists():
            subprocess.run([NMC, "export", arch, *extra, "-o", str(path)], check=True)
    return files


def _commands(files: dict[str, Path]) -> list[tuple[str, list[str], list[str]]]:
    """(label, arguments with {out} for the run's folder, the output files to compare)."""
    return [
        ("compile, ELSA sensitivity (deit_tiny 224, 48 layers)",
         ["compile", str(files["deit"]), "-o", "{out}/p.bin", "--sparsity", "elsa:speedup=2",
          "--sparsity-out", "{out}/s.json", "-q"], ["p.bin", "s.json"]),
        ("compile, SparseViT search (swin_micro)",
         ["compile", str(files["swin"]), "-o", "{out}/p.bin", "--window-keep",
          "sparsevit:latency=0.8", "--window-keep-out", "{out}/k.json", "-q"],
         ["p.bin", "k.json"]),
        ("sparsify, ELSA sensitivity + search (deit_digits, no training)",
         ["sparsify", "deit_digits", "--budget", "speedup=2", "--pretrain-epochs", "0",
          "--epochs", "0", "--finetune-epochs", "0", "-o", "{out}/d.pt", "-q"],
         ["d.pt", "d.sparsity.json"]),
    ]


def _run(args: list[str], out: Path, workers: int) -> float:
    out.mkdir(parents=True, exist_ok=True)
    for old in out.iterdir():  # a fresh run: no checkpoint to resume from
        old.unlink()
    t = time.perf_counter()
    subprocess.run([NMC, *[a.format(out=out) for a in args], "--workers", str(workers)],
                   check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - t


def _cluster_start() -> float:
    from nmc.common.cluster import dask_client

    t = time.perf_counter()
    with dask_client(workers=2):
        return time.perf_counter() - t


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--no-write", action="store_true", help="do not touch BENCHMARKS.md")
    args = parser.parse_args()
    files = _models()
    load = os.getloadavg()[0]
    rows = []
    for i, (label, argv, outputs) in enumerate(_commands(files)):
        times = {}
        for workers in (1, 2):
            times[workers] = _run(argv, OUT / f"run{i}-w{workers}", workers)
        same = all((OUT / f"run{i}-w1" / f).read_bytes() == (OUT / f"run{i}-w2" / f).read_bytes()
                   for f in outputs)
        if not same:
            raise SystemExit(f"{label}: --workers 2 wrote other files than --workers 1")
        rows.append((label, times[1], times[2]))
    start = _cluster_start()
    end_load = os.getloadavg()[0]
    lines = [
        "## The searches over Dask workers (issue 17)",
        "",
        f"Run {datetime.date.today().isoformat()} on {os.cpu_count()} cores ({cpu_model()}), "
        f"**shared with other jobs** (1-minute load average {load:.2f} when the run began, "
        f"{end_load:.2f} at its end), so the 2-worker numbers are what two busy cores give, "
        "not two idle ones. Whole commands, as a user waits for them: the 2-worker runs "
        "include the LocalCluster's start and the workers' imports. Command: "
        "`nice -n 10 .venv/bin/python bench/bench_search_workers.py`.",
        "",
        "| command | --workers 1 (s) | --workers 2 (s) | speedup |",
        "|---|---:|---:|---:|",
        *[f"| {name} | {one:.1f} | {two:.1f} | {one / two:.2f}x |" for name, one, two in rows],
        "",
        f"LocalCluster start-up alone: {start:.1f} s. Every pair of runs wrote byte-identical "
        "files (prog.bin and the configuration JSON; sparsify's model file), checked by the "
        "script.",
    ]
    publish(ROOT / "BENCHMARKS.md", "bench_search_workers", "\n".join(lines),
            write=not args.no_write)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""`nmc eval` throughput with --workers 1 against --workers 2 (issue 17), side by side in
one run. Run on demand (not a test):

    .venv/bin/python bench/bench_eval_workers.py                 # updates BENCHMARKS.md
    .venv/bin/python bench/bench_eval_workers.py --images 16 --no-write

The model is DeiT-tiny (224x224, random weights, 10 classes: throughput does not depend on
the weights) compiled dense, evaluated on the first IMAGES digits test images (resized to
224). Two measurements:
- the evaluation alone, in this process: `run_classifier` (serial, what --workers 1 runs)
  against `run_classifier_sharded` on an already started LocalCluster of 2 workers, twice:
  cold (the workers import nmc, fetch and load the program) and warm (the same call
  again: the workers' LoadedProgram is reused); logits checked bit-identical;
- the whole command, `nmc eval prog.bin --limit IMAGES --workers 1 | 2` as a subprocess:
  what a user waits for, cluster start-up, imports and data set loading included.
The section between the bench_eval_workers markers of BENCHMARKS.md is rewritten.
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
OUT = ROOT / "out" / "bench_eval_workers"

from bench_deit import cpu_model  # noqa: E402  (bench/, put on sys.path above)
from sections import publish  # noqa: E402


def _program() -> Path:
    """DeiT-tiny with 10 classes, exported and compiled once (cached under out/)."""
    OUT.mkdir(parents=True, exist_ok=True)
    model, prog = OUT / "deit_tiny10.pt", OUT / "deit_tiny10.bin"
    nmc = str(Path(sys.executable).with_name("nmc"))
    if not prog.exists():
        subprocess.run([nmc, "export", "deit_tiny", "--set", "num_classes=10", "-o",
                        str(model)], check=True)
        subprocess.run([nmc, "compile", str(model), "-o", str(prog), "-q"], check=True)
    return prog


def _in_process(prog: Path, images: int) -> dict:
    from nmc.common.cluster import dask_client
    from nmc.isa.container import read_program
    from nmc.isa.target import load_target
    from nmc.models.datasets import load_dataset
    from nmc.runtime.distributed_eval import run_classifier_sharded
    from nmc.runtime.evaluate import run_classifier

    program, target = read_program(prog), load_target()
    x = load_dataset("digits", 224)["test"].images[:images].numpy()
    t = time.perf_counter()
    serial = run_classifier(program, target, x)
    t_serial = time.perf_counter() - t
    times = {"serial_s": t_serial}
    t = time.perf_counter()
    with dask_client(workers=2) as client:
        times["start_s"] = time.perf_counter() - t
        for run in ("cold_s", "warm_s"):  # cold: the workers import nmc and load the program
            t = time.perf_counter()
            sharded = run_classifier_sharded(client, program, prog.read_bytes(), target, x)
            times[run] = time.perf_counter() - t
            if sharded.logits.tobytes() != serial.logits.tobytes():
                raise SystemExit("the sharded logits differ from the serial ones")
    return times


def _command(prog: Path, images: int, workers: int) -> float:
    nmc = str(Path(sys.executable).with_name("nmc"))
    t = time.perf_counter()
    subprocess.run([nmc, "eval", str(prog), "--limit", str(images), "--workers",
                    str(workers), "-q"], check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - t


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=48)
    parser.add_argument("--no-write", action="store_true", help="do not touch BENCHMARKS.md")
    args = parser.parse_args()
    prog = _program()
    load = os.getloadavg()[0]
    inner = _in_process(prog, args.images)
    e2e = {w: _command(prog, args.images, w) for w in (1, 2)}
    n = args.images
    rows = [
        ("evaluation alone, workers starting cold", n / inner["serial_s"], n / inner["cold_s"]),
        ("evaluation alone, program already loaded on the workers", n / inner["serial_s"],
         n / inner["warm_s"]),
        ("whole `nmc eval` command", n / e2e[1], n / e2e[2]),
    ]
    lines = [
        "## nmc eval over Dask workers (issue 17)",
        "",
        f"Run {datetime.date.today().isoformat()} on {os.cpu_count()} cores ({cpu_model()}), "
        f"**shared with other jobs** (1-minute load average {load:.2f} when the run began), so "
        "the 2-worker numbers are what two busy cores give, not two idle ones. "
        f"Model: DeiT-tiny, 224x224, 10 classes, dense, on the first {n} digits test "
        f"images. Command: `.venv/bin/python bench/bench_eval_workers.py --images {n}`.",
        "",
        "| measured | --workers 1, images/s | --workers 2, images/s | speedup |",
        "|---|---:|---:|---:|",
        *[f"| {name} | {one:.2f} | {two:.2f} | {two / one:.2f}x |" for name, one, two in rows],
        "",
        f"LocalCluster start-up: {inner['start_s']:.1f} s (in the whole-command row, not the "
        "evaluation rows). The sharded logits are bit-identical to the serial ones (checked by "
        "the script). The issue's target is >= 1.8x with 2 workers on 2 cores.",
    ]
    publish(ROOT / "BENCHMARKS.md", "bench_eval_workers", "\n".join(lines), write=not args.no_write)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

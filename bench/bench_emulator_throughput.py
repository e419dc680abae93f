"""Emulator throughput (issue 17): images per second on DeiT-small, the program loaded once,
run one input at a time (`LoadedProgram.run`) and many inputs per walk of the instruction
stream (`LoadedProgram.run_batch`), each with every tile run on its own (`fuse=False`, the
definition) and with exact fusion (`nmc.runtime.fusion`, the default; its outputs are
checked bit-identical to the per-tile ones here), beside PyTorch eager fp32 at batch 1
(default threads, and one thread, as the emulator uses), all measured side by side in one
process. Run on demand:

    .venv/bin/python bench/bench_emulator_throughput.py             # updates BENCHMARKS.md
    .venv/bin/python bench/bench_emulator_throughput.py --images 8 --no-write

Calibration of the int8 program: two fixed-seed random inputs (scales do not change speed).
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from sections import replace_section  # bench/, beside this script

ROOT = Path(__file__).resolve().parent.parent
CONFIGS = [("fp32", "sta_ref", None), ("fp32 2:4", "sta_ref", "2:4"),
           ("int8", "sta_int8", None), ("int8 2:4", "sta_int8", "2:4")]


def compile_program(path: Path, target: str, sparsity: str | None, calib: Path):
    from nmc.compiler.driver import compile_model

    quant = {"calib": str(calib)} if target == "sta_int8" else None
    spec = None if sparsity is None else {"spec": sparsity, "calib": "", "report": False}
    return compile_model(path, target, sparsity=spec, quant=quant)


CPU_SECONDS: dict[str, float] = {}  # per timing label: the CPU seconds per image


def seconds_per_image(call, images: int, repeats: int, label: str = "") -> float:
    """The best of `repeats` timings of `call()` (which handles `images` inputs), in
    wall-clock seconds; the best CPU seconds of this process go to CPU_SECONDS[label]
    (on a shared machine, what the emulator itself spent: it runs on one thread)."""
    best, best_cpu = float("inf"), float("inf")
    for _ in range(repeats):
        start, cpu = time.perf_counter(), time.process_time()
        call()
        best = min(best, time.perf_counter() - start)
        best_cpu = min(best_cpu, time.process_time() - cpu)
    CPU_SECONDS[label] = best_cpu / images
    return best / images


def main(argv=None) -> int:
    import torch

    from nmc.isa.target import load_target
    from nmc.models.registry import build_model, export_to_file
    from nmc.runtime.emulator import LoadedProgram

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="deit_small")
    p.add_argument("--images", type=int, default=16, help="inputs per timing")
    p.add_argument("--batch", type=int, default=8, help="inputs per walk (run_batch)")
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--no-write", action="store_true")
    args = p.parse_args(argv)
    load_start = os.getloadavg()[0]
    module, example = build_model(args.model, {}, seed=0)
    rng = np.random.default_rng(1)
    xs = [rng.standard_normal(example.shape).astype(np.float32) for _ in range(args.images)]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        path, calib = Path(tmp) / "m.pt", Path(tmp) / "calib.npy"
        export_to_file(module, example, path)
        np.save(calib, rng.standard_normal((2, *example.shape)).astype(np.float32))
        for label, target, sparsity in CONFIGS:
            program = compile_program(path, target, sparsity, calib)
            (name,) = [s.name for s in program.symbols if s.kind == "input"]
            row, outputs = [label], {}
            for fuse in (False, True):
                loaded = LoadedProgram(program, load_target(target), fuse=fuse)
                loaded.run({name: xs[0]})  # decodes, times and race-checks (and fuses) once
                outputs[fuse] = [loaded.run({name: x}).outputs for x in xs]
                one = seconds_per_image(lambda: [loaded.run({name: x}) for x in xs],
                                        len(xs), args.repeats, f"{label} {fuse} one")

                def batched():
                    for start in range(0, len(xs), args.batch):
                        loaded.run_batch([{name: x} for x in xs[start:start + args.batch]])

                batched()  # prepares the walk once
                many = seconds_per_image(batched, len(xs), args.repeats,
                                         f"{label} {fuse} batched")
                row += [one, many]
                print(label, "fused" if fuse else "per tile", f"{1 / one:.2f} img/s one by one,"
                      f" {1 / many:.2f} img/s batched", flush=True)
            for a, b in zip(outputs[False], outputs[True]):
                assert all(a[k].tobytes() == b[k].tobytes() for k in a), "fused != per tile"
            rows.append(tuple(row))
    eager = {}
    threads = torch.get_num_threads()
    with torch.no_grad():
        for n in (threads, 1):
            torch.set_num_threads(n)
            module(torch.from_numpy(xs[0]))
            eager[n] = seconds_per_image(lambda: [module(torch.from_numpy(x)) for x in xs],
                                         len(xs), args.repeats)
        torch.set_num_threads(threads)
    when = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    cmd = " ".join([".venv/bin/python", "bench/bench_emulator_throughput.py",
                    *(argv if argv is not None else sys.argv[1:])])
    lines = [
        f"## Emulator throughput (issue 17): {args.model}, images per second\n",
        f"Measured {when} with\n\n    {cmd}\n",
        f"- machine: `{platform.node()}`, {os.cpu_count()} cores shared with other jobs "
        f"(load average {load_start:.1f} at the start, {os.getloadavg()[0]:.1f} at the "
        f"end), Python {platform.python_version()}, torch {torch.__version__}",
        f"- {args.images} random 224x224 inputs per timing, best of {args.repeats}; the "
        f"emulator runs torch on 1 thread; batched = `run_batch` of {args.batch} inputs "
        f"per walk (each result bit-identical to `run`); per tile = `fuse=False`, fused = "
        f"exact fusion (the default; outputs checked bit-identical to per tile)",
        f"- PyTorch eager fp32, batch 1: {1 / eager[threads]:.2f} img/s with its default "
        f"{threads} threads, {1 / eager[1]:.2f} img/s on 1 thread\n",
        "| program | per tile, one by one (img/s) | per tile, batched | fused, one by one | "
        "fused, batched | fused / per tile (one by one) | fused / per tile (batched) | "
        "fused batched / eager (default threads) | fused batched / eager (1 thread) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for label, one, many, f_one, f_many in rows:
        lines.append(f"| {label} | {1 / one:.2f} | {1 / many:.2f} | {1 / f_one:.2f} | "
                     f"{1 / f_many:.2f} | {one / f_one:.2f}x | {many / f_many:.2f}x | "
                     f"{eager[threads] / f_many:.2f}x | {eager[1] / f_many:.2f}x |")
    lines += [
        "\nThe same runs in CPU seconds of the emulator's process per image (the emulator "
        "runs on one thread, so on an idle machine this is its wall-clock time; on a "
        "shared one it leaves out the time other jobs held the cores):\n",
        "| program | per tile, one by one (ms) | per tile, batched | fused, one by one | "
        "fused, batched | fused / per tile (one by one) | fused / per tile (batched) |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for label, *_ in rows:
        cpu = [CPU_SECONDS[f"{label} {fuse} {how}"] for fuse in (False, True)
               for how in ("one", "batched")]
        lines.append(f"| {label} | " + " | ".join(f"{1000 * c:.0f}" for c in cpu)
                     + f" | {cpu[0] / cpu[2]:.2f}x | {cpu[1] / cpu[3]:.2f}x |")
    text = "\n".join(lines)
    print(text)
    if not args.no_write:
        replace_section(ROOT / "BENCHMARKS.md", "bench_emulator_throughput", text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

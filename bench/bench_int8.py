"""int8 benchmark (issue 16): DeiT-small / DeiT-base compiled for sta_ref (fp32) and
sta_int8 (int8 linears and patch embedding, docs/INT8.md), dense / 2:4 / 1:8 / ELSA
speed-up 2 and 3: modelled cycles, modelled DRAM bytes, and the sparse linears' span
speed-up against the ideal M/N (as bench_sparse.py computes them, per target against that
target's dense program). Also, on DeiT-small, the emulator's wall time per input on the
int8 program (loaded once) beside PyTorch eager fp32 on the same input. Run on demand:

    .venv/bin/python bench/bench_int8.py                       # updates BENCHMARKS.md
    .venv/bin/python bench/bench_int8.py --models deit_small --specs dense 2:4 --no-write

Calibration: one fixed-seed random input (the scales' quality does not change cycles).
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

from bench_sparse import modelled_timing, sparse_ratios  # bench/, beside this script
from sections import replace_section

ROOT = Path(__file__).resolve().parent.parent
SPECS = ["", "2:4", "1:8", "elsa:speedup=2", "elsa:speedup=3"]
TARGETS = ["sta_ref", "sta_int8"]


def compile_for(path: Path, spec: str, target: str, calib: Path):
    from nmc.compiler.emit import module_to_program
    from nmc.compiler.frontend import import_model
    from nmc.compiler.pipeline import default_pipeline_spec, make_context, run_pipeline
    from nmc.compiler.sparsity.sensitivity import clear_cache

    clear_cache()
    ctx = make_context()
    module = import_model(path, ctx)
    quant = {"calib": str(calib)} if target == "sta_int8" else None
    run_pipeline(module, default_pipeline_spec(target, {"spec": spec}, None, quant), ctx)
    return module_to_program(module, {"model": str(path)})


def dram_bytes(program) -> int:
    """Bytes the program's DMA moves (the ISA's dram_traffic facts, words x 4)."""
    n = next(i for i, ins in enumerate(program.instructions) if ins.mnemonic == "halt")
    total = 0
    for ins in program.instructions[:n]:
        read, written = ins.spec.dram_traffic(ins.fields)
        total += int(read) + int(written)
    return total * 4


def measure(name: str, specs: list[str]) -> tuple[list[dict], dict]:
    from nmc.isa.target import load_target
    from nmc.models.registry import build_model, export_to_file

    module, example = build_model(name, {})
    rows, programs = [], {}
    with tempfile.TemporaryDirectory() as d:
        path, calib = Path(d) / "model.pt", Path(d) / "calib.npy"
        export_to_file(module, example, path)
        rng = np.random.default_rng(0)
        np.save(calib, rng.standard_normal((1, *example.shape)).astype(np.float32))
        for target_name in TARGETS:
            target = load_target(target_name)
            for spec in specs:
                t0 = time.perf_counter()
                program = compile_for(path, spec, target_name, calib)
                t1 = time.perf_counter()
                programs[(target_name, spec)] = program
                result = modelled_timing(program, target)
                meta = program.meta.get("layers", {})
                rows.append({
                    "model": name, "target": target_name, "spec": spec or "dense",
                    "cycles": result["cycles"], "clock_mhz": target.clock_mhz,
                    "density": {k: v["density"] for k, v in meta.items()
                                if v["pattern"] != "dense"},
                    "linears": list(meta), "layers": {l["name"]: l for l in result["layers"]},
                    "dram_mb": dram_bytes(program) / 1e6,
                    "const_mb": sum(c.size for _, c in program.constants) * 4 / 1e6,
                    "compile_s": t1 - t0,
                })
                print({k: v for k, v in rows[-1].items()
                       if k not in ("layers", "density", "linears")}, flush=True)
    return rows, {"module": module, "example": example, "programs": programs}


def emulator_vs_eager(module, example, program, repeats: int = 3) -> tuple[float, float]:
    """(emulator s per input, the int8 program loaded once; PyTorch eager fp32 s)."""
    import torch

    from nmc.isa.target import load_target
    from nmc.runtime.emulator import LoadedProgram

    x = np.random.default_rng(1).standard_normal(example.shape).astype(np.float32)
    loaded = LoadedProgram(program, load_target("sta_int8"))
    (name,) = [s.name for s in program.symbols if s.kind == "input"]
    loaded.run({name: x})  # the first run decodes, times and race-checks
    t0 = time.perf_counter()
    for _ in range(repeats):
        loaded.run({name: x})
    emu = (time.perf_counter() - t0) / repeats
    with torch.no_grad():
        module(torch.from_numpy(x))
        t0 = time.perf_counter()
        for _ in range(repeats):
            module(torch.from_numpy(x))
    return emu, (time.perf_counter() - t0) / repeats


def table(rows: list[dict]) -> str:
    out = ["| model | target | sparsity | modelled cycles (ms) | vs fp32 same sparsity | "
           "DRAM MB moved | sparse-linear span speed-up | ideal | span / ideal | "
           "load / matrix busy | constants (MB) | compile (s) |",
           "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    dense = {(r["model"], r["target"]): r for r in rows if r["spec"] == "dense"}
    fp32 = {(r["model"], r["spec"]): r for r in rows if r["target"] == "sta_ref"}
    for r in rows:
        span, _busy, ideal, load = sparse_ratios(r, dense[(r["model"], r["target"])])
        ms = r["cycles"] / (r["clock_mhz"] * 1e3)
        base = fp32.get((r["model"], r["spec"]))
        vs = f"{base['cycles'] / r['cycles']:.2f}x" if base else "-"
        out.append(f"| {r['model']} | {r['target']} | {r['spec']} | {r['cycles']} "
                   f"({ms:.2f}) | {vs} | {r['dram_mb']:.1f} | {span:.2f}x | {ideal:.2f}x | "
                   f"{span / ideal:.0%} | {load:.2f} | {r['const_mb']:.1f} | "
                   f"{r['compile_s']:.0f} |")
    return "\n".join(out)


NOTES = """Notes (hand-written, from the rows above and bench runs of single layers):

- int8 moves 3x fewer DRAM bytes (DeiT-small dense 175 vs 525 MB, DeiT-base 699 vs 1910 MB:
  int8 weights and A tiles; outputs stay fp32) but the dense programs do not get faster:
  they are matrix-bound on the 16x16 array, which does one k-step per cycle in int8 as in
  fp32 (sta_int8 models no wider int8 array), and each int8 layer first quantises its
  input in a pre-pass (read fp32 A, `vun quant`, store int8) that the matrix unit waits for:
  up to ~8% of a dense layer (`quant` stall, costed; the tile search's cost is within 8% of the
  emulator's timing, tests/test_int8_models.py).
- Where fp32 was DMA-bound, int8 pays: 1:8 on DeiT-base runs 1.24x faster than fp32 1:8
  and its sparse-layer span reaches 81 % of the ideal 8x (fp32: 58 %); 2:4 reaches 97 %
  (fp32 96 %), ELSA 2 / 3 93 % / 88 % (fp32 84 % / 73 %). What bounds 1:8 now: the serial
  pre-pass (its fp32 read of A alone is a sizeable part of a 1:8 layer's matmuls) and the
  fp32 outputs (4 bytes each). (DeiT-small 2:4 moves more DRAM bytes than dense int8, 194
  vs 175 MB: the tile search trades A re-reads for matrix time.) The fixes, not done:
  quantise in the producer's epilogue (LayerNorm, GELU) so the pre-pass and its DRAM round
  trip go, and store int8 where the consumer is an int8 matmul (fc1 -> GELU -> fc2).
- Accuracy (bench/int8_digits_accuracy.py: deit_digits trained 25 epochs with AdamW,
  test split of 359 images, calibration on 32 training images): fp32 94.99 % (PyTorch and
  the sta_ref emulator), int8 on the sta_int8 emulator 94.99 %: within 0.5 pt. Emulator time per
  image at that size: 16 ms fp32, 35 ms int8 (measured when exact int8 tiles were float64
  GEMMs; they are `torch._int_mm` now, see "Emulator throughput")."""


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", nargs="+", default=["deit_small", "deit_base"])
    p.add_argument("--specs", nargs="+", default=SPECS)
    p.add_argument("--no-write", action="store_true")
    args = p.parse_args(argv)
    specs = ["" if s == "dense" else s for s in args.specs]
    if specs[0] != "":
        specs.insert(0, "")
    load = os.getloadavg()[0]
    rows, speed = [], None
    for name in args.models:
        got, extra = measure(name, specs)
        rows += got
        if name == "deit_small":
            emu, eager = emulator_vs_eager(extra["module"], extra["example"],
                                           extra["programs"][("sta_int8", "")])
            speed = (f"- emulator, int8 DeiT-small dense, program loaded once: {emu * 1e3:.0f} "
                     f"ms per input; PyTorch eager fp32 on the same input: {eager * 1e3:.0f} ms "
                     f"(same process, {os.cpu_count()} cores shared)\n")
    load = f"{load:.1f} at the start, {os.getloadavg()[0]:.1f} at the end"
    when = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    cmd = " ".join([".venv/bin/python", "bench/bench_int8.py", *(argv or sys.argv[1:])])
    text = (f"## int8 (issue 16): fp32 vs int8, modelled cycles and DRAM bytes\n\n"
            f"Measured {when} with\n\n    {cmd}\n\n"
            f"- machine: `{platform.node()}`, Python {platform.python_version()}; cycles and "
            f"DRAM bytes are the timing model's (sta_ref: fp32; sta_int8: the same machine "
            f"with int8 linears and patch embedding, docs/INT8.md); load average {load}\n"
            f"- sparsity as in bench_sparse (every block linear; ELSA per layer, costed on "
            f"the target's own timing); random weights, batch 1, 224x224\n"
            + (speed or "") + "\n" + table(rows) + "\n\n"
            "Columns: vs fp32 = sta_ref cycles / these cycles at the same --sparsity; DRAM MB "
            "moved = bytes of all loads and stores; span speed-up, ideal, span / ideal and "
            "load / matrix busy over the layers the configuration makes sparse, against the "
            "same target's dense program (bench_sparse's definitions).")
    text += "\n\n" + NOTES
    print(text)
    if not args.no_write:
        replace_section(ROOT / "BENCHMARKS.md", "bench_int8", text)
    return 0


if __name__ == "__main__":
    sys.exit(main())

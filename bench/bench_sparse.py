"""N:M sparsity benchmark: modelled cycles of DeiT-small / DeiT-base, dense vs 2:4 vs 1:8
on every transformer-block linear (qkv, proj, fc1, fc2; the head and the patch embedding
stay dense), and how close the sparse linear layers come to the ideal M/N speed-up.
Run on demand (not a test):

    .venv/bin/python bench/bench_sparse.py                   # appends/updates BENCHMARKS.md
    .venv/bin/python bench/bench_sparse.py --models deit_small --no-write

The patterns are set on the nm.linear ops after raise-torch-to-nm (what `--sparsity N:M`
does through assign-sparsity), then the rest of the default pipeline runs; the emulator
modelled cycles come from the emulator's timing rule (`timing.token_schedule` over
`instruction_cycles`, what `nmc run` reports; the program is not executed, its timing does
not depend on the data). Ratios: dense / sparse of the sum over the sparse layers of their span
(first instruction start to last end) and of their matrix-unit busy cycles; ideal = M/N.

The section lives between its own markers in BENCHMARKS.md (replaced on every run; the
rest of the file, e.g. bench_deit's section, is left as it is).
"""

from __future__ import annotations

import argparse
import datetime
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
BEGIN = "<!-- bench_sparse: begin -->"
END = "<!-- bench_sparse: end -->"
BLOCK_LINEARS = ("attn.qkv", "attn.proj", "mlp.fc1", "mlp.fc2")


def compile_with_config(path: Path, config: dict[str, tuple[int, int]], target="sta_ref"):
    from nmc.compiler.dialects.nm import LinearOp, sparsity_attr
    from nmc.compiler.emit import module_to_program
    from nmc.compiler.frontend import import_model
    from nmc.compiler.pipeline import default_pipeline_spec, make_context, run_pipeline

    ctx = make_context()
    module = import_model(path, ctx)
    spec = default_pipeline_spec(target).split(",")
    run_pipeline(module, spec[0], ctx)
    for op in module.walk():
        if isinstance(op, LinearOp) and op.layer_name in config:
            op.properties["sparsity"] = sparsity_attr(*config[op.layer_name])
    run_pipeline(module, ",".join(spec[1:]), ctx)
    return module_to_program(module, {"model": str(path)})


def modelled_timing(program, target) -> dict:
    """The emulator's timing (the same rule: `timing.token_schedule` on the instructions'
    `instruction_cycles`, which the emulator's fast path uses) without executing the
    program: total cycles and per layer span and matrix-unit busy cycles."""
    from nmc.isa.table import Unit
    from nmc.runtime.timing import instruction_cycles, token_schedule

    instrs = program.instructions
    n = next(i for i, ins in enumerate(instrs) if ins.mnemonic == "halt")
    instrs = instrs[:n]
    cycles = [instruction_cycles(i, target) for i in instrs]
    timed = token_schedule([int(i.unit) for i in instrs], [i["wait"] for i in instrs],
                           [i["signal"] for i in instrs], cycles)
    assert timed is not None
    starts, ends = timed[0], timed[1]
    layers = []
    for r in program.debug:
        lo, hi = r.start_pc, min(r.end_pc, n)
        if lo >= hi:
            continue
        layers.append({"name": r.name, "span": max(ends[lo:hi]) - min(starts[lo:hi]),
                       "matrix_busy": sum(c for i, c in zip(instrs[lo:hi], cycles[lo:hi])
                                          if i.unit == Unit.MATRIX)})
    return {"cycles": max(ends, default=0), "layers": layers}


def measure(name: str, patterns) -> list[dict]:
    from nmc.isa.target import load_target
    from nmc.models.registry import build_model, export_to_file
    target = load_target()
    module, example = build_model(name, {})
    depth = len(module.blocks)
    rows = []
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "model.pt"
        export_to_file(module, example, path)
        for pattern in patterns:
            config = {} if pattern is None else {
                f"blocks.{b}.{lin}": pattern for b in range(depth) for lin in BLOCK_LINEARS}
            sparse_layers = {f"blocks.{b}.{lin}" for b in range(depth) for lin in BLOCK_LINEARS}
            t0 = time.perf_counter()
            program = compile_with_config(path, config)
            t1 = time.perf_counter()
            result = modelled_timing(program, target)
            t2 = time.perf_counter()
            layers = [l for l in result["layers"] if l["name"] in sparse_layers]
            weight_bytes = sum(c.size for _, c in program.constants) * 4
            rows.append({
                "model": name, "pattern": "dense" if pattern is None else f"{pattern[0]}:{pattern[1]}",
                "ideal": 1.0 if pattern is None else pattern[1] / pattern[0],
                "cycles": result["cycles"], "clock_mhz": target.clock_mhz,
                "lin_span": sum(l["span"] for l in layers),
                "lin_busy": sum(l["matrix_busy"] for l in layers),
                "const_mb": weight_bytes / 1e6, "instrs": len(program.instructions),
                "compile_s": t1 - t0, "run_s": t2 - t1,
            })
            print(rows[-1], flush=True)
    return rows


def table(rows: list[dict]) -> str:
    out = ["| model | pattern | modelled cycles (ms @ clock) | total speed-up | sparse-linear "
           "span speed-up | sparse-linear matrix-busy speed-up | ideal M/N | span / ideal | "
           "constants (MB) | instrs |",
           "|---|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    dense = {r["model"]: r for r in rows if r["pattern"] == "dense"}
    for r in rows:
        d = dense[r["model"]]
        span = d["lin_span"] / r["lin_span"]
        busy = d["lin_busy"] / r["lin_busy"]
        ms = r["cycles"] / (r["clock_mhz"] * 1e3)
        out.append(f"| {r['model']} | {r['pattern']} | {r['cycles']} ({ms:.2f}) | "
                   f"{d['cycles'] / r['cycles']:.2f}x | {span:.2f}x | {busy:.2f}x | "
                   f"{r['ideal']:.0f}x | {span / r['ideal']:.0%} | {r['const_mb']:.1f} | "
                   f"{r['instrs']} |")
    return "\n".join(out)


def write_section(text: str) -> None:
    path = ROOT / "BENCHMARKS.md"
    doc = path.read_text()
    section = f"{BEGIN}\n{text}\n{END}"
    if BEGIN in doc and END in doc:
        head, rest = doc.split(BEGIN, 1)
        doc = head + section + rest.split(END, 1)[1]
    else:
        doc = doc.rstrip("\n") + "\n\n" + section + "\n"
    path.write_text(doc)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", nargs="+", default=["deit_small", "deit_base"])
    p.add_argument("--no-write", action="store_true")
    args = p.parse_args(argv)
    rows = []
    for name in args.models:
        rows += measure(name, [None, (2, 4), (1, 8)])
    when = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    cmd = " ".join([".venv/bin/python", "bench/bench_sparse.py", *(argv or sys.argv[1:])])
    text = (f"## N:M sparsity: modelled cycles (issue 5)\n\nMeasured {when} with\n\n    {cmd}\n\n"
            f"- machine: `{platform.node()}` {platform.machine()}, Python "
            f"{platform.python_version()}; cycles are the timing model's (target sta_ref), "
            f"not wall time\n"
            f"- 2:4 / 1:8 on every block linear (qkv, proj, fc1, fc2), random weights, batch 1, "
            f"224x224; patch embedding, attention and head dense\n\n"
            + table(rows) + "\n\n"
            "Columns: speed-ups are dense / sparse; sparse-linear span = sum over the sparse "
            "layers of first-start to last-end cycles; matrix-busy = their matrix-unit busy "
            "cycles; span / ideal = span speed-up over M/N.")
    print(text)
    if not args.no_write:
        write_section(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())

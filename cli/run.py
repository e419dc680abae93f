"""`nmc run` (a prog.bin on the emulator), `nmc report` (run programs of one model and
report, compare, plot) and `nmc eval` (top-1 accuracy on a data set, run on the emulator)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from nmc.cli.inputs import load_inputs, split_spec, synthetic_inputs
from nmc.cli.paths import check_files
from nmc.cli.shared import (
    UsageError, add_cluster_options, add_data_options, add_program_target, add_quiet,
    cluster_for, positive_int, target_for, write_json,
)
from nmc.common.fileio import atomic_save_npy, atomic_save_npz, atomic_write_bytes


def register(sub) -> None:
    p = sub.add_parser("run", help="run prog.bin on the emulator")
    p.add_argument("program", type=Path)
    p.add_argument("--input", "-i", action="append", default=[], metavar="[NAME=]FILE.npy")
    p.add_argument("-o", "--output", type=Path, help=".npy (one output) or .npz")
    p.add_argument("--report", action="store_true",
                   help="print the cycle report (per layer, per unit, totals, speedup)")
    p.add_argument("--trace", type=Path, metavar="FILE.json",
                   help="write a Chrome trace-event file (ui.perfetto.dev, chrome://tracing)")
    p.add_argument("--no-fuse", action="store_true",
                   help="run every matrix tile on its own (the emulator's definition) instead "
                        "of the larger GEMMs the footprints prove equal (the same outputs "
                        "and cycles, slower; for checking)")
    _add_run_options(p)
    p.set_defaults(handler=cmd_run)

    p = sub.add_parser("report", help="run programs of one model and report, compare, plot")
    p.add_argument("programs", type=Path, nargs="+", metavar="prog.bin",
                   help="one program, or several of the same model (the first is the "
                        "reference of the speedups)")
    p.add_argument("--input", "-i", action="append", default=[], metavar="[NAME=]FILE.npy",
                   help="inputs of every program (default: fixed-seed random inputs; cycles "
                        "do not depend on the values)")
    p.add_argument("--plot", type=Path, metavar="FILE.png", help="write the per-layer plot")
    p.add_argument("--group", choices=("auto", "layer", "block", "role"), default="auto",
                   help="rows of the comparison and the plot: every layer, one per block "
                        "(blocks.3.*), one per role (blocks.*.mlp.fc1), or auto (layers "
                        "up to 40, else blocks; default)")
    p.add_argument("--labels", metavar="A,B,...", help="names of the programs (default: "
                                                       "their file names)")
    _add_run_options(p)
    p.set_defaults(handler=cmd_report)

    p = sub.add_parser("eval", help="top-1 accuracy of a compiled classifier, run on the "
                                    "emulator, on a data set")
    p.add_argument("program", type=Path)
    add_data_options(p)
    p.add_argument("--split", default="test", help="train, val or test (default: %(default)s)")
    p.add_argument("--limit", type=int, metavar="N", help="only the first N images")
    p.add_argument("--reference", type=Path, metavar="MODEL.pt",
                   help="also run this torch.export file in PyTorch and compare predictions")
    p.add_argument("--json", type=Path, metavar="FILE", help="write the results as JSON")
    add_cluster_options(p, "the images")
    add_program_target(p)
    add_quiet(p)
    p.set_defaults(handler=cmd_eval)


def _add_run_options(p: argparse.ArgumentParser) -> None:
    """Options of the commands that run programs and report their cycles (run, report)."""
    p.add_argument("--report-json", type=Path, metavar="FILE",
                   help="write the report as JSON (per layer: cycles, MACs, sparsity, ...)")
    add_program_target(p)
    p.add_argument("--max-instructions", type=positive_int, metavar="N",
                   help="refuse programs with more than N instructions before halt")
    p.add_argument("--dense-baseline", type=Path, metavar="DENSE.bin",
                   help="the same model compiled dense: run it for the speedup (default: "
                        "the compiler's estimate in prog.bin, if any)")
    p.add_argument("--baseline-cycles", type=int, metavar="N",
                   help="cycles of the dense model, for the speedup")
    add_quiet(p)


# ---------------------------------------------------------------------------- run, report


def _run_traced(path: Path, target_option: str | None, input_specs: list[str] | None,
                max_instructions: int | None = None, program=None):
    """Run a prog.bin (read from `path` unless `program` is given) with its trace:
    (program, result). Without `input_specs` the inputs are `synthetic_inputs`."""
    from nmc.isa.container import read_program
    from nmc.runtime.emulator import run_program

    program = program if program is not None else read_program(path)
    target = target_for(program, target_option, path)
    inputs = load_inputs(input_specs, program) if input_specs else synthetic_inputs(program)
    return program, run_program(program, inputs, target, max_instructions=max_instructions,
                                trace=True)


def _baseline(args, path: Path, program):
    """The dense baseline of --baseline-cycles / --dense-baseline (None: the report falls
    back on the compiler's estimate in META, else says "unknown"). A --dense-baseline must
    be the model of `program` (at `path`) compiled dense, checked before it runs: a
    speedup over another model ("22.397x" of a Swin over a DeiT) means nothing."""
    from nmc.isa.container import read_program
    from nmc.runtime.compare import model_difference
    from nmc.runtime.report import Baseline, build_report

    cycles, dense = getattr(args, "baseline_cycles", None), getattr(args, "dense_baseline", None)
    if cycles is not None and dense is not None:
        raise UsageError("give --baseline-cycles or --dense-baseline, not both")
    if cycles is not None:
        if cycles <= 0:
            raise UsageError(f"--baseline-cycles must be positive, not {cycles}")
        return Baseline(cycles, "--baseline-cycles")
    if dense is None:
        return None
    dense_program = read_program(dense)
    why = model_difference(program, dense_program)
    if why is not None:
        raise UsageError(f"--dense-baseline {dense} is not the model of {path} ({why}): "
                         "give the same model compiled dense")
    dense_program, result = _run_traced(dense, args.target, None, program=dense_program)
    per_layer = {r.name: r.cycles for r in build_report(result, dense_program).layers}
    return Baseline(result.total_cycles, f"run of {dense}", per_layer)


def cmd_run(args) -> int:
    from nmc.isa.container import read_program
    from nmc.runtime.emulator import run_program
    from nmc.runtime.report import build_report, render_text

    wants_report = args.report or args.report_json is not None
    if not wants_report and (args.dense_baseline is not None or args.baseline_cycles is not None):
        raise UsageError("--dense-baseline and --baseline-cycles need --report or --report-json")
    check_files(outputs=[("-o", args.output), ("--report-json", args.report_json),
                         ("--trace", args.trace)],
                inputs=_run_inputs(args, [("the program", args.program)]))
    program = read_program(args.program)
    target = target_for(program, args.target, args.program)
    outputs = [s for s in program.symbols if s.kind == "output"]
    if args.output is not None and args.output.suffix != ".npz" and len(outputs) != 1:
        raise UsageError(f"the program has {len(outputs)} outputs: use -o FILE.npz")
    baseline = _baseline(args, args.program, program) if wants_report else None
    result = run_program(program, load_inputs(args.input, program), target,
                         max_instructions=args.max_instructions,
                         trace=wants_report or args.trace is not None, fuse=not args.no_fuse)
    if args.output is not None:
        if args.output.suffix == ".npz":
            atomic_save_npz(args.output, result.outputs)
        else:
            atomic_save_npy(args.output, next(iter(result.outputs.values())))
    if wants_report:
        report = build_report(result, program, baseline)
        if args.report_json is not None:
            write_json(args.report_json, report.to_json())
        if args.report:
            print(render_text(report))
    if args.trace is not None:
        from nmc.runtime.trace import trace_events

        write_json(args.trace, trace_events(result, program, str(args.program)))
    if not args.report:
        print(f"{result.total_cycles} cycles", file=sys.stderr)
    return 0


def _run_inputs(args, programs: list[tuple[str, Path]]) -> list[tuple[str, Path | None]]:
    """The files `nmc run` / `nmc report` read: programs, --input files, --dense-baseline,
    a --target file."""
    from nmc.isa.target import target_file

    return [*programs, *(("--input", split_spec(spec)[1]) for spec in args.input),
            ("--dense-baseline", args.dense_baseline),
            ("--target", target_file(args.target) if args.target else None)]


def _labels(args) -> list[str]:
    """--labels a,b,c, else the file names (their paths where two names are equal)."""
    if args.labels is not None:
        labels = [label.strip() for label in args.labels.split(",")]
        if len(labels) != len(args.programs):
            raise UsageError(f"--labels has {len(labels)} names for {len(args.programs)} "
                             "programs")
        return labels
    stems = [p.stem for p in args.programs]
    return stems if len(set(stems)) == len(stems) else [str(p) for p in args.programs]


def cmd_report(args) -> int:
    """Run one or several programs (the same model compiled differently) and report: the
    full report of one, a comparison table of several; optionally JSON and a plot."""
    from nmc.isa.container import read_program
    from nmc.runtime.compare import model_difference, render_comparison
    from nmc.runtime.report import build_report, render_text

    labels = _labels(args)
    check_files(outputs=[("--plot", args.plot), ("--report-json", args.report_json)],
                inputs=_run_inputs(args, [("a program", p) for p in args.programs]))
    programs = [read_program(path) for path in args.programs]
    for path, program in zip(args.programs[1:], programs[1:]):
        why = model_difference(programs[0], program)
        if why is not None:
            raise UsageError(f"{path} is not the model of {args.programs[0]} ({why}): `nmc "
                             "report` compares programs of one model; report each alone")
    baseline = _baseline(args, args.programs[0], programs[0])
    reports = []
    for label, path, program in zip(labels, args.programs, programs):
        program, result = _run_traced(path, args.target, args.input, args.max_instructions,
                                      program)
        reports.append((label, build_report(result, program, baseline)))
    if len(reports) == 1:
        print(render_text(reports[0][1]))
    else:
        print(render_comparison(reports, args.group))
    if args.report_json is not None:
        write_json(args.report_json, {"programs": [
            {"label": label, "path": str(path), "report": report.to_json()}
            for (label, report), path in zip(reports, args.programs)]})
    if args.plot is not None:
        from nmc.runtime.plot import plot_reports

        atomic_write_bytes(args.plot, plot_reports(reports, args.group))
        print(f"wrote {args.plot}", file=sys.stderr)
    return 0


# ---------------------------------------------------------------------------- eval


def cmd_eval(args) -> int:
    from nmc.common.fileio import atomic_write_text
    from nmc.isa.container import read_program
    from nmc.isa.target import target_file
    from nmc.models.datasets import SPLITS, load_dataset
    from nmc.runtime.evaluate import input_symbol
    from nmc.training.errors import SparsifyError

    if args.split not in SPLITS:
        raise SparsifyError(f"--split {args.split}: one of {', '.join(SPLITS)}")
    if args.limit is not None and args.limit < 1:
        raise SparsifyError(f"--limit {args.limit}: must be at least 1")
    check_files(outputs=[("--json", args.json)],
                inputs=[("the program", args.program), ("--reference", args.reference),
                        ("--data", args.data if Path(args.data).is_file() else None),
                        ("--target", target_file(args.target) if args.target else None)])
    program = read_program(args.program)
    target = target_for(program, args.target, args.program)
    sym = input_symbol(program)
    data = load_dataset(args.data, int(sym.shape[-1]), args.normalize)
    split = data[args.split]
    n = len(split) if args.limit is None else min(args.limit, len(split))
    images = split.images[:n].numpy()
    labels = split.labels[:n].numpy()
    reference = _reference(args.reference, args.program, program) \
        if args.reference is not None else None
    result = _classify(args, program, target, images)
    if result.logits.shape[1] != data.num_classes:
        raise SparsifyError(f"{args.program} has {result.logits.shape[1]} outputs but "
                            f"{data.name} has {data.num_classes} classes")
    acc = result.accuracy(labels)
    us = result.cycles_per_run / target.clock_mhz
    print(f"emulator top-1 on {data.name}/{args.split}: {acc:.2%} "
          f"({int(np.sum(result.predictions == labels))}/{n}); {result.cycles_per_run} "
          f"cycles per run of {result.batch} image(s) ({us:.1f} us at {target.clock_mhz} MHz)")
    report = {"data": data.name, "normalize": args.normalize, "split": args.split,
              "images": n, "accuracy": acc,
              "cycles_per_run": result.cycles_per_run, "batch": result.batch,
              "predictions": result.predictions.tolist()}
    if reference is not None:
        ref = _reference_predictions(reference, images)
        agree = int(np.sum(ref == result.predictions))
        ref_acc = float(np.mean(ref == labels)) if n else 0.0
        print(f"PyTorch top-1 of {args.reference}: {ref_acc:.2%}; predictions agree on "
              f"{agree}/{n} images")
        report.update(reference_accuracy=ref_acc, agreeing=agree)
    if args.json is not None:
        atomic_write_text(args.json, json.dumps(report, indent=2) + "\n")
    return 0


def _classify(args, program, target, images: np.ndarray):
    """The program's logits and predictions on `images`: here, or sharded over the Dask
    cluster of --workers N (N > 1) / --scheduler (identical results, in data-set order)."""
    from nmc.runtime.evaluate import run_classifier

    cluster = cluster_for(args)
    if cluster is None:
        return run_classifier(program, target, images)
    from nmc.common.cluster import dask_client
    from nmc.runtime.distributed_eval import run_classifier_sharded

    data = args.program.read_bytes()  # what read_program just read and validated
    with dask_client(**cluster) as client:
        return run_classifier_sharded(client, program, data, target, images)


REFERENCE_BATCH = 64
"""Images per PyTorch call of --reference: bounds its memory (a ViT-S at 112x112 holds
~0.5 GB of activations per 64 images), whatever --limit is."""


def _reference(path: Path, program_path: Path, program):
    """The --reference model (a `Subject`), refused unless it takes the program's images and
    gives as many classes: checked before the emulator runs."""
    import torch

    from nmc.runtime.evaluate import input_symbol
    from nmc.training.errors import SparsifyError
    from nmc.training.subject import from_file

    subject = from_file(Path(path))
    theirs = (subject.in_chans, subject.img_size, subject.img_size)
    ours = tuple(int(d) for d in input_symbol(program).shape[1:])
    if theirs != ours:
        raise SparsifyError(f"--reference {path} takes images [{', '.join(map(str, theirs))}] "
                            f"but {program_path} takes [{', '.join(map(str, ours))}]: is it "
                            "the model the program was compiled from?")
    outputs = [s.shape for s in program.symbols if s.kind == "output"]
    with torch.no_grad():
        classes = subject.module(torch.zeros((1, *theirs))).shape[-1]
    if len(outputs) == 1 and outputs[0] and classes != outputs[0][-1]:
        raise SparsifyError(f"--reference {path} has {classes} outputs but {program_path} has "
                            f"{outputs[0][-1]}: is it the model the program was compiled from?")
    return subject


def _reference_predictions(subject, images: np.ndarray) -> np.ndarray:
    """The argmax of the reference model's outputs, image by image (its traced batch)."""
    import torch

    predictions = []
    with torch.no_grad():
        for start in range(0, len(images), REFERENCE_BATCH):
            chunk = torch.from_numpy(images[start:start + REFERENCE_BATCH])
            predictions.append(subject.module(chunk).argmax(-1).numpy())
    return np.concatenate(predictions) if predictions else np.zeros(0, np.int64)

"""The implementation of each `nmc` subcommand (argument parsing lives in cli.py).

Heavy imports (torch, torch-mlir) happen inside the commands that need them, so `nmc
disasm` or `nmc run` start without paying for torch-mlir.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from nmc.common.errors import NmcError
from nmc.common.fileio import (
    OutputError, atomic_save_npy, atomic_save_npz, atomic_write_bytes, atomic_write_text,
)


class UsageError(NmcError):
    """A command-line option that makes no sense for this input."""


def _check_output_path(path: Path) -> None:
    """Fail early, before a slow compile, if `path` can obviously not be written (the
    atomic writer checks again when it writes)."""
    if path.is_dir():
        raise OutputError(f"cannot write {path}: Is a directory")
    if not path.parent.is_dir():
        raise OutputError(f"cannot write {path}: No such file or directory")


def read_source(path: Path | None, shown: str) -> str:
    """The UTF-8 text of a source file (assembly, IR), or of stdin when `path` is None.
    Read in chunks and refused at the first NUL byte, so a binary file, /dev/zero or
    /dev/urandom is an error instead of an endless read."""
    try:
        stream = open(path, "rb") if path is not None else getattr(sys.stdin, "buffer", None)
        if stream is None:  # a text-only stdin (embedding, tests)
            return sys.stdin.read()
        chunks = []
        try:
            while chunk := stream.read(1 << 20):
                if b"\0" in chunk:
                    raise UsageError(f"cannot read {shown}: not a text file (it holds NUL bytes)")
                chunks.append(chunk)
        finally:
            if path is not None:
                stream.close()
        return b"".join(chunks).decode("utf-8")
    except UnicodeDecodeError as e:
        raise UsageError(f"cannot read {shown}: not UTF-8 text ({e.reason} at byte "
                         f"{e.start})") from None
    except OSError as e:
        raise UsageError(f"cannot read {shown}: {e.strerror or e}") from None


def one_line_str(e: BaseException) -> str:
    """An exception's message as one line (some library messages span several)."""
    lines = [line.strip() for line in str(e).splitlines() if line.strip()]
    return " ".join(lines) or type(e).__name__


# ---------------------------------------------------------------------------- export


def cmd_export(args) -> int:
    from nmc.models.registry import MODELS, build_model, export_to_file, parse_overrides

    if args.list or not args.arch:
        for name, spec in MODELS.items():
            print(f"{name:12s} {spec.description}")
        return 0 if args.list else 2
    if args.output is None:
        raise UsageError("nmc export needs -o FILE")
    overrides = parse_overrides(args.set)
    img_size = getattr(args, "img_size", None)
    if img_size is not None:
        if "img_size" in overrides and overrides["img_size"] != img_size:
            raise UsageError(f"--img-size {img_size} contradicts --set "
                             f"img_size={overrides['img_size']}")
        overrides["img_size"] = img_size
    weights = getattr(args, "weights", None)
    _check_output_path(args.output)
    try:
        module, example = build_model(args.arch, overrides, seed=args.seed, weights=weights)
        export_to_file(module, example, args.output)
    except MemoryError:
        raise UsageError(f"{args.arch} with {overrides or 'its defaults'} does not fit in "
                         "memory: use smaller --set values") from None
    except RuntimeError as e:  # torch reports a failed allocation as a RuntimeError
        if "allocate" not in str(e):
            raise
        raise UsageError(f"{args.arch} with {overrides or 'its defaults'} does not fit in "
                         f"memory ({str(e).splitlines()[0]}): use smaller --set values") from None
    source = f", weights {weights}" if weights is not None else ""
    print(f"wrote {args.output} ({args.arch}, input {list(example.shape)}{source})")
    return 0


# ---------------------------------------------------------------------------- compile


def compile_model(model: Path, target: str = "sta_ref", after_pass=None, meta=None,
                  sparsity: dict | None = None, window: dict | None = None):
    """model.pt -> Program, through the default pipeline. Raises NmcError subclasses.
    `sparsity`: options of assign-sparsity (spec, calib, out, report); `window`: options
    of window-prune (keep, calib, out)."""
    from nmc.compiler.emit import module_to_program
    from nmc.compiler.frontend import import_model
    from nmc.compiler.pipeline import (
        DEFAULT_PIPELINE, default_pipeline_spec, make_context, run_pipeline,
    )
    from nmc.compiler.transforms.target_option import cached_target
    from nmc.common.progress import progress

    cached_target.cache_clear()  # a target file may have changed since the last compile
    cached_target(target)  # a bad target fails before the slow import
    ctx = make_context()
    steps = ("import", *DEFAULT_PIPELINE, "emit")
    with progress(total=len(steps), desc="compile", unit="step") as bar:

        def step_done(name: str, module) -> None:
            # called with "input" before the first pass, then after each pass by name
            bar.update()
            bar.set_postfix_str(steps[bar.n] if bar.n < len(steps) else "")
            if after_pass is not None:
                after_pass(name, module)

        bar.set_postfix_str(steps[0])
        module = import_model(model, ctx)
        run_pipeline(module, default_pipeline_spec(target, sparsity, window), ctx, step_done)
        program = module_to_program(module, {"model": str(model), "target": target,
                                             **(meta or {})})
        bar.update()
    return program


def cmd_compile(args) -> int:
    from nmc.compiler.pipeline import IrDumper, PASSES
    from nmc.isa.container import write_program

    unknown = [p for p in args.print_ir_after if p not in PASSES]
    if unknown:
        raise UsageError(f"--print-ir-after: unknown pass {', '.join(unknown)} "
                         f"(passes: {', '.join(PASSES)})")
    _check_output_path(args.output)
    sparsity = _sparsity_options(args)
    window = _window_options(args)
    if args.dump_ir is not None:
        try:
            args.dump_ir.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise OutputError(f"--dump-ir: cannot create directory {args.dump_ir}: "
                              f"{e.strerror or e}") from None
    dumper = IrDumper(args.print_ir_after, args.print_ir_after_all, args.dump_ir,
                      atomic_write_text)
    program = compile_model(args.model, args.target, dumper, sparsity=sparsity, window=window)
    write_program(program, args.output)
    print(f"wrote {args.output}: {len(program.instructions)} instructions, "
          f"{sum(c.size for _, c in program.constants) * 4 / 1e6:.2f} MB of constants, "
          f"target {program.target_name}", file=sys.stderr)
    return 0


def _window_options(args) -> dict | None:
    """The window-prune options of `nmc compile --window-keep/--window-keep-out`, checked
    before the slow import."""
    keep = getattr(args, "window_keep", None)
    out = getattr(args, "window_keep_out", None)
    if keep is None:
        if out is not None:
            raise UsageError("--window-keep-out needs --window-keep")
        return None
    from nmc.compiler.transforms.window_prune import parse_keep

    parse_keep(keep)  # a bad value fails now, not after the import
    if out is not None:
        _check_output_path(out)
    calib = getattr(args, "calib", None)
    return {"keep": keep, "out": str(out) if out is not None else "",
            "calib": str(calib) if calib is not None else ""}


def _check_calib(calib: Path | None) -> None:
    if calib is not None and not calib.is_file():
        raise UsageError(f"--calib {calib}: file not found")


def _sparsity_options(args) -> dict | None:
    """The assign-sparsity options of `nmc compile --sparsity/--calib/--sparsity-out`,
    checked before the slow import."""
    spec = getattr(args, "sparsity", None)
    calib = getattr(args, "calib", None)
    out = getattr(args, "sparsity_out", None)
    window_search = str(getattr(args, "window_keep", None) or "").startswith("sparsevit:")
    if spec is None:
        if calib is not None and not window_search:
            raise UsageError("--calib needs --sparsity elsa:... or --window-keep sparsevit:...")
        if out is not None:
            raise UsageError("--sparsity-out needs --sparsity")
        _check_calib(calib)
        return None
    from nmc.compiler.sparsity.spec import parse_spec

    parsed = parse_spec(spec)
    if calib is not None and parsed.kind != "elsa" and not window_search:
        raise UsageError("--calib is only used by --sparsity elsa:... and --window-keep "
                         "sparsevit:...")
    _check_calib(calib)
    if out is not None:
        _check_output_path(out)
    return {"spec": spec, "calib": str(calib) if calib is not None else "",
            "out": str(out) if out is not None else "", "report": parsed.kind == "elsa"}


# ---------------------------------------------------------------------------- run


_NPY_MAGIC = b"\x93NUMPY"


def _read_npy(file: str, name: str, symbol) -> np.ndarray:
    """The array in the .npy `file` for input `name`. Checks the header before reading the
    data, so a file claiming a huge or wrong shape is refused without allocating it; never
    unpickles (an .npy of Python objects is refused)."""
    try:
        with open(file, "rb") as f:
            head = f.read(len(_NPY_MAGIC))
            if head != _NPY_MAGIC:
                if head[:4] == b"PK\x03\x04":
                    why = ("it is an .npz archive; pass each array as its own .npy: "
                           "--input NAME=FILE.npy")
                elif head[:1] == b"\x80":
                    why = "it is a pickle; nmc reads inputs saved with np.save only"
                else:
                    why = "it is not a .npy file (save the input with np.save)"
                raise UsageError(f"cannot read input '{file}': {why}")
            f.seek(0)
            version = np.lib.format.read_magic(f)
            if version == (1, 0):
                shape, _, dtype = np.lib.format.read_array_header_1_0(f)
            else:
                shape, _, dtype = np.lib.format.read_array_header_2_0(f)
            if dtype.hasobject:
                raise UsageError(f"cannot read input '{file}': it holds Python objects "
                                 f"(dtype {dtype}); nmc does not unpickle inputs: save a "
                                 "float32 array")
            if symbol is not None and tuple(shape) != tuple(symbol.shape):
                raise UsageError(f"input '{name}' has shape {tuple(shape)}; expected "
                                 f"{tuple(symbol.shape)} (from {file})")
        return np.load(file, allow_pickle=False)
    except UsageError:
        raise
    except MemoryError:
        raise UsageError(f"cannot read input '{file}': it does not fit in memory") from None
    except (OSError, ValueError, EOFError, SyntaxError, TypeError) as e:
        # numpy reports a malformed header as ValueError, SyntaxError or TypeError
        why = getattr(e, "strerror", None) or one_line_str(e)
        raise UsageError(f"cannot read input '{file}': {why}") from None


def _load_inputs(specs: list[str], program) -> dict[str, np.ndarray]:
    symbols = {s.name: s for s in program.symbols if s.kind == "input"}
    names = list(symbols)
    inputs: dict[str, np.ndarray] = {}
    for spec in specs:
        name, sep, file = spec.partition("=")
        if not sep:
            if len(names) != 1:
                raise UsageError(f"the program has inputs {names}: write --input NAME=FILE.npy")
            name, file = names[0], spec
        if name in inputs:
            raise UsageError(f"input '{name}' is given twice (--input {spec})")
        inputs[name] = _read_npy(file, name, symbols.get(name))
    return inputs


def _target_for(program, target_option: str | None, path: Path):
    """The target to run `program` on: --target, else the built-in one it was built for."""
    from nmc.isa.target import load_target

    if target_option is not None:
        return load_target(target_option)
    try:  # the name recorded in prog.bin selects a built-in target, never a file
        return load_target(program.target_name, builtin_only=True)
    except NmcError as e:
        raise UsageError(f"{path} was built for target '{program.target_name}': {e}; pass "
                         "--target NAME or --target FILE.toml") from None


def synthetic_inputs(program) -> dict[str, np.ndarray]:
    """Fixed-seed normal inputs of the program's input shapes. Enough for timing: cycles do
    not depend on the input values (the ISA has no branches)."""
    rng = np.random.default_rng(0)
    return {s.name: rng.standard_normal(s.shape).astype(np.float32)
            for s in program.symbols if s.kind == "input"}


def _run_traced(path: Path, target_option: str | None, input_specs: list[str] | None,
                max_instructions: int | None = None):
    """Read and run a prog.bin with its trace: (program, result). Without `input_specs`
    the inputs are `synthetic_inputs`."""
    from nmc.isa.container import read_program
    from nmc.runtime.emulator import run_program

    program = read_program(path)
    target = _target_for(program, target_option, path)
    inputs = _load_inputs(input_specs, program) if input_specs else synthetic_inputs(program)
    return program, run_program(program, inputs, target, max_instructions=max_instructions,
                                trace=True)


def _baseline(args):
    """The dense baseline of --baseline-cycles / --dense-baseline (None: the report falls
    back on the compiler's estimate in META, else says "unknown")."""
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
    program, result = _run_traced(dense, args.target, None)
    per_layer = {r.name: r.cycles for r in build_report(result, program).layers}
    return Baseline(result.total_cycles, f"run of {dense}", per_layer)


def _write_json(path: Path, value) -> None:
    import json

    atomic_write_text(path, json.dumps(value, indent=1) + "\n")


def cmd_run(args) -> int:
    from nmc.isa.container import read_program
    from nmc.runtime.emulator import run_program
    from nmc.runtime.report import build_report, render_text

    wants_report = args.report or args.report_json is not None
    if not wants_report and (args.dense_baseline is not None or args.baseline_cycles is not None):
        raise UsageError("--dense-baseline and --baseline-cycles need --report or --report-json")
    for out in (args.output, args.report_json, args.trace):
        if out is not None:
            _check_output_path(out)
    program = read_program(args.program)
    target = _target_for(program, args.target, args.program)
    baseline = _baseline(args) if wants_report else None
    result = run_program(program, _load_inputs(args.input, program), target,
                         max_instructions=args.max_instructions,
                         trace=wants_report or args.trace is not None)
    if args.output is not None:
        if args.output.suffix == ".npz":
            atomic_save_npz(args.output, result.outputs)
        elif len(result.outputs) == 1:
            atomic_save_npy(args.output, next(iter(result.outputs.values())))
        else:
            raise UsageError(f"the program has {len(result.outputs)} outputs: use -o FILE.npz")
    if wants_report:
        report = build_report(result, program, baseline)
        if args.report_json is not None:
            _write_json(args.report_json, report.to_json())
        if args.report:
            print(render_text(report))
    if args.trace is not None:
        from nmc.runtime.trace import trace_events

        _write_json(args.trace, trace_events(result, program, str(args.program)))
    if not args.report:
        print(f"{result.total_cycles} cycles", file=sys.stderr)
    return 0


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
    from nmc.runtime.compare import render_comparison
    from nmc.runtime.report import build_report, render_text

    labels = _labels(args)
    for out in (args.plot, args.report_json):
        if out is not None:
            _check_output_path(out)
    baseline = _baseline(args)
    reports = []
    for label, path in zip(labels, args.programs):
        program, result = _run_traced(path, args.target, args.input, args.max_instructions)
        reports.append((label, build_report(result, program, baseline)))
    if len(reports) == 1:
        print(render_text(reports[0][1]))
    else:
        print(render_comparison(reports, args.group))
    if args.report_json is not None:
        _write_json(args.report_json, {"programs": [
            {"label": label, "path": str(path), "report": report.to_json()}
            for (label, report), path in zip(reports, args.programs)]})
    if args.plot is not None:
        from nmc.runtime.plot import plot_reports

        atomic_write_bytes(args.plot, plot_reports(reports, args.group))
        print(f"wrote {args.plot}", file=sys.stderr)
    return 0


# ---------------------------------------------------------------------------- asm / disasm


def cmd_disasm(args) -> int:
    from nmc.isa.asm import disassemble
    from nmc.isa.container import read_program

    text = disassemble(read_program(args.program))
    if args.output is None:
        sys.stdout.write(text)
    else:
        atomic_write_text(args.output, text)
    return 0


def inspect_program(data: bytes, source: str = "<bytes>") -> str:
    """`nmc inspect`: a prog.bin's header, sections, symbols and, per layer, its kind,
    weight pattern / density / bytes (from META "layers") and instruction counts."""
    from collections import Counter

    from nmc.isa.container import (
        FORMAT_VERSION, _header, _sections, program_from_bytes,
    )
    from nmc.runtime.report import layer_sparsity

    program = program_from_bytes(data, source)  # validates the whole file first
    name, target_id, dram_words, count = _header(data)
    bodies = _sections(data, count)
    lines = [f"{source}: prog.bin version {FORMAT_VERSION}, {len(data)} bytes",
             f"target      {name} (id {target_id})",
             f"dram_words  {dram_words} ({dram_words * 4 / 2**20:.2f} MiB)",
             f"sections    {count}"]
    for kind, body in sorted(bodies.items()):
        lines.append(f"  {kind.name:8s} {len(body):>12d} bytes")
    const_words = sum(c.size for _, c in program.constants)
    lines.append(f"constants   {len(program.constants)} blocks, {const_words * 4} bytes")
    lines.append(f"symbols     {len(program.symbols)}")
    for sym in program.symbols:
        shape = "x".join(str(d) for d in sym.shape) or "scalar"
        lines.append(f"  {sym.kind:6s} {sym.name:16s} {sym.dtype}[{shape}] @ {sym.addr:#x}")
    total = Counter(i.mnemonic for i in program.instructions)
    lines.append(f"instructions {len(program.instructions)}: "
                 + ", ".join(f"{k} {v}" for k, v in sorted(total.items())))
    meta_layers = program.meta.get("layers", {}) if isinstance(program.meta, dict) else {}
    if not isinstance(meta_layers, dict):
        meta_layers = {}
    sparsity = layer_sparsity(program)
    lines.append("layers")
    lines.append(f"  {'layer':28s} {'kind':12s} {'pattern':7s} {'density':>7s} {'keep':>5s} "
                 f"{'weight bytes':>12s} {'dense bytes':>12s}  instructions")
    for r in program.debug:
        info = meta_layers.get(r.name, {})
        info = info if isinstance(info, dict) else {}
        sp = sparsity[r.name]
        counts = Counter(i.mnemonic for i in program.instructions[r.start_pc : r.end_pc])
        shown = ", ".join(f"{k} {v}" for k, v in sorted(counts.items()))
        density = f"{sp.density:.3f}" if sp.density is not None else "-"
        keep = f"{sp.window_keep:.2f}" if sp.window_keep is not None else "-"
        lines.append(
            f"  {r.name:28s} {r.kind:12s} {sp.pattern or '-':7s} {density:>7s} {keep:>5s} "
            f"{str(info.get('weight_bytes', '-')):>12s} {str(info.get('dense_bytes', '-')):>12s}"
            f"  {r.end_pc - r.start_pc} ({shown})")
    other = {k: v for k, v in program.meta.items() if k not in ("layers", "window_keep")}
    if other:
        lines.append("meta        " + ", ".join(f"{k}={v}" for k, v in sorted(other.items())))
    return "\n".join(lines) + "\n"


def cmd_inspect(args) -> int:
    from nmc.isa.container import ProgramFormatError

    try:
        data = Path(args.program).read_bytes()
    except OSError as e:
        raise ProgramFormatError(f"cannot read {args.program}: {e.strerror or e}") from None
    sys.stdout.write(inspect_program(data, str(args.program)))
    return 0


def cmd_asm(args) -> int:
    from nmc.isa.asm import assemble
    from nmc.isa.container import write_program

    text = read_source(args.source, str(args.source))
    write_program(assemble(text, str(args.source)), args.output)
    return 0


# ---------------------------------------------------------------------------- opt


def cmd_opt(args) -> int:
    from xdsl.parser import Parser
    from xdsl.utils.exceptions import ArgSpecParseError, ParseError, VerifyException

    from nmc.compiler.pipeline import (
        IrDumper, PASSES, build_pipeline, make_context, print_ir, run_pipeline,
    )

    if args.list_passes:
        for name, p in PASSES.items():
            print(f"{name:20s} {(p.__doc__ or '').strip().splitlines()[0]}")
        return 0
    stages: list[str] = []  # "input", then each pass that has finished
    dumper = IrDumper(print_all=args.print_ir_after_all)

    def after_pass(name, module):
        stages.append(name)
        dumper(name, module)

    try:
        pipeline = build_pipeline(args.passes, after_pass)
    except ArgSpecParseError as e:  # a BaseException in xDSL, so build_pipeline misses it
        raise UsageError(f"bad pass pipeline '{args.passes}': {_spec_error(e)}") from None
    source = str(args.input) if args.input else "<stdin>"
    text = read_source(args.input, source)
    ctx = make_context()
    try:
        module = Parser(ctx, text, source).parse_module()
    except ParseError as e:
        raise NmcError(f"{e.span.get_location()}: {e.msg}") from None
    try:
        module.verify()
    except VerifyException as e:
        raise NmcError(f"{source}: {one_line_str(e)}") from None
    try:
        run_pipeline(module, pipeline, ctx)
    except NmcError:
        raise
    except Exception as e:
        # The input of a pass is any IR file: one that lacks what the pass needs (the
        # attributes the passes before it add) must not end in a traceback.
        names = [p.name for p in pipeline.passes]
        failed = names[min(max(len(stages) - 1, 0), len(names) - 1)] if names else "?"
        raise NmcError(
            f"{source}: pass '{failed}' failed on this input ({type(e).__name__}: "
            f"{one_line_str(e)}); is the input the output of the passes before it "
            f"({' -> '.join(PASSES)})?"
        ) from e
    out = print_ir(module)
    if args.output is None:
        sys.stdout.write(out)
    else:
        atomic_write_text(args.output, out)
    return 0


def _spec_error(e: BaseException) -> str:
    """xDSL's pipeline-spec error (message under a caret drawing) as `MESSAGE (column N)`."""
    import re

    lines = [line.strip() for line in str(e).splitlines() if line.strip()]
    where = next((m for m in map(re.compile(r"pass-pipeline:\d+:(\d+)").fullmatch, lines) if m),
                 None)
    message = lines[-1] if lines else "syntax error"
    return message + (f" (column {where.group(1)})" if where else "")


# ---------------------------------------------------------------------------- sparsify, eval


def cmd_sparsify(args) -> int:
    from nmc.compiler.sparsify.command import sparsify

    return sparsify(args)


def cmd_eval(args) -> int:
    from nmc.compiler.sparsify.command import evaluate_program

    return evaluate_program(args)


# ---------------------------------------------------------------------------- demo


def cmd_demo(args) -> int:
    """Export a built-in model (DeiT-tiny by default), compile it, run it on the emulator
    with a demo image, and compare with PyTorch: top-5 classes, error, cycle report."""
    import torch

    from nmc.isa.container import read_program, write_program
    from nmc.isa.target import load_target
    from nmc.models.images import demo_image
    from nmc.models.registry import build_model, export_to_file
    from nmc.runtime.emulator import run_program
    from nmc.runtime.report import format_report

    work = args.workdir
    work.mkdir(parents=True, exist_ok=True)
    module, example = build_model(args.model, {}, seed=0)
    model_path, prog_path = work / "model.pt", work / "prog.bin"
    export_to_file(module, example, model_path)
    print(f"[1/3] exported {args.model} (random weights, seed 0) to {model_path}")
    write_program(compile_model(model_path, args.target), prog_path)
    program = read_program(prog_path)
    print(f"[2/3] compiled to {prog_path}: {len(program.instructions)} instructions")
    if example.dim() == 4:  # an image model: feed it a picture
        x, source = demo_image(example.shape[-1])
        print(f"      input image: {source}")
    else:
        x = torch.randn(example.shape, generator=torch.Generator().manual_seed(1))
    result = run_program(program, {program.symbols[0].name: x.numpy()}, load_target(args.target),
                         trace=True)  # the report's per-layer cycles need it
    got = next(iter(result.outputs.values()))
    with torch.no_grad():
        want = module(x).numpy()
    err = float(np.abs(got - want).max() / max(np.abs(want).max(), 1e-30))
    print(f"[3/3] ran on the emulator: max relative error vs PyTorch {err:.2e}")
    if got.ndim == 2:  # logits: the classes, by index (random weights have no class names)
        top_emu, top_ref = np.argsort(-got[0])[:5], np.argsort(-want[0])[:5]
        print(f"      top-5 classes, emulator: {top_emu.tolist()}  PyTorch: {top_ref.tolist()}")
    print(format_report(result, program))
    if err > 1e-4:
        raise NmcError(f"emulator output differs from PyTorch (relative error {err:.2e})")
    return 0

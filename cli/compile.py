"""`nmc compile` (a model file to prog.bin) and `nmc opt` (passes on an IR file, like
mlir-opt / xdsl-opt).

IR printing: --print-ir-after-all and --print-ir-after=PASS print each stage in the
readable (custom) form, or in MLIR's generic form with --print-op-generic; `nmc opt` prints
its result the same way. --dump-ir files are always in generic form: upstream MLIR tools
parse them (with unregistered dialects allowed), and so does `nmc opt`.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

from nmc.cli.paths import check_files
from nmc.cli.shared import (
    UsageError, add_cluster_options, add_quiet, add_target, cluster_for, one_line_error,
    read_source,
)
from nmc.common.errors import NmcError
from nmc.common.fileio import OutputError, atomic_write_text
from nmc.common.observer import ObserverError, parse_observer

GENERIC_HELP = "print the IR in MLIR's generic op form (as mlir-opt --mlir-print-op-generic)"


def register(sub) -> None:
    p = sub.add_parser("compile", help="compile a torch.export or ONNX file to prog.bin")
    p.add_argument("model", type=Path, help="model.pt (torch.export) or model.onnx")
    p.add_argument("--input-shape", action="append", default=[], metavar="NAME=DIMS",
                   help="ONNX: fix the dims of input NAME (e.g. x=1x3x224x224); repeat "
                        "for several inputs")
    p.add_argument("--batch", type=int, metavar="N",
                   help="ONNX: the batch size, for inputs whose leading dim is dynamic")
    p.add_argument("-o", "--output", type=Path, required=True)
    add_target(p)
    p.add_argument("--print-ir-after-all", action="store_true")
    p.add_argument("--print-ir-after", action="append", default=[], metavar="PASS")
    p.add_argument("--print-op-generic", action="store_true", help=GENERIC_HELP)
    p.add_argument("--dump-ir", type=Path, metavar="DIR",
                   help="write the IR of every stage, in generic op form (upstream MLIR "
                        "parses it)")
    p.add_argument("--sparsity", metavar="SPEC",
                   help="N:M sparsity of the linear layers: N:M (every linear of a "
                        "transformer block: qkv, proj, fc1, fc2; not the head nor Swin's "
                        "patch merging), FILE.json (per layer, any linear), elsa:speedup=S "
                        "or elsa:flops=F (search among the block linears; add ,rank=joint "
                        "to rank by each whole configuration's output error, ,rank=energy "
                        "by the weight energy its masks remove)")
    p.add_argument("--calib", type=Path, metavar="FILE.npy",
                   help="calibration inputs: of the int8 scales on an int8 target (required "
                        "there unless --quant), and of the ELSA / SparseViT searches "
                        "(default: fixed-seed inputs)")
    p.add_argument("--calib-observer", metavar="OBSERVER",
                   help="how --calib chooses each int8 input scale: max (max |x|, the "
                        "default), mse (the clip of least squared error) or percentile:P "
                        "(the P-th percentile of |x|); int8 target (docs/INT8.md)")
    p.add_argument("--quant", type=Path, metavar="FILE.json",
                   help="int8 scales to use (the format --quant-out writes; int8 target)")
    p.add_argument("--quant-out", type=Path, metavar="FILE.json",
                   help="write the int8 scales chosen (int8 target; docs/INT8.md)")
    p.add_argument("--sparsity-out", type=Path, metavar="FILE.json",
                   help="write the chosen sparsity (the format --sparsity FILE.json reads)")
    p.add_argument("--window-keep", metavar="SPEC",
                   help="SparseViT window pruning of Swin blocks, floor(R * windows) kept (0: "
                        "the block is skipped): a keep ratio R in (0, 1] for every block, "
                        "FILE.json ({block: ratio}), or "
                        "sparsevit:latency=L (search per-block ratios under a modelled-"
                        "latency budget, L a fraction of the dense latency)")
    p.add_argument("--window-keep-out", type=Path, metavar="FILE.json",
                   help="write the keep ratios used (the format --window-keep FILE.json reads)")
    add_cluster_options(p, "the ELSA sensitivity measurement and the SparseViT search "
                           "(--sparsity elsa:..., --window-keep sparsevit:...)")
    add_quiet(p)
    p.set_defaults(handler=cmd_compile)

    p = sub.add_parser("opt", help="run passes on an IR file (like mlir-opt / xdsl-opt)")
    p.add_argument("input", type=Path, nargs="?", help="IR file (default: stdin)")
    p.add_argument("-p", "--passes", default="", help="comma-separated pipeline")
    p.add_argument("-o", "--output", type=Path)
    p.add_argument("--print-ir-after-all", action="store_true")
    p.add_argument("--print-op-generic", action="store_true", help=GENERIC_HELP)
    p.add_argument("--list-passes", action="store_true")
    p.set_defaults(handler=cmd_opt)


# ---------------------------------------------------------------------------- compile


def cmd_compile(args) -> int:
    from nmc.compiler.driver import compile_model
    from nmc.compiler.pipeline import IrDumper, PASSES
    from nmc.isa.container import write_program

    unknown = [p for p in args.print_ir_after if p not in PASSES]
    if unknown:
        raise UsageError(f"--print-ir-after: unknown pass {', '.join(unknown)} "
                         f"(passes: {', '.join(PASSES)})")
    quant = _quant_options(args)
    sparsity = _sparsity_options(args, int8=quant is not None)
    window = _window_options(args)
    cluster = _cluster_options(args)
    _check_compile_files(args)
    if args.dump_ir is not None:
        try:
            args.dump_ir.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise OutputError(f"--dump-ir: cannot create directory {args.dump_ir}: "
                              f"{e.strerror or e}") from None
    dumper = IrDumper(args.print_ir_after, args.print_ir_after_all, args.dump_ir,
                      atomic_write_text, generic=args.print_op_generic)
    shapes = parse_input_shapes(args.input_shape)
    if args.batch is not None and args.batch < 1:
        raise UsageError(f"--batch must be >= 1, got {args.batch}")
    from nmc.common.cluster import offered

    with offered(**(cluster or {})):
        program = compile_model(args.model, args.target, dumper, sparsity=sparsity,
                                window=window, quant=quant, input_shapes=shapes or None,
                                batch=args.batch)
    write_program(program, args.output)
    print(f"wrote {args.output}: {len(program.instructions)} instructions, "
          f"{sum(c.size for _, c in program.constants) * 4 / 1e6:.2f} MB of constants, "
          f"target {program.target_name}", file=sys.stderr)
    return 0


def _check_compile_files(args) -> None:
    """Every output of `nmc compile` can be written and none is an input, before the slow
    compile writes any (the IR dumps first)."""
    from nmc.compiler.pipeline import DEFAULT_PIPELINE, dump_file_name
    from nmc.compiler.sparsity.spec import parse_spec
    from nmc.isa.target import target_file

    dumps = []
    if args.dump_ir is not None:
        dumps = [("--dump-ir", args.dump_ir / dump_file_name(i, name))
                 for i, name in enumerate(("input", *DEFAULT_PIPELINE))]
    sparsity_file = None
    if args.sparsity is not None and parse_spec(args.sparsity).kind == "file":
        sparsity_file = parse_spec(args.sparsity).path
    window_file = args.window_keep if args.window_keep and Path(args.window_keep).is_file() \
        else None
    check_files(
        outputs=[("-o", args.output), ("--sparsity-out", args.sparsity_out),
                 ("--window-keep-out", args.window_keep_out), ("--quant-out", args.quant_out)],
        inputs=[("the model", args.model), ("--calib", args.calib), ("--quant", args.quant),
                ("--sparsity", sparsity_file), ("--window-keep", window_file),
                ("--target", target_file(args.target))],
        directories=[("--dump-ir", args.dump_ir)], in_directories=dumps)


def parse_input_shapes(items: list[str]) -> dict[str, tuple[int, ...]]:
    """`NAME=1x3x224x224` options -> {NAME: (1, 3, 224, 224)}."""
    shapes: dict[str, tuple[int, ...]] = {}
    for item in items:
        name, sep, dims = item.rpartition("=")
        try:
            shape = tuple(int(d) for d in dims.lower().split("x"))
        except ValueError:
            shape = ()
        if not sep or not name or not shape or any(d < 1 for d in shape):
            raise UsageError(f"--input-shape {item!r}: expected NAME=DIMS with DIMS positive "
                             f"integers joined by x, e.g. x=1x3x224x224")
        if name in shapes:
            raise UsageError(f"--input-shape: input {name!r} given twice")
        shapes[name] = shape
    return shapes


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
    calib = getattr(args, "calib", None)
    return {"keep": keep, "out": str(out) if out is not None else "",
            "calib": str(calib) if calib is not None else ""}


def _cluster_options(args) -> dict | None:
    """--workers / --scheduler (`cluster_for`), refused where no search would use them."""
    cluster = cluster_for(args)
    if cluster is None:
        return None
    from nmc.compiler.sparsity.spec import parse_spec

    elsa = args.sparsity is not None and parse_spec(args.sparsity).kind == "elsa"
    if not elsa and not str(args.window_keep or "").startswith("sparsevit:"):
        raise UsageError("--workers/--scheduler spread the searches of --sparsity elsa:... "
                         "and --window-keep sparsevit:...; this compile runs neither")
    return cluster


def _quant_options(args) -> dict | None:
    """The quantize options of `nmc compile` on an int8 target (--calib, --quant,
    --quant-out), None on an fp32 one; checked before the slow import."""
    from nmc.isa.target import load_target

    target = load_target(args.target)
    quant, out = getattr(args, "quant", None), getattr(args, "quant_out", None)
    calib = getattr(args, "calib", None)
    observer = getattr(args, "calib_observer", None)
    if not target.int8:
        if quant is not None or out is not None or observer is not None:
            raise UsageError(f"--quant/--quant-out/--calib-observer: target '{target.name}' "
                             f"computes in fp32; they need an int8 target (--target sta_int8)")
        return None
    if observer is not None:
        if quant is not None:
            raise UsageError("--calib-observer: --quant gives the scales, nothing is "
                             "calibrated")
        try:
            parse_observer(observer)
        except ObserverError as e:
            raise UsageError(f"--calib-observer: {e}") from None
    # without --calib or --quant the quantize pass refuses, unless the model carries its
    # own scales (PT2E): only the imported model tells
    if quant is not None and not quant.is_file():
        raise UsageError(f"--quant {quant}: file not found")
    _check_calib(calib)
    return {"calib": str(calib) if calib is not None and quant is None else "",
            "quant": str(quant) if quant is not None else "",
            "out": str(out) if out is not None else "", "observer": observer or ""}


def _check_calib(calib: Path | None) -> None:
    if calib is not None and not calib.is_file():
        raise UsageError(f"--calib {calib}: file not found")


def _sparsity_options(args, int8: bool = False) -> dict | None:
    """The assign-sparsity options of `nmc compile --sparsity/--calib/--sparsity-out`,
    checked before the slow import (`int8`: --calib also calibrates the int8 scales)."""
    spec = getattr(args, "sparsity", None)
    calib = getattr(args, "calib", None)
    out = getattr(args, "sparsity_out", None)
    window_search = str(getattr(args, "window_keep", None) or "").startswith("sparsevit:")
    if spec is None:
        if calib is not None and not window_search and not int8:
            raise UsageError("--calib needs --sparsity elsa:... or --window-keep sparsevit:...")
        if out is not None:
            raise UsageError("--sparsity-out needs --sparsity")
        _check_calib(calib)
        return None
    from nmc.compiler.sparsity.spec import parse_spec

    parsed = parse_spec(spec)
    if calib is not None and parsed.kind != "elsa" and not window_search and not int8:
        raise UsageError("--calib is only used by --sparsity elsa:... and --window-keep "
                         "sparsevit:...")
    _check_calib(calib)
    return {"spec": spec, "calib": str(calib) if calib is not None else "",
            "out": str(out) if out is not None else "", "report": parsed.kind == "elsa"}


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
    dumper = IrDumper(print_all=args.print_ir_after_all, generic=args.print_op_generic)

    def after_pass(name, module):
        stages.append(name)
        dumper(name, module)

    try:
        pipeline = build_pipeline(args.passes, after_pass)
    except ArgSpecParseError as e:  # a BaseException in xDSL, so build_pipeline misses it
        raise UsageError(f"bad pass pipeline '{args.passes}': {_spec_error(e)}") from None
    check_files(outputs=[("-o", args.output)], inputs=[("the input", args.input)])
    source = str(args.input) if args.input else "<stdin>"
    text = read_source(args.input, source)
    ctx = make_context()
    try:
        module = Parser(ctx, text, source).parse_module()
    except ParseError as e:
        raise NmcError(f"{e.span.get_location()}: {_parse_message(e, text)}") from None
    try:
        module.verify()
    except VerifyException as e:
        raise NmcError(f"{source}: {one_line_error(e)}") from None
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
            f"{one_line_error(e)}); is the input the output of the passes before it "
            f"({' -> '.join(PASSES)})?"
        ) from e
    out = print_ir(module, generic=args.print_op_generic)
    if args.output is None:
        sys.stdout.write(out)
    else:
        atomic_write_text(args.output, out)
    return 0


ASSEMBLY_DIRECTIVE = re.compile(r"^\s*\.(target|dram_words|symbol|const|meta)\b", re.M)
"""A directive of nmc's assembly (nmc.isa.asm): a file holding one is not MLIR."""


def _parse_message(e, text: str) -> str:
    """xDSL's parse error, readable: its unfilled "{first_char}" placeholder gets the
    character it meant, and nmc assembly (prog.s) is named as such."""
    message = e.msg
    if "{first_char}" in message:
        where = e.span.start
        char = text[where] if where < len(text) else "end of file"
        message = message.replace("{first_char}", repr(char))
    if ASSEMBLY_DIRECTIVE.search(text):
        message += " (this is nmc assembly, as `nmc disasm` writes it: `nmc asm FILE -o " \
                   "prog.bin` reads it; `nmc opt` reads MLIR IR, such as a --dump-ir file)"
    return message


def _spec_error(e: BaseException) -> str:
    """xDSL's pipeline-spec error (message under a caret drawing) as `MESSAGE (column N)`."""
    lines = [line.strip() for line in str(e).splitlines() if line.strip()]
    where = next((m for m in map(re.compile(r"pass-pipeline:\d+:(\d+)").fullmatch, lines) if m),
                 None)
    message = lines[-1] if lines else "syntax error"
    return message + (f" (column {where.group(1)})" if where else "")

"""The implementation of each `nmc` subcommand (argument parsing lives in cli.py).

Heavy imports (torch, torch-mlir) happen inside the commands that need them, so `nmc
disasm` or `nmc run` start without paying for torch-mlir.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from nmc.isa.errors import NmcError
from nmc.isa.fileio import atomic_save_npy, atomic_save_npz, atomic_write_text


class UsageError(NmcError):
    """A command-line option that makes no sense for this input."""


# ---------------------------------------------------------------------------- export


def cmd_export(args) -> int:
    from nmc.models.registry import MODELS, build_model, export_to_file, parse_overrides

    if args.list or not args.arch:
        for name, spec in MODELS.items():
            print(f"{name:12s} {spec.description}")
        return 0 if args.list else 2
    if args.output is None:
        raise UsageError("nmc export needs -o FILE")
    module, example = build_model(args.arch, parse_overrides(args.set), seed=args.seed)
    export_to_file(module, example, args.output)
    print(f"wrote {args.output} ({args.arch}, input {list(example.shape)})")
    return 0


# ---------------------------------------------------------------------------- compile


def compile_model(model: Path, target: str = "sta_ref", after_pass=None, meta=None):
    """model.pt -> Program, through the default pipeline. Raises NmcError subclasses."""
    from nmc.compiler.emit import module_to_program
    from nmc.compiler.frontend import import_model
    from nmc.compiler.pipeline import default_pipeline_spec, make_context, run_pipeline
    from nmc.compiler.transforms.target_option import cached_target

    cached_target(target)  # a bad target fails before the slow import
    ctx = make_context()
    module = import_model(model, ctx)
    run_pipeline(module, default_pipeline_spec(target), ctx, after_pass)
    return module_to_program(module, {"model": str(model), "target": target, **(meta or {})})


def cmd_compile(args) -> int:
    from nmc.compiler.pipeline import IrDumper, PASSES
    from nmc.isa.container import write_program

    unknown = [p for p in args.print_ir_after if p not in PASSES]
    if unknown:
        raise UsageError(f"--print-ir-after: unknown pass {', '.join(unknown)} "
                         f"(passes: {', '.join(PASSES)})")
    if args.dump_ir is not None:
        args.dump_ir.mkdir(parents=True, exist_ok=True)
    dumper = IrDumper(args.print_ir_after, args.print_ir_after_all, args.dump_ir,
                      atomic_write_text)
    program = compile_model(args.model, args.target, dumper)
    write_program(program, args.output)
    print(f"wrote {args.output}: {len(program.instructions)} instructions, "
          f"{sum(c.size for _, c in program.constants) * 4 / 1e6:.2f} MB of constants, "
          f"target {program.target_name}", file=sys.stderr)
    return 0


# ---------------------------------------------------------------------------- run


def _load_inputs(specs: list[str], program) -> dict[str, np.ndarray]:
    names = [s.name for s in program.symbols if s.kind == "input"]
    inputs = {}
    for spec in specs:
        name, sep, file = spec.partition("=")
        if not sep:
            if len(names) != 1:
                raise UsageError(f"the program has inputs {names}: write --input NAME=FILE.npy")
            name, file = names[0], spec
        try:
            inputs[name] = np.load(file, allow_pickle=False)
        except (OSError, ValueError) as e:
            raise UsageError(f"cannot read input '{file}': {e}") from None
    return inputs


def cmd_run(args) -> int:
    from nmc.isa.container import read_program
    from nmc.isa.target import load_target
    from nmc.runtime.emulator import run_program
    from nmc.runtime.report import format_report

    program = read_program(args.program)
    target = load_target(args.target or program.target_name)
    result = run_program(program, _load_inputs(args.input, program), target)
    if args.output is not None:
        if args.output.suffix == ".npz":
            atomic_save_npz(args.output, result.outputs)
        elif len(result.outputs) == 1:
            atomic_save_npy(args.output, next(iter(result.outputs.values())))
        else:
            raise UsageError(f"the program has {len(result.outputs)} outputs: use -o FILE.npz")
    if args.report:
        print(format_report(result, program))
    else:
        print(f"{result.total_cycles} cycles", file=sys.stderr)
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


def cmd_asm(args) -> int:
    from nmc.isa.asm import assemble
    from nmc.isa.container import write_program

    try:
        text = args.source.read_text()
    except (OSError, UnicodeDecodeError) as e:
        raise UsageError(f"cannot read {args.source}: {e}") from None
    write_program(assemble(text, str(args.source)), args.output)
    return 0


# ---------------------------------------------------------------------------- opt


def cmd_opt(args) -> int:
    from xdsl.parser import Parser
    from xdsl.utils.exceptions import ParseError, VerifyException

    from nmc.compiler.pipeline import (
        IrDumper, PASSES, build_pipeline, make_context, print_ir, run_pipeline,
    )

    if args.list_passes:
        for name, p in PASSES.items():
            print(f"{name:20s} {(p.__doc__ or '').strip().splitlines()[0]}")
        return 0
    pipeline = build_pipeline(args.passes, IrDumper(print_all=args.print_ir_after_all))
    source = str(args.input) if args.input else "<stdin>"
    try:
        text = args.input.read_text() if args.input else sys.stdin.read()
    except (OSError, UnicodeDecodeError) as e:
        raise UsageError(f"cannot read {source}: {e}") from None
    ctx = make_context()
    try:
        module = Parser(ctx, text, source).parse_module()
        module.verify()
        run_pipeline(module, pipeline, ctx)
    except (ParseError, VerifyException) as e:
        raise NmcError(f"{source}: {e}") from None
    out = print_ir(module)
    if args.output is None:
        sys.stdout.write(out)
    else:
        atomic_write_text(args.output, out)
    return 0


# ---------------------------------------------------------------------------- demo


def cmd_demo(args) -> int:
    """Export the default model, compile it, run it on the emulator, compare with PyTorch."""
    import torch

    from nmc.isa.container import read_program, write_program
    from nmc.isa.target import load_target
    from nmc.models.registry import DEFAULT_MODEL, build_model, export_to_file
    from nmc.runtime.emulator import run_program
    from nmc.runtime.report import format_report

    work = args.workdir
    work.mkdir(parents=True, exist_ok=True)
    module, example = build_model(DEFAULT_MODEL, {}, seed=0)
    model_path, prog_path = work / "model.pt", work / "prog.bin"
    export_to_file(module, example, model_path)
    print(f"[1/3] exported {DEFAULT_MODEL} to {model_path}")
    write_program(compile_model(model_path, args.target), prog_path)
    print(f"[2/3] compiled to {prog_path}")
    program = read_program(prog_path)
    x = torch.randn(example.shape, generator=torch.Generator().manual_seed(1))
    result = run_program(program, {program.symbols[0].name: x.numpy()}, load_target(args.target))
    got = next(iter(result.outputs.values()))
    with torch.no_grad():
        want = module(x).numpy()
    err = float(np.abs(got - want).max() / max(np.abs(want).max(), 1e-30))
    print(f"[3/3] ran on the emulator: max relative error vs PyTorch {err:.2e}")
    print(format_report(result, program))
    if err > 1e-4:
        raise NmcError(f"emulator output differs from PyTorch (relative error {err:.2e})")
    return 0

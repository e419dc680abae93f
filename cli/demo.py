"""`nmc demo`: export a built-in model, compile it, run it on the emulator, compare."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from nmc.cli.paths import check_files
from nmc.cli.shared import add_quiet, add_target
from nmc.common.errors import NmcError
from nmc.common.fileio import OutputError


def register(sub) -> None:
    p = sub.add_parser("demo", help="export, compile and run the default model")
    p.add_argument("--workdir", type=Path, default=Path("out/demo"))
    p.add_argument("--model", default="deit_tiny", help="built-in model (default: %(default)s)")
    add_target(p)
    add_quiet(p)
    p.set_defaults(handler=cmd_demo)


def cmd_demo(args) -> int:
    """Export a built-in model (DeiT-tiny by default), compile it, run it on the emulator
    with a demo image, and compare with PyTorch: top-5 classes, error, cycle report."""
    import torch

    from nmc.common.images import demo_image
    from nmc.compiler.driver import compile_model
    from nmc.isa.container import read_program, write_program
    from nmc.isa.target import load_target
    from nmc.models.registry import build_model, export_to_file
    from nmc.runtime.emulator import run_program
    from nmc.runtime.report import format_report

    work = args.workdir
    check_files(directories=[("--workdir", work)])
    try:
        work.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise OutputError(f"--workdir: cannot create directory {work}: {e.strerror or e}") \
            from None
    module, example = build_model(args.model, {}, seed=0)
    model_path, prog_path = work / "model.pt2", work / "prog.bin"
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

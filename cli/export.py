"""`nmc export`: a torch.export file of a built-in model."""

from __future__ import annotations

from pathlib import Path

from nmc.cli.paths import check_files
from nmc.cli.shared import CommandLineError, UsageError, add_architecture_options


def register(sub) -> None:
    p = sub.add_parser("export", help="write a torch.export file of a built-in model")
    p.add_argument("arch", help="built-in model name (see `nmc export --list`)", nargs="?")
    p.add_argument("-o", "--output", type=Path)
    p.add_argument("--list", action="store_true", help="list the built-in models")
    add_architecture_options(p, seed_help="seed of the random weights")
    p.add_argument("--img-size", type=int, metavar="N",
                   help="input image size N x N (DeiT; same as --set img_size=N)")
    p.add_argument("--weights", type=Path, metavar="FILE",
                   help="load a state_dict (torch.save of a dict, e.g. a timm checkpoint) "
                        "instead of random weights")
    p.set_defaults(handler=cmd_export)


def cmd_export(args) -> int:
    from nmc.models.registry import MODELS, build_model, export_to_file, parse_overrides

    if args.list:
        for name, spec in MODELS.items():
            print(f"{name:12s} {spec.description}")
        return 0
    if not args.arch:
        raise CommandLineError(f"nmc export needs a model name: one of {', '.join(MODELS)} "
                               "(`nmc export --list` describes them)")
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
    check_files(outputs=[("-o", args.output)], inputs=[("--weights", weights)])
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

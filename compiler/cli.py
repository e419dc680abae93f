"""`nmc`: the command line.

    nmc export mlp_block -o model.pt       a torch.export file of a built-in model
    nmc compile model.pt -o prog.bin       compile (IR: --print-ir-after-all, --dump-ir DIR)
    nmc run prog.bin --input x.npy -o y.npy --report
    nmc disasm prog.bin [-o prog.s]        nmc asm prog.s -o prog.bin
    nmc opt -p PASS,PASS in.mlir           run passes on a dumped IR file, like mlir-opt
    nmc demo                               all of the above on the default model

Every error a user can cause is an NmcError: it is printed as one line, `nmc: error: ...`,
with exit status 1 (2 for bad command-line usage, like argparse); `--debug` shows the
traceback instead. Every output file is written atomically.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from nmc.isa.errors import NmcError
from nmc.isa.target import DEFAULT_TARGET


def _add_target(p: argparse.ArgumentParser) -> None:
    p.add_argument("--target", default=DEFAULT_TARGET,
                   help="built-in target name or path of a target TOML (default: %(default)s)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="nmc", description=__doc__.split("\n\n")[0])
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("export", help="write a torch.export file of a built-in model")
    p.add_argument("arch", help="built-in model name (see `nmc export --list`)", nargs="?")
    p.add_argument("-o", "--output", type=Path)
    p.add_argument("--list", action="store_true", help="list the built-in models")
    p.add_argument("--seed", type=int, default=0, help="seed of the random weights")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a model hyper-parameter, e.g. --set dim=256 --set tokens=50")

    p = sub.add_parser("compile", help="compile a torch.export file to prog.bin")
    p.add_argument("model", type=Path)
    p.add_argument("-o", "--output", type=Path, required=True)
    _add_target(p)
    p.add_argument("--print-ir-after-all", action="store_true")
    p.add_argument("--print-ir-after", action="append", default=[], metavar="PASS")
    p.add_argument("--dump-ir", type=Path, metavar="DIR", help="write the IR of every stage")

    p = sub.add_parser("run", help="run prog.bin on the emulator")
    p.add_argument("program", type=Path)
    p.add_argument("--input", "-i", action="append", default=[], metavar="[NAME=]FILE.npy")
    p.add_argument("-o", "--output", type=Path, help=".npy (one output) or .npz")
    p.add_argument("--report", action="store_true", help="print the cycle report")
    p.add_argument("--target", help="built-in target name or path of a target TOML "
                                    "(default: the target prog.bin was built for)")

    p = sub.add_parser("disasm", help="print prog.bin as assembly")
    p.add_argument("program", type=Path)
    p.add_argument("-o", "--output", type=Path)

    p = sub.add_parser("asm", help="assemble a .s file into prog.bin")
    p.add_argument("source", type=Path)
    p.add_argument("-o", "--output", type=Path, required=True)

    p = sub.add_parser("opt", help="run passes on an IR file (like mlir-opt / xdsl-opt)")
    p.add_argument("input", type=Path, nargs="?", help="IR file (default: stdin)")
    p.add_argument("-p", "--passes", default="", help="comma-separated pipeline")
    p.add_argument("-o", "--output", type=Path)
    p.add_argument("--print-ir-after-all", action="store_true")
    p.add_argument("--list-passes", action="store_true")

    p = sub.add_parser("demo", help="export, compile and run the default model")
    p.add_argument("--workdir", type=Path, default=Path("out/demo"))
    _add_target(p)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    from nmc.compiler import commands

    try:
        return getattr(commands, f"cmd_{args.command}")(args) or 0
    except NmcError as e:
        if args.debug:
            raise
        print(f"nmc: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("nmc: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())

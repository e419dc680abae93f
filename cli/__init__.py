"""`nmc`: the command line.

    nmc export mlp_block -o model.pt       a torch.export file of a built-in model
    nmc export deit_tiny --img-size 160 --weights deit.pth -o model.pt
    nmc compile model.pt -o prog.bin       compile (IR: --print-ir-after-all, --dump-ir DIR)
    nmc compile model.pt -o prog.bin --sparsity elsa:speedup=2 --sparsity-out s.json
    nmc run prog.bin --input x.npy -o y.npy --report
    nmc run prog.bin -i x.npy --report-json r.json --trace run.json --dense-baseline dense.bin
    nmc report dense.bin sparse.bin --plot cycles.png   per-layer comparison and plot
    nmc disasm prog.bin [-o prog.s]        nmc asm prog.s -o prog.bin
    nmc inspect prog.bin                   header, sections, symbols, per-layer sparsity
    nmc opt -p PASS,PASS in.mlir           run passes on a dumped IR file, like mlir-opt
    nmc sparsify deit_digits --budget speedup=2.5 -o sparse.pt   ELSA on digits (or SparseViT:
                                           swin_digits --budget latency=0.6)
    nmc eval prog.bin --data digits        top-1 accuracy measured on the emulator
    nmc demo                               all of the above on the default model

Every error a user can cause is an NmcError: it is printed as one line, `nmc: error: ...`,
with exit status 1 (2 for bad command-line usage, like argparse); `--debug` shows the
traceback instead. Every output file is written atomically. Other exit statuses: 130 on
Ctrl-C, 143 on SIGTERM (both leave no partial output file), 141 when stdout is a closed
pipe (`nmc disasm prog.bin | head`), 70 for an internal error (a bug in nmc: one line,
`nmc: internal error: ...`; `--debug` shows the traceback). See docs/ROBUSTNESS.md.

Each command group is a module of this package holding its parsers and its handlers:
export, compile (compile, opt), run (run, report, eval), program (disasm, asm, inspect),
sparsify, demo; shared.py holds what they share. This module holds `main`: the parser,
the error handling and the exit statuses.
"""

from __future__ import annotations

import argparse
import importlib
import os
import signal
import sys
import threading

from nmc.cli.shared import one_line
from nmc.common.errors import NmcError

COMMAND_GROUPS = ("export", "compile", "run", "program", "sparsify", "demo")
"""The modules nmc.cli.GROUP: each `register`s its subcommands (parser and handler)."""


class _Parser(argparse.ArgumentParser):
    """argparse, with its errors as one line like every other error (status 2)."""

    def error(self, message: str):
        self.exit(2, f"nmc: error: {message} (see `{self.prog} --help`)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="nmc", description=__doc__.split("\n\n")[0])
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for group in COMMAND_GROUPS:
        importlib.import_module(f"nmc.cli.{group}").register(sub)
    return parser


EXIT_ERROR = 1
EXIT_INTERNAL = 70  # EX_SOFTWARE
EXIT_INTERRUPTED = 130  # 128 + SIGINT
EXIT_BROKEN_PIPE = 141  # 128 + SIGPIPE
EXIT_TERMINATED = 143  # 128 + SIGTERM


class Terminated(BaseException):
    """Raised in the main thread on SIGTERM, so that `finally` blocks (and the atomic
    writer's clean-up of its temporary file) run, as they do for KeyboardInterrupt."""


def _on_sigterm(signum, frame):
    raise Terminated()


def _install_sigterm():
    """Turn SIGTERM into `Terminated` while a command runs; returns the previous handler
    (None if nothing was installed: not the main thread, or someone else handles it)."""
    if threading.current_thread() is not threading.main_thread():
        return None
    try:
        if signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
            return None
        return signal.signal(signal.SIGTERM, _on_sigterm)
    except (ValueError, OSError, AttributeError):
        return None


def _quiet_stdout() -> None:
    """stdout is a closed pipe: send what is left to /dev/null, so the interpreter's final
    flush does not report the broken pipe again."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError, AttributeError):
        pass


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    previous = _install_sigterm()
    try:
        from nmc.common.progress import quiet

        with quiet(getattr(args, "quiet", False)):
            status = args.handler(args) or 0
        sys.stdout.flush()  # a closed pipe shows here, not in the interpreter's last flush
        return status
    except NmcError as e:
        if args.debug:
            raise
        print(f"nmc: error: {one_line(str(e))}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print("nmc: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Terminated:
        print("nmc: terminated", file=sys.stderr)
        return EXIT_TERMINATED
    except BrokenPipeError:
        _quiet_stdout()
        return EXIT_BROKEN_PIPE
    except MemoryError:
        if args.debug:
            raise
        print(f"nmc: error: out of memory running `nmc {args.command}`", file=sys.stderr)
        return EXIT_ERROR
    except Exception as e:  # a bug in nmc: still one line, unless --debug
        if args.debug:
            raise
        print(f"nmc: internal error: {type(e).__name__}: {one_line(str(e))} (this is a bug "
              "in nmc; rerun with --debug for the traceback)", file=sys.stderr)
        return EXIT_INTERNAL
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)

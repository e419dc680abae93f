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
sparsify, demo; shared.py holds what they share, paths.py the checks of the files a command
reads and writes. This module holds `main`: the parser,
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


_GIVEN = "_options_given"
"""The namespace attribute where `_StoreOnce` records the options given (removed by main)."""


class _StoreOnce(argparse._StoreAction):
    """An option that takes a value may be given once: a repeat is an error, as in LLVM's
    command-line parser ("may only occur zero or one times"), not a silent override of the
    first value. Options meant to repeat use action="append" (--input, --set, ...)."""

    def __call__(self, parser, namespace, values, option_string=None):
        if option_string is not None:
            given = namespace.__dict__.setdefault(_GIVEN, set())
            if self.dest in given:
                parser.error(f"option {'/'.join(self.option_strings)} is given twice "
                             f"({getattr(namespace, self.dest, None)}, then {values}): give "
                             "it once")
            given.add(self.dest)
        super().__call__(parser, namespace, values, option_string)


class _Parser(argparse.ArgumentParser):
    """argparse, with its errors as one line like every other error (status 2) and value
    options that may not repeat."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.register("action", None, _StoreOnce)
        self.register("action", "store", _StoreOnce)

    def error(self, message: str):
        self.exit(2, f"nmc: error: {message} (see `{self.prog} --help`)\n")


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("nmc")
    except PackageNotFoundError:  # run from a source tree that is not installed
        return "unknown"


DEBUG_HELP = "show tracebacks on errors"


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="nmc", description=__doc__.split("\n\n")[0])
    parser.add_argument("--debug", action="store_true", help=DEBUG_HELP)
    parser.add_argument("--version", action="version", version=f"nmc {_version()}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for group in COMMAND_GROUPS:
        importlib.import_module(f"nmc.cli.{group}").register(sub)
    for command in sub.choices.values():
        # `nmc compile ... --debug` as well as `nmc --debug compile ...`; SUPPRESS leaves
        # the top-level value when the subcommand does not get the flag
        command.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                             help=DEBUG_HELP)
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
    vars(args).pop(_GIVEN, None)
    # the command line as given: `nmc sparsify --nproc N` starts N copies of it
    args.command_line = list(sys.argv[1:] if argv is None else argv)
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
        return getattr(e, "exit_status", EXIT_ERROR)
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

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
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
from pathlib import Path

from nmc.common.errors import NmcError
from nmc.isa.target import DEFAULT_TARGET


def _add_quiet(p: argparse.ArgumentParser) -> None:
    p.add_argument("-q", "--quiet", action="store_true",
                   help="no progress bars (they only show when stderr is a terminal)")


def _add_target(p: argparse.ArgumentParser) -> None:
    p.add_argument("--target", default=DEFAULT_TARGET,
                   help="built-in target name or path of a target TOML (default: %(default)s)")


class _Parser(argparse.ArgumentParser):
    """argparse, with its errors as one line like every other error (status 2)."""

    def error(self, message: str):
        self.exit(2, f"nmc: error: {message} (see `{self.prog} --help`)\n")


def _add_run_options(p: argparse.ArgumentParser) -> None:
    """Options of the commands that run programs on the emulator (run, report)."""
    p.add_argument("--report-json", type=Path, metavar="FILE",
                   help="write the report as JSON (per layer: cycles, MACs, sparsity, ...)")
    p.add_argument("--target", help="built-in target name or path of a target TOML "
                                    "(default: the target prog.bin was built for)")
    p.add_argument("--max-instructions", type=int, metavar="N",
                   help="refuse programs with more than N instructions before halt")
    p.add_argument("--dense-baseline", type=Path, metavar="DENSE.bin",
                   help="the same model compiled dense: run it for the speedup (default: "
                        "the compiler's estimate in prog.bin, if any)")
    p.add_argument("--baseline-cycles", type=int, metavar="N",
                   help="cycles of the dense model, for the speedup")
    _add_quiet(p)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="nmc", description=__doc__.split("\n\n")[0])
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("export", help="write a torch.export file of a built-in model")
    p.add_argument("arch", help="built-in model name (see `nmc export --list`)", nargs="?")
    p.add_argument("-o", "--output", type=Path)
    p.add_argument("--list", action="store_true", help="list the built-in models")
    p.add_argument("--seed", type=int, default=0, help="seed of the random weights")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a model hyper-parameter, e.g. --set dim=256 --set tokens=50")
    p.add_argument("--img-size", type=int, metavar="N",
                   help="input image size N x N (DeiT; same as --set img_size=N)")
    p.add_argument("--weights", type=Path, metavar="FILE",
                   help="load a state_dict (torch.save of a dict, e.g. a timm checkpoint) "
                        "instead of random weights")

    p = sub.add_parser("compile", help="compile a torch.export file to prog.bin")
    p.add_argument("model", type=Path)
    p.add_argument("-o", "--output", type=Path, required=True)
    _add_target(p)
    p.add_argument("--print-ir-after-all", action="store_true")
    p.add_argument("--print-ir-after", action="append", default=[], metavar="PASS")
    p.add_argument("--dump-ir", type=Path, metavar="DIR", help="write the IR of every stage")
    p.add_argument("--sparsity", metavar="SPEC",
                   help="N:M sparsity of the linear layers: N:M (every block linear), "
                        "FILE.json (per layer), elsa:speedup=S or elsa:flops=F (search)")
    p.add_argument("--calib", type=Path, metavar="FILE.npy",
                   help="calibration inputs of the ELSA search (default: fixed-seed inputs)")
    p.add_argument("--sparsity-out", type=Path, metavar="FILE.json",
                   help="write the chosen sparsity (the format --sparsity FILE.json reads)")
    p.add_argument("--window-keep", metavar="SPEC",
                   help="SparseViT window pruning of Swin blocks: a keep ratio R in (0, 1] "
                        "for every block, FILE.json ({block: ratio}), or "
                        "sparsevit:latency=L (search per-block ratios under a modelled-"
                        "latency budget, L a fraction of the dense latency)")
    p.add_argument("--window-keep-out", type=Path, metavar="FILE.json",
                   help="write the keep ratios used (the format --window-keep FILE.json reads)")
    _add_quiet(p)

    p = sub.add_parser("run", help="run prog.bin on the emulator")
    p.add_argument("program", type=Path)
    p.add_argument("--input", "-i", action="append", default=[], metavar="[NAME=]FILE.npy")
    p.add_argument("-o", "--output", type=Path, help=".npy (one output) or .npz")
    p.add_argument("--report", action="store_true",
                   help="print the cycle report (per layer, per unit, totals, speedup)")
    p.add_argument("--trace", type=Path, metavar="FILE.json",
                   help="write a Chrome trace-event file (ui.perfetto.dev, chrome://tracing)")
    _add_run_options(p)

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

    p = sub.add_parser("disasm", help="print prog.bin as assembly")
    p.add_argument("program", type=Path)
    p.add_argument("-o", "--output", type=Path)

    p = sub.add_parser("inspect", help="summarise prog.bin: header, sections, symbols, "
                                       "per-layer sparsity, bytes and instruction counts")
    p.add_argument("program", type=Path)

    p = sub.add_parser("asm", help="assemble a .s file into prog.bin")
    p.add_argument("source", type=Path)
    p.add_argument("-o", "--output", type=Path, required=True)

    p = sub.add_parser("opt", help="run passes on an IR file (like mlir-opt / xdsl-opt)")
    p.add_argument("input", type=Path, nargs="?", help="IR file (default: stdin)")
    p.add_argument("-p", "--passes", default="", help="comma-separated pipeline")
    p.add_argument("-o", "--output", type=Path)
    p.add_argument("--print-ir-after-all", action="store_true")
    p.add_argument("--list-passes", action="store_true")

    p = sub.add_parser("sparsify", help="train a model N:M sparse (ELSA) or window-pruned "
                                        "(SparseViT) on a data set, under a budget")
    p.add_argument("model", help="built-in architecture (deit_digits, swin_digits, ...: see "
                                 "`nmc export --list`) or a torch.export file")
    p.add_argument("--data", default="digits",
                   help="digits (scikit-learn's, default), a folder of class sub-folders of "
                        "images, or an .npz of images and labels")
    p.add_argument("--budget", required=True, metavar="KIND=VALUE",
                   help="speedup=S or flops=F: ELSA N:M (linear layers S times faster on the "
                        "timing model, or F times fewer MACs); latency=L: SparseViT window "
                        "keep ratios (modelled latency at most L x dense)")
    p.add_argument("-o", "--output", type=Path, required=True, metavar="OUT.pt",
                   help="the fine-tuned torch.export file; the configuration is written "
                        "beside it (OUT.sparsity.json or OUT.window-keep.json)")
    p.add_argument("--epochs", type=int, default=20,
                   help="supernet / adaptation epochs (default: %(default)s)")
    p.add_argument("--pretrain-epochs", type=int, metavar="N",
                   help="dense epochs first (default: 30 for an architecture, which starts "
                        "from random weights; 0 for a model file)")
    p.add_argument("--finetune-epochs", type=int, default=20,
                   help="epochs of the chosen configuration (default: %(default)s)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--seed", type=int, default=0, help="seed of weights, data order and "
                                                       "searches (default: %(default)s)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a hyper-parameter of the architecture")
    p.add_argument("--config-out", type=Path, metavar="FILE.json",
                   help="where to write the chosen configuration")
    p.add_argument("--checkpoint", type=Path, metavar="FILE",
                   help="checkpoint to resume from and save to (default: OUT.ckpt); "
                        "another --budget on the same checkpoint reuses its pre-training "
                        "and supernet")
    p.add_argument("--restart", action="store_true",
                   help="ignore an existing checkpoint and start over")
    p.add_argument("--report-json", type=Path, metavar="FILE",
                   help="write the configuration and accuracies as JSON")
    _add_target(p)
    _add_quiet(p)

    p = sub.add_parser("eval", help="top-1 accuracy of a compiled classifier, run on the "
                                    "emulator, on a data set")
    p.add_argument("program", type=Path)
    p.add_argument("--data", default="digits",
                   help="digits (default), a folder of class sub-folders, or an .npz")
    p.add_argument("--split", default="test", help="train, val or test (default: %(default)s)")
    p.add_argument("--limit", type=int, metavar="N", help="only the first N images")
    p.add_argument("--reference", type=Path, metavar="MODEL.pt",
                   help="also run this torch.export file in PyTorch and compare predictions")
    p.add_argument("--json", type=Path, metavar="FILE", help="write the results as JSON")
    p.add_argument("--target", help="built-in target name or path of a target TOML "
                                    "(default: the target prog.bin was built for)")
    _add_quiet(p)

    p = sub.add_parser("demo", help="export, compile and run the default model")
    p.add_argument("--workdir", type=Path, default=Path("out/demo"))
    p.add_argument("--model", default="deit_tiny", help="built-in model (default: %(default)s)")
    _add_target(p)
    _add_quiet(p)
    return parser


EXIT_ERROR = 1
EXIT_INTERNAL = 70  # EX_SOFTWARE
EXIT_INTERRUPTED = 130  # 128 + SIGINT
EXIT_BROKEN_PIPE = 141  # 128 + SIGPIPE
EXIT_TERMINATED = 143  # 128 + SIGTERM


class Terminated(BaseException):
    """Raised in the main thread on SIGTERM, so that `finally` blocks (and the atomic
    writer's clean-up of its temporary file) run, as they do for KeyboardInterrupt."""


def one_line(message: str) -> str:
    """An error message as one line (some library messages span several)."""
    lines = [line.strip() for line in str(message).splitlines() if line.strip()]
    return " ".join(lines) or "(no message)"


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
        from nmc.compiler import commands
        from nmc.common.progress import quiet

        with quiet(getattr(args, "quiet", False)):
            status = getattr(commands, f"cmd_{args.command}")(args) or 0
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


if __name__ == "__main__":
    sys.exit(main())

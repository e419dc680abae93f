"""What several `nmc` commands share: the usage error, checks of output paths and source
files, options that mean the same everywhere, and the target a program runs on."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from nmc.common.errors import NmcError
from nmc.common.fileio import atomic_write_text
from nmc.isa.target import DEFAULT_TARGET


class UsageError(NmcError):
    """A command-line option that makes no sense for this input."""


class CommandLineError(UsageError):
    """A command line that is incomplete (a required argument missing in a way argparse
    cannot see): exit status 2, as argparse's own errors."""

    exit_status = 2


def one_line(message: str, empty: str = "(no message)") -> str:
    """A message as one line (some library messages span several); `empty` if it is blank."""
    lines = [line.strip() for line in str(message).splitlines() if line.strip()]
    return " ".join(lines) or empty


def one_line_error(e: BaseException) -> str:
    """An exception's message as one line, or its type's name if it has none."""
    return one_line(str(e), type(e).__name__)


def write_json(path: Path, value) -> None:
    atomic_write_text(path, json.dumps(value, indent=1) + "\n")


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


def target_for(program, target_option: str | None, path: Path):
    """The target to run `program` on: --target, else the built-in one it was built for."""
    from nmc.isa.target import load_target

    if target_option is not None:
        return load_target(target_option)
    try:  # the name recorded in prog.bin selects a built-in target, never a file
        return load_target(program.target_name, builtin_only=True)
    except NmcError as e:
        raise UsageError(f"{path} was built for target '{program.target_name}': {e}; pass "
                         "--target NAME or --target FILE.toml") from None


# ---------------------------------------------------------------------------- options


def positive_int(text: str) -> int:
    """An argparse type: an integer >= 1 (a count, a limit)."""
    value = _integer(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, not {text}")
    return value


SEED_LIMIT = 1 << 64
"""Seeds are what torch.manual_seed and numpy's generators both take: 0 <= seed < 2^64."""


def seed_int(text: str) -> int:
    value = _integer(text)
    if not 0 <= value < SEED_LIMIT:
        raise argparse.ArgumentTypeError(f"must be an integer in [0, 2^64), not {text}")
    return value


def _integer(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid int value: '{text}'") from None


def add_quiet(p: argparse.ArgumentParser) -> None:
    p.add_argument("-q", "--quiet", action="store_true",
                   help="no progress bars (they only show when stderr is a terminal)")


def add_target(p: argparse.ArgumentParser) -> None:
    """--target of the commands that build a program."""
    p.add_argument("--target", default=DEFAULT_TARGET,
                   help="built-in target name or path of a target TOML (default: %(default)s)")


def add_program_target(p: argparse.ArgumentParser) -> None:
    """--target of the commands that run a program (`target_for`)."""
    p.add_argument("--target", help="built-in target name or path of a target TOML "
                                    "(default: the target prog.bin was built for)")


def add_data_options(p: argparse.ArgumentParser) -> None:
    """--data and --normalize of the commands that read a labelled image data set
    (`nmc.models.datasets.load_dataset`; images are resized to the model's input)."""
    p.add_argument("--data", default="digits",
                   help="digits (scikit-learn's, default), fashion-mnist (the Debian package "
                        "dataset-fashion-mnist), a folder of the four IDX files of an "
                        "MNIST-family set, a folder of class sub-folders of images, or an "
                        ".npz of images and labels; images are resized to the model's input")
    p.add_argument("--normalize", default="dataset", metavar="dataset|imagenet",
                   help="per-channel normalisation of the images: dataset (the training "
                        "split's mean and std, for models trained by nmc; default) or "
                        "imagenet (ImageNet's mean and std, what pretrained ViTs such as "
                        "DINOv2 expect)")


def add_cluster_options(p: argparse.ArgumentParser, what: str) -> None:
    """--workers and --scheduler of the commands that can spread `what` over a Dask cluster
    (`nmc.common.cluster`; `cluster_for` reads them)."""
    p.add_argument("--workers", type=positive_int, default=1, metavar="N",
                   help=f"spread {what} over a local Dask cluster of N worker processes "
                        "(default: 1, no cluster; results are the same for every N)")
    p.add_argument("--scheduler", metavar="tcp://HOST:PORT",
                   help=f"spread {what} over the existing Dask cluster whose scheduler "
                        "listens there (`dask scheduler`, `dask worker tcp://HOST:8786`)")


def cluster_for(args) -> dict | None:
    """The `dask_client` arguments of --workers / --scheduler; None: run here, no cluster."""
    if args.scheduler is not None:
        if args.workers != 1:
            raise UsageError("give --workers N or --scheduler ADDRESS, not both (the "
                             "cluster's workers are its own)")
        if "://" not in args.scheduler:
            raise UsageError(f"--scheduler {args.scheduler}: write the scheduler's address "
                             "as tcp://HOST:PORT")
        return {"scheduler": args.scheduler}
    return {"workers": args.workers} if args.workers > 1 else None


def add_architecture_options(p: argparse.ArgumentParser, seed_help: str) -> None:
    """--seed and --set of the commands that build a built-in architecture."""
    p.add_argument("--seed", type=seed_int, default=0, help=seed_help)
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a model hyper-parameter, e.g. --set dim=256 --set tokens=50")

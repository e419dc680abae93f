"""`nmc sparsify --nproc N`: start N ranks of the same command under torch's elastic
launcher, what `torchrun --standalone --nproc-per-node N -m nmc.cli sparsify ...` does,
from inside nmc so that a failure is one line (the failing rank's own error), not
torchrun's report. The ranks find themselves under torchrun and train data-parallel
(`nmc.training.data_parallel`); `--max-restarts K` restarts them all after a failure,
and they resume from the checkpoint rank 0 writes after every epoch.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import tempfile
import uuid
from pathlib import Path

from nmc.training.data_parallel import ERRORS_ENV
from nmc.training.errors import SparsifyError


def parse_nnodes(text: str) -> tuple[int, int]:
    """--nnodes N or MIN:MAX, as torchrun reads it."""
    lo, sep, hi = text.partition(":")
    try:
        lo_n, hi_n = int(lo), int(hi if sep else lo)
    except ValueError:
        raise SparsifyError(f"--nnodes {text}: expected N or MIN:MAX") from None
    if not 0 < lo_n <= hi_n:
        raise SparsifyError(f"--nnodes {text}: need 0 < MIN <= MAX")
    return lo_n, hi_n


def launch(argv: list[str], nproc: int, nnodes: str = "1", max_restarts: int = 0,
           rdzv_endpoint: str | None = None) -> int:
    """Run `nmc ARGV` as `nproc` ranks on this node (of `nnodes` nodes that meet at
    `rdzv_endpoint`, HOST:PORT; default: this machine alone) and wait for them. Returns
    rank 0's exit status; a failure is a SparsifyError with the failing rank's message."""
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    min_nodes, max_nodes = parse_nnodes(nnodes)
    if max_nodes > 1 and rdzv_endpoint is None:
        raise SparsifyError(f"--nnodes {nnodes}: several nodes meet at a rendezvous: give "
                            "--rdzv-endpoint HOST:PORT (the same on every node)")
    config = LaunchConfig(min_nodes=min_nodes, max_nodes=max_nodes, nproc_per_node=nproc,
                          run_id=f"nmc-{uuid.uuid4().hex[:12]}" if rdzv_endpoint is None
                          else "nmc-sparsify",
                          rdzv_endpoint=rdzv_endpoint or "localhost:0", rdzv_backend="c10d",
                          max_restarts=max_restarts, monitor_interval=0.1)
    # torch's launcher logs every start, restart and failure; the ranks speak for themselves
    logging.getLogger("torch.distributed.elastic").setLevel(logging.CRITICAL)
    previous = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
    with tempfile.TemporaryDirectory(prefix="nmc-ranks-") as errors:
        os.environ[ERRORS_ENV] = errors
        try:
            elastic_launch(config, sys.executable)("-m", "nmc.cli", *argv)
        except ChildFailedError as e:
            return _failure(e, Path(errors))
        finally:
            os.environ.pop(ERRORS_ENV, None)
            for s, handler in previous.items():  # the launcher installs its own
                signal.signal(s, handler)
    return 0


def _failure(e, errors: Path) -> int:
    """The ranks failed: raise the first recorded error line (lowest rank), else say which
    rank died how."""
    for path in sorted(errors.glob("rank*.txt"), key=lambda p: int(p.stem[4:])):
        line = path.read_text().strip()
        if line:
            raise SparsifyError(line)
    rank, failure = e.get_first_failure()
    code = failure.exitcode
    how = f"killed by signal {-code}" if code < 0 else f"exit status {code}"
    raise SparsifyError(f"training process {rank} failed ({how})")

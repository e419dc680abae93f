"""A Dask cluster to spread independent pieces of work over processes or machines
(`nmc eval --workers N / --scheduler ADDRESS`), and the one way nmc runs work on it.

    with dask_client(workers=2) as client:               # a LocalCluster of 2 processes
        results = map_ordered(client, work, shared, items, desc="eval")

`map_ordered` calls `work(shared, item)` on the workers, one task per item, and returns the
results in the order of `items` whatever order they finish in. `shared` (a program, a
model) is sent to the cluster once, as the result of one task: each worker fetches it once,
and if the worker holding it dies Dask recomputes it from that task, which a scattered
value would not survive. A worker that dies mid-task loses nothing: Dask reruns its tasks
elsewhere (a task that has killed `distributed.scheduler.allowed-failures` + 1 workers is
given up, an error). An exception in `work` ends the run as one `ClusterError`, whose
message names the item; the remaining tasks are cancelled.

Dask rather than Ray: pure Python, ~46 MB installed, a LocalCluster starts in ~2 s and
writes nothing to the home folder (docs/SCALE_OUT.md). Dask is imported only here and only
when a cluster is asked for: a command run without --workers/--scheduler starts nothing.
Lives in nmc.common so that every layer above (the emulator's evaluation, the compiler's
searches, training) can share it; it knows nothing of what the work is.
"""

from __future__ import annotations

import logging
import os
import uuid
from contextlib import contextmanager
from typing import Any, Callable, Iterator, Sequence

from nmc.common.errors import NmcError
from nmc.common.progress import progress

CONNECT_TIMEOUT_S = 10
"""How long to wait for the scheduler of --scheduler before giving up (Dask's own default,
30 s, is long for a typo in an address)."""

_QUIET_LOGS = {"DASK_LOGGING__DISTRIBUTED": "error"}
"""Dask's INFO/WARNING lines (startup, a restarted worker) are not nmc's output; errors
that end a run reach the user as a ClusterError instead. Workers read the environment."""


class ClusterError(NmcError):
    """The cluster cannot be reached or started, or work on it failed."""


@contextmanager
def dask_client(workers: int | None = None, scheduler: str | None = None) -> Iterator[Any]:
    """A `distributed.Client`: of the existing cluster whose scheduler listens at
    `scheduler` (tcp://HOST:PORT), else of a LocalCluster of `workers` processes with one
    thread each, closed when the block ends."""
    os.environ.update({k: v for k, v in _QUIET_LOGS.items() if k not in os.environ})
    import distributed

    logging.getLogger("distributed").setLevel(logging.ERROR)
    if scheduler is not None:
        try:
            client = distributed.Client(scheduler, timeout=CONNECT_TIMEOUT_S)
        except (OSError, TimeoutError, ValueError) as e:
            raise ClusterError(f"cannot reach the Dask scheduler at {scheduler}: "
                               f"{_message(e)}") from None
        with client:
            yield client
        return
    try:
        # the scheduler serves health checks over HTTP even without a dashboard: on a
        # free port, not on 8787 (with a warning when another cluster holds it)
        cluster = distributed.LocalCluster(n_workers=workers, threads_per_worker=1,
                                           processes=True, dashboard_address=None,
                                           silence_logs=logging.ERROR,
                                           scheduler_kwargs={"dashboard_address": "127.0.0.1:0"})
    except (OSError, TimeoutError, RuntimeError) as e:  # RuntimeError: a nanny failed
        raise ClusterError(f"cannot start {workers} Dask worker processes: "
                           f"{_message(e)}") from None
    with cluster, distributed.Client(cluster) as client:
        yield client


def worker_count(client) -> int:
    """The number of workers of the cluster now (it may change while work runs)."""
    return len(client.scheduler_info(n_workers=-1)["workers"])


def map_ordered(client, work: Callable[[Any, Any], Any], shared: Any,
                items: Sequence[Any], *, desc: str, names: Sequence[str] | None = None,
                unit: str = "shard") -> list[Any]:
    """[work(shared, item) for item in items], computed on the cluster of `client`, with a
    progress bar over the items. `work` must be importable by the workers (a module-level
    function of an installed module). `names` name the items in error messages."""
    from distributed import as_completed

    names = list(names) if names is not None else [f"#{i}" for i in range(len(items))]
    # keys unique to this call (an existing cluster may run several), readable on a dashboard
    token = uuid.uuid4().hex[:12]
    import dask

    # `shared` (a prog.bin: megabytes) is in the graph on purpose: see the module's doc
    with dask.config.set({"distributed.admin.large-graph-warning-threshold": "4GB"}):
        held = client.submit(_hold, shared, key=f"nmc-shared-{token}", pure=False)
    futures = [client.submit(work, held, item, key=f"nmc-{desc}-{token}-{i}", pure=False)
               for i, item in enumerate(items)]
    index = {f.key: i for i, f in enumerate(futures)}
    results: list[Any] = [None] * len(items)
    try:
        with progress(total=len(items), desc=desc, unit=unit) as bar:
            for future in as_completed(futures):
                i = index[future.key]
                results[i] = _result(future, names[i])
                bar.update()
    finally:
        client.cancel([*futures, held])
    return results


def _hold(value: Any) -> Any:
    """A task that returns its argument: how `shared` lives on the cluster (recomputable)."""
    return value


def _result(future, name: str) -> Any:
    """The result of one task; its failure as a ClusterError naming `name`."""
    from distributed import KilledWorker

    try:
        return future.result()
    except NmcError:  # the work's own error: already a message for the user
        raise
    except KilledWorker:
        raise ClusterError(f"{name}: its Dask workers died while running it, every time it "
                           "was retried (out of memory? see the workers' logs)") from None
    except Exception as e:
        raise ClusterError(f"{name} failed on a Dask worker: {type(e).__name__}: "
                           f"{_message(e)}") from None


def _message(e: BaseException) -> str:
    lines = [line.strip() for line in str(e).splitlines() if line.strip()]
    return " ".join(lines) or type(e).__name__

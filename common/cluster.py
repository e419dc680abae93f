"""A Dask cluster to spread independent pieces of work over processes or machines
(`nmc eval / compile / sparsify --workers N / --scheduler ADDRESS`), and the one way nmc
runs work on it.

    with dask_client(workers=2) as client:               # a LocalCluster of 2 processes
        results = map_ordered(client, work, shared, items, desc="eval")

    with offered(workers=2):                             # a command's searches, lazily
        with batch_scorer(here, remote, desc="...") as score:
            results = score(items)                       # (every batch of the search)

`map_ordered` calls `work(shared, item)` on the workers, one task per item, and returns the
results in the order of `items` whatever order they finish in. `shared` (a program, a
model) is sent to the cluster once, as the result of one task: each worker fetches it once,
and if the worker holding it dies Dask recomputes it from that task, which a scattered
value would not survive. A worker that dies mid-task loses nothing: Dask reruns its tasks
elsewhere (a task that has killed `distributed.scheduler.allowed-failures` + 1 workers is
given up, an error). An exception in `work` ends the run as one `ClusterError`, whose
message names the item; the remaining tasks are cancelled.

A search scores batches of candidates (a generation) many times over, against one model:
`batch_scorer` sends the model once (`held`, for every batch of the block), cuts each batch
into a few contiguous chunks per worker, and each worker builds its scorer from the model
once (`built_once`). Without a cluster `offered` to the command, the same batches are
scored here, one by one: the searches have one code path, serial or not.

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
from contextlib import ExitStack, contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
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


@dataclass(frozen=True)
class Held:
    """A value held on the cluster as the result of one task (`held`): `map_ordered` takes
    it as `shared` for as many calls as the block of `held` lasts."""

    future: Any


@contextmanager
def held(client, value: Any) -> Iterator[Held]:
    """`value` sent to the cluster once, as the result of one task (see the module's
    doc), for every `map_ordered` inside the block; released when the block ends."""
    import dask

    key = f"nmc-shared-{uuid.uuid4().hex[:12]}"
    # `value` (a prog.bin, a model: megabytes) is in the graph on purpose: see the module's doc
    with dask.config.set({"distributed.admin.large-graph-warning-threshold": "4GB"}):
        future = client.submit(_hold, value, key=key, pure=False)
    try:
        yield Held(future)
    finally:
        client.cancel([future])


def map_ordered(client, work: Callable[[Any, Any], Any], shared: Any,
                items: Sequence[Any], *, desc: str, names: Sequence[str] | None = None,
                unit: str = "shard") -> list[Any]:
    """[work(shared, item) for item in items], computed on the cluster of `client`, with a
    progress bar over the items. `work` must be importable by the workers (a module-level
    function of an installed module). `shared`: a value, sent for this call, or a `Held`
    one. `names` name the items in error messages."""
    if not isinstance(shared, Held):
        with held(client, shared) as h:
            return map_ordered(client, work, h, items, desc=desc, names=names, unit=unit)
    from distributed import as_completed

    names = list(names) if names is not None else [f"#{i}" for i in range(len(items))]
    # keys unique to this call (an existing cluster may run several), readable on a dashboard
    token = f"{desc.replace(' ', '-')}-{uuid.uuid4().hex[:12]}"
    futures = [client.submit(work, shared.future, item, key=f"nmc-{token}-{i}", pure=False)
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
        client.cancel(futures)
    return results


def _hold(value: Any) -> Any:
    """A task that returns its argument: how `shared` lives on the cluster (recomputable)."""
    return value


_BUILT: dict[str, Any] = {}
"""On a worker: the last value `built_once` built, as {"key": ..., "value": ...}. One
entry only, so a long-lived worker of a shared cluster holds one program's or model's
memory."""


def built_once(key: Any, build: Callable[[], Any]) -> Any:
    """On a worker: `build()`, kept for the tasks that follow while they bring the same
    `key` (a loaded program, a rebuilt model); another key replaces it."""
    if "key" not in _BUILT or _BUILT["key"] != key:
        _BUILT.clear()  # free the previous value's memory before building the next
        value = build()
        _BUILT.update(key=key, value=value)
    return _BUILT["value"]


# ---------------------------------------------------------------- a command's searches

_OFFERED: ContextVar[_Offer | None] = ContextVar("nmc_cluster_offered", default=None)


class _Offer:
    """The cluster of a command's --workers / --scheduler, started at its first use."""

    def __init__(self, options: dict[str, Any], stack: ExitStack):
        self.options, self.stack, self.client = options, stack, None

    def started(self):
        if self.client is None:
            self.client = self.stack.enter_context(dask_client(**self.options))
        return self.client


@contextmanager
def offered(workers: int | None = None, scheduler: str | None = None) -> Iterator[None]:
    """Inside the block, `batch_scorer` works on this cluster (the arguments of
    `dask_client`), started when a search first needs it (a command whose searches are
    resumed past, or not asked for, starts nothing) and closed when the block ends. With
    neither argument nothing is offered: the work is done here."""
    if workers is None and scheduler is None:
        yield
        return
    with ExitStack() as stack:
        token = _OFFERED.set(_Offer({"workers": workers, "scheduler": scheduler}, stack))
        try:
            yield
        finally:
            _OFFERED.reset(token)


def offered_client():
    """A client of the cluster `offered` to this block (started now if need be), or None."""
    offer = _OFFERED.get()
    return None if offer is None else offer.started()


@dataclass(frozen=True)
class Remote:
    """How a worker scores items: `build(payload)` makes the scorer (a callable of one
    item), once per worker for every batch of one `batch_scorer`. `build` must be
    importable by the workers (a module-level function)."""

    build: Callable[[Any], Callable[[Any], Any]]
    payload: Any


CHUNKS_PER_WORKER = 2
"""Chunks of a batch per worker: a batch (a generation of candidates) holds tens of items
of similar cost; a second chunk per worker evens out the differences, and more would only
add tasks (each a few milliseconds against the seconds of scoring a chunk)."""


@contextmanager
def batch_scorer(here: Callable[[], Callable[[Any], Any]], remote: Callable[[], Remote], *,
                 desc: str, unit: str = "candidate",
                 names: Callable[[Any], str] | None = None
                 ) -> Iterator[Callable[[Sequence[Any]], list[Any]]]:
    """A function scoring a batch of items, results in item order: on the cluster
    `offered` to the command, `remote()`'s payload held there once for the whole block and
    every batch cut into contiguous chunks (CHUNKS_PER_WORKER per worker); else here,
    item by item, with the scorer `here()` makes (at the first batch). Both must compute
    the same function for results to be those of a serial run. A progress bar `desc`
    counts the items (chunks on a cluster) of each batch. `names(item)` names the items of
    a failing chunk in its error message (default: their positions)."""
    client = offered_client()
    if client is None:
        scorer: list[Callable[[Any], Any]] = []

        def score_here(items: Sequence[Any]) -> list[Any]:
            if not scorer:
                scorer.append(here())
            return [scorer[0](item) for item in progress(items, desc=desc, unit=unit)]

        yield score_here
        return
    # the key tells this block's scorer from any other a long-lived worker built before
    with held(client, (uuid.uuid4().hex, remote())) as shared:

        def score_there(items: Sequence[Any]) -> list[Any]:
            n = len(items)
            if not n:
                return []
            parts = min(n, CHUNKS_PER_WORKER * max(1, worker_count(client)))
            bounds = [(i * n // parts, (i + 1) * n // parts) for i in range(parts)]
            chunks = [list(items[lo:hi]) for lo, hi in bounds]
            results = map_ordered(client, _score_chunk, shared, chunks, desc=desc,
                                  unit="chunk",
                                  names=[_chunk_name(desc, unit, items, lo, hi, names)
                                         for lo, hi in bounds])
            return [r for part in results for r in part]

        yield score_there


def _score_chunk(shared: tuple[str, Remote], chunk: list[Any]) -> list[Any]:
    """On a worker: the scores of one chunk of items."""
    key, spec = shared
    scorer = built_once(("scorer", key), lambda: spec.build(spec.payload))
    return [scorer(item) for item in chunk]


def _chunk_name(desc: str, unit: str, items: Sequence[Any], lo: int, hi: int,
                names: Callable[[Any], str] | None) -> str:
    if names is not None:
        shown = names(items[lo]) if hi - lo == 1 else f"{names(items[lo])} .. " \
                                                        f"{names(items[hi - 1])}"
        return f"{desc} of {shown}"
    return f"{desc} of {unit}s {lo + 1}..{hi} of {len(items)}"


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

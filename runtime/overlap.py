"""Running the matrix unit's instructions on a thread of their own, overlapped with the
others, as the modelled machine overlaps its units.

The fast path executes a program in its execution order (by modelled start cycle). Its
matmuls (the tile sgemms, half of the work on a compiled ViT) release the GIL, so a second
thread can run them while the main thread copies tiles and runs the vector instructions.
What makes that safe is the race check that precedes execution: two instructions on
different units that touch a common word (one writing it) never overlap in modelled time.
Hence, for instructions i before j in execution order that conflict, i *ends* (in modelled
cycles) no later than j starts. So:

- the worker runs the matrix instructions in execution order, each once the main thread has
  executed every other instruction before it in execution order ("go" locks);
- the main thread runs every other instruction in execution order, each once the worker has
  finished every matrix instruction whose modelled end is at or before its modelled start
  ("done" locks; the matrix unit is in order, so that is a prefix of its instructions).

Every conflicting pair is then ordered as in the sequential execution, and instructions that
may run at the same time touch disjoint words: the results are bit-identical to running one
instruction after the other. The locks are `_thread` locks (acquired and released in C, a
blocking acquire releases the GIL). An exception on either side releases every lock the
other side could be waiting on, then is raised by `run`.
"""

from __future__ import annotations

import os
import threading
from typing import Callable, Sequence

import numpy as np

Thunk = Callable[[], object] | None

# Below this many matrix instructions a thread costs more than it saves.
MIN_MATRIX_INSTRUCTIONS = 64


def usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


class OverlappedRun:
    """The split of a fast-path execution order into the matrix thread and the main one."""

    def __init__(self, seq: Sequence[Thunk], is_matrix: np.ndarray, starts: np.ndarray,
                 ends: np.ndarray):
        """`seq`: thunks in execution order; `is_matrix`, `starts`, `ends`: per position of
        that order, whether it is a matrix-unit instruction and its modelled cycles."""
        matrix_pos = np.flatnonzero(is_matrix)
        other_pos = np.flatnonzero(~is_matrix)
        self.matrix_seq = [seq[p] for p in matrix_pos.tolist()]
        self.other_seq = [seq[p] for p in other_pos.tolist()]
        # matrix instructions the k-th other one waits for: those ending by its start
        self.need = np.searchsorted(ends[matrix_pos], starts[other_pos], side="right").tolist()
        # other instructions the m-th matrix one waits for: those before it in the order
        self.before = np.searchsorted(other_pos, matrix_pos).tolist()
        self.matrix_positions = matrix_pos.tolist()
        self.other_positions = other_pos.tolist()

    @staticmethod
    def worthwhile(is_matrix: np.ndarray) -> bool:
        return usable_cores() > 1 and int(is_matrix.sum()) >= MIN_MATRIX_INSTRUCTIONS

    def run(self) -> None:
        """Execute everything; on an exception, raise it with the execution-order position
        of the failing instruction in `exc.position`."""
        # done[m] is released once matrix instruction m has run, go[k] once the first k
        # other instructions have; each side only ever releases its own locks (a wait is an
        # acquire and release of a lock the other side released), and on leaving, early or
        # not, releases those it has not yet, so the other side never waits forever.
        done = [_held() for _ in self.matrix_seq]
        go = [_held() for _ in range(len(self.other_seq) + 1)]
        failure: list[BaseException] = []
        # OpenMP's thread count is per thread (torch's set_num_threads sets the caller's):
        # the worker takes the main thread's, so its sgemms are those of a sequential run
        import torch

        threads = torch.get_num_threads()

        def worker() -> None:
            m = released = waited = 0
            try:
                torch.set_num_threads(threads)  # OpenMP's count is per thread
                for m, thunk in enumerate(self.matrix_seq):
                    want = self.before[m]
                    if want > waited:
                        _wait(go[want])
                        waited = want
                    if failure:
                        return
                    if thunk is not None:
                        thunk()
                    done[m].release()
                    released = m + 1
            except BaseException as e:  # noqa: BLE001 - raised by the main thread
                e.position = self.matrix_positions[m]
                failure.append(e)
            finally:
                for lock in done[released:]:
                    lock.release()

        thread = threading.Thread(target=worker, name="nmc-matrix-unit", daemon=True)
        thread.start()
        k = released = finished = 0
        try:
            go[0].release()
            released = 1
            for k, thunk in enumerate(self.other_seq):
                want = self.need[k]
                if want > finished:
                    _wait(done[want - 1])
                    finished = want
                    if failure:
                        break
                if thunk is not None:
                    thunk()
                go[k + 1].release()
                released = k + 2
        except BaseException as e:  # noqa: BLE001 - raised below
            e.position = self.other_positions[k]
            failure.append(e)
        finally:
            for lock in go[released:]:
                lock.release()
            thread.join()
        if failure:
            raise failure[0]


def _held() -> threading.Lock:
    lock = threading.Lock()
    lock.acquire()
    return lock


def _wait(lock: threading.Lock) -> None:
    """Block until the other side has released `lock`, leaving it released."""
    lock.acquire()
    lock.release()

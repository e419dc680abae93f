"""Progress bars on stderr for the slow steps of nmc (compile passes, the ELSA and
SparseViT searches).

    for item in progress(items, desc="ELSA search", unit="gen"): ...
    with progress(total=7, desc="compile") as bar: ...; bar.update()

A bar shows only when stderr is a terminal (tqdm's `disable=None`), so logs, pipes and
tests stay clean, and never inside `quiet()` (the CLI's `--quiet`). It lives in `nmc.common`,
the bottom layer, so that the compiler and the runtime can both use it.
"""

from __future__ import annotations

import sys
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Iterable, Iterator

_QUIET: ContextVar[bool] = ContextVar("nmc_progress_quiet", default=False)


@contextmanager
def quiet(enabled: bool = True) -> Iterator[None]:
    """No progress bars inside this block (when `enabled`)."""
    token = _QUIET.set(enabled or _QUIET.get())
    try:
        yield
    finally:
        _QUIET.reset(token)


def progress(iterable: Iterable | None = None, *, total: int | None = None,
             desc: str | None = None, unit: str = "it"):
    """A tqdm bar over `iterable` (or a manual one of `total` steps), on stderr; it
    disappears when done (leave=False) so that the command's own output stays tidy."""
    from tqdm import tqdm

    return tqdm(iterable, total=total, desc=desc, unit=unit, file=sys.stderr, leave=False,
                dynamic_ncols=True, disable=True if _QUIET.get() else None)

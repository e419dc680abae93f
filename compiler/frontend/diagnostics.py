"""torch-mlir's diagnostics, captured and turned into one nmc error.

torch-mlir lowers the imported FX graph with an MLIR pass pipeline; an op it cannot lower
(`aten.lstm`, ...) makes the pipeline emit an MLIR diagnostic, which MLIR's default handler
prints raw to the process's stderr (`loc(...): error: failed to legalize operation ...`),
and torch-mlir then raises an exception whose text holds none of it. `capture` attaches a
handler to the MLIR context the import runs in, so nothing reaches stderr, and
`import_error` makes of what it collected the error a user sees for every other op nmc
cannot take: an `UnsupportedOpsError` naming each op, its module path and its source line
(the locations are the importer's, see `locations.py`).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from xdsl.context import Context
from xdsl.parser import Parser
from xdsl.utils.exceptions import ParseError

from nmc.common.errors import NmcError
from nmc.compiler.errors import FrontendError, UnsupportedOp, UnsupportedOpsError
from nmc.compiler.frontend.locations import location_info
from nmc.compiler.refusals import REFUSALS

_OPERATOR_NAME_RE = re.compile(r'"torch\.operator"\(.*?<\{name = "([^"]+)"')
"""An op torch-mlir has no definition for is a `torch.operator` named by its property."""
_OPERATION_RE = re.compile(r"operation '([\w.]+)'")
_LEGALIZE_RE = re.compile(r"^failed to legalize operation '[\w.]+'")


@dataclass
class Diagnostics:
    """The error diagnostics of one torch-mlir import: (location text, message)."""

    errors: list[tuple[str, str]] = field(default_factory=list)


@contextmanager
def capture(context: Any) -> Iterator[Diagnostics]:
    """Collect the error diagnostics emitted in the MLIR `context` (a torch_mlir
    `ir.Context`) instead of printing them; other severities are dropped too (they would
    go to stderr as well, and nmc's own errors say what matters)."""
    from torch_mlir import ir

    found = Diagnostics()

    def handler(diagnostic: Any) -> bool:
        if diagnostic.severity == ir.DiagnosticSeverity.ERROR:
            found.errors.append((str(diagnostic.location), str(diagnostic.message)))
        return True  # handled: MLIR does not print it

    registration = context.attach_diagnostic_handler(handler)
    try:
        yield found
    finally:
        registration.detach()


def _location(text: str) -> tuple[str, str | None]:
    """(module path, "file.py:line" or None) of an MLIR location as printed, `loc(...)`."""
    try:
        loc = Parser(Context(), text).parse_optional_location()
    except ParseError:
        return "", None
    return location_info(loc)


def _op_and_reason(message: str) -> tuple[str, str] | None:
    """(op name, reason) from a diagnostic about one op, else None."""
    match = _OPERATOR_NAME_RE.search(message) or _OPERATION_RE.search(message)
    if match is None:
        return None
    if match.group(1) in REFUSALS:  # a known op: say what nmc accepts instead
        reason = REFUSALS[match.group(1)]
    elif _LEGALIZE_RE.match(message):
        reason = "torch-mlir cannot import it (no lowering or decomposition of this op)"
    else:
        reason = f"torch-mlir: {message.splitlines()[0].split(': %')[0]}"
    return match.group(1), reason


def import_error(found: Diagnostics, exc: Exception) -> NmcError:
    """The one-line error for a torch-mlir import that raised `exc` after emitting the
    diagnostics `found`."""
    ops: list[UnsupportedOp] = []
    for loc, message in found.errors:
        named = _op_and_reason(message)
        if named is not None:
            op, reason = named
            ops.append(UnsupportedOp(op, *_location(loc), reason))
    if ops:
        return UnsupportedOpsError(ops)
    if found.errors:
        loc, message = found.errors[0]
        path, source = _location(loc)
        where = " ".join(x for x in (path and f"at {path}", source and f"({source})") if x)
        text = " ".join(message.split())
        return FrontendError(f"torch-mlir could not import the model{' ' + where if where else ''}: "
                             f"{text}")
    lines = [x for x in str(exc).strip().splitlines() if x.strip()]
    return FrontendError(
        f"torch-mlir could not import the model ({type(exc).__name__}: "
        f"{lines[0] if lines else ''})"
    )

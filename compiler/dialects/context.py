"""The xDSL context nmc parses IR in."""

from __future__ import annotations

from collections.abc import Iterable

from xdsl.context import Context
from xdsl.dialects.builtin import Builtin
from xdsl.dialects.func import Func
from xdsl.ir import Dialect

from nmc.compiler.dialects.nm import NM
from nmc.compiler.dialects.torch import TORCH
from nmc.compiler.dialects.win import WIN


def make_context(extra: Iterable[Dialect] = (), *, allow_unregistered: bool = True) -> Context:
    """A context with builtin, func, torch, nm and win loaded (plus `extra` dialects).

    Unregistered ops and types are allowed by default so that any torch-mlir output parses;
    unknown torch ops are then reported by `raise-torch-to-nm`.
    """
    ctx = Context(allow_unregistered=allow_unregistered)
    for dialect in (Builtin, Func, TORCH, NM, WIN, *extra):
        if dialect.name not in ctx.registered_dialect_names:
            ctx.load_dialect(dialect)
    return ctx

"""User-facing errors raised by the compiler front half (frontend, raise-torch-to-nm).

All derive from `nmc.common.errors.NmcError`, so the CLI prints them as one line.
"""

from __future__ import annotations

from dataclasses import dataclass

from nmc.common.errors import NmcError


class FrontendError(NmcError):
    """The model file cannot be loaded or imported (wrong format, dynamic shapes, ...)."""


@dataclass(frozen=True)
class UnsupportedOp:
    """One operation the compiler cannot lower, with where it came from."""

    op_name: str  # e.g. "torch.aten.sigmoid"
    module_path: str  # PyTorch module path, "" at the top level of the model
    source: str | None  # "model.py:12" (file base name and line), None when unknown
    reason: str | None = None  # why a known op is not supported in this form

    def describe(self) -> str:
        text = self.op_name
        if self.module_path:
            text += f" at {self.module_path}"
        elif self.source:
            text += " at <top level>"
        if self.source:
            text += f" ({self.source})"
        if self.reason:
            text += f": {self.reason}"
        return text


class UnsupportedOpsError(NmcError):
    """The model uses operations nmc cannot compile; lists every one of them."""

    def __init__(self, ops: list[UnsupportedOp]):
        self.ops = list(ops)
        super().__init__(
            "unsupported operation(s): " + "; ".join(op.describe() for op in self.ops)
        )

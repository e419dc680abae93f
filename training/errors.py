"""The error of sparsity training, in a module without torch so that the command line can
name it without importing torch."""

from __future__ import annotations

from nmc.common.errors import NmcError


class SparsifyError(NmcError):
    """A bad `nmc sparsify` option, model or checkpoint."""

"""The error of the model layer, in its own module so that the models (swin.py) and the
registry (registry.py, which imports the models) can both raise it without an import cycle.
`nmc.models.registry.ModelError` is the same class."""

from __future__ import annotations

from nmc.common.errors import NmcError


class ModelError(NmcError):
    """An unknown built-in model, a bad hyper-parameter or a weights file that does not fit."""

"""The project's own error type.

common/ is the bottom layer (every other package, models/ included, may import it), so the
base class lives here.
Every error a user can cause is an `NmcError` subclass with a one-line message; the CLI prints
`nmc: error: <message>` and exits non-zero, with a traceback only under `--debug`.
"""


class NmcError(Exception):
    """An error caused by the user's input (model, options, target, program)."""

"""Test helpers of the Dask cluster tests: a worker plugin that makes a method raise on
every worker while it is registered (a worker's error must reach the user as one line)."""

import importlib
import sys
from contextlib import contextmanager

import cloudpickle
from distributed import WorkerPlugin

# the plugin travels to the worker processes by value (they cannot import tests/)
cloudpickle.register_pickle_by_value(sys.modules[__name__])


class RaisingOnWorkers(WorkerPlugin):
    """Replaces `module.Class.method` (`where`) on the worker by one raising `error`."""

    def __init__(self, where: str, error: BaseException):
        self.where, self.error = where, error

    def _owner(self):
        module, owner, method = self.where.rsplit(".", 2)
        return getattr(importlib.import_module(module), owner), method

    def setup(self, worker):
        owner, method = self._owner()
        self.original = getattr(owner, method)
        error = self.error

        def raising(*args, **kwargs):
            raise error

        setattr(owner, method, raising)

    def teardown(self, worker):
        owner, method = self._owner()
        setattr(owner, method, self.original)


@contextmanager
def raising_on_workers(client, where: str, error: BaseException):
    """`where` (module.Class.method) raises `error` on every worker of `client` inside."""
    client.register_plugin(RaisingOnWorkers(where, error), name="raising-on-workers")
    try:
        yield
    finally:
        client.unregister_worker_plugin("raising-on-workers")

"""The weight store: the model's tensors, loaded once and handed down the pipeline.

The IR names a weight only by its state_dict key (`nm.param`); its values stay here. The
frontend attaches a store to the module it imports (`attach_weights`); passes and the
emitter ask the module for it (`weights_of_module`) instead of reading the model file
again:

    store = weights_of_module(module)
    store["fc1.weight"]          # float32 array, read-only; a missing key: FrontendError
    store.program()              # the PyTorch program (ELSA's sensitivity runs it)

A module without an attached store (`nmc opt` on a dumped IR file) gets one on first use
that loads the file its `nm.model` attribute names through the frontend's loader (its
per-process cache: one read of the file per process). A store can also be built in memory
(`WeightStore.from_arrays`, `WeightStore.from_program`): then no file is read at all.
"""

from __future__ import annotations

import itertools
import os
import weakref
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING

import numpy as np
from xdsl.dialects.builtin import ModuleOp

from nmc.compiler.dialects.nm_attrs import model_path
from nmc.compiler.errors import FrontendError

if TYPE_CHECKING:  # the loader imports torch: only when a file is read
    from torch.export import ExportedProgram

_IDS = itertools.count()


class WeightStore(Mapping[str, np.ndarray]):
    """`store["fc1.weight"]` -> float32 array (non-float buffers keep their dtype)."""

    def __init__(self, name: str, arrays: Mapping[str, np.ndarray] | None = None,
                 program: ExportedProgram | None = None, path: str | None = None):
        """Use `from_file`, `from_arrays` or `from_program`. `name` is shown in errors."""
        self.name = name
        self._arrays = dict(arrays) if arrays is not None else None
        self._program = program
        self._path = path
        # identifies the contents in caches (the sensitivity's): the file's identity, or
        # this object's (a counter, never reused, unlike id())
        self._token = ("memory", next(_IDS))

    @classmethod
    def from_file(cls, model_path: str | os.PathLike[str]) -> WeightStore:
        """The tensors of a model file, loaded on first use by the frontend's loader."""
        path = os.fspath(model_path)
        return cls(path, path=path)

    @classmethod
    def from_arrays(cls, arrays: Mapping[str, np.ndarray],
                    name: str = "<in memory>") -> WeightStore:
        return cls(name, arrays=arrays)

    @classmethod
    def from_program(cls, ep: ExportedProgram, name: str = "<in memory>") -> WeightStore:
        """The tensors (and, for ELSA, the program) of an ExportedProgram in memory."""
        from nmc.compiler.frontend.loader import weights_of

        return cls(name, arrays=weights_of(ep), program=ep)

    @property
    def key(self) -> tuple:
        """What the contents are, for caches: (path, mtime, size) of a file, else unique."""
        if self._path is None:
            return self._token
        from pathlib import Path

        path = Path(self._path).expanduser().absolute()
        st = path.stat()
        return (str(path), st.st_mtime_ns, st.st_size)

    def _loaded(self) -> dict[str, np.ndarray]:
        if self._arrays is None:
            from pathlib import Path

            from nmc.compiler.frontend.model_format import is_onnx_file

            if self._path is not None and is_onnx_file(Path(self._path)):
                from nmc.compiler.frontend.onnx_model import prepare_onnx

                self._arrays = prepare_onnx(self._path).weights
            else:
                from nmc.compiler.frontend.loader import load_weights

                self._arrays = load_weights(self._path)
        return self._arrays

    def program(self) -> ExportedProgram:
        """The model as torch.export saved it (no decompositions: `aten.linear` whole)."""
        if self._program is None:
            from pathlib import Path

            from nmc.compiler.frontend.model_format import is_onnx_file

            if is_onnx_file(Path(self._path or self.name)):
                raise FrontendError(
                    f"{self.name}: the ELSA search measures the PyTorch program, which an "
                    f"ONNX model does not have; give --sparsity N:M or FILE.json, or "
                    f"compile the model's torch.export file")
            if self._path is None:
                raise FrontendError(f"{self.name}: the weights came without the model's "
                                    f"program")
            from nmc.compiler.frontend.loader import load_as_exported

            self._program = load_as_exported(self._path)
        return self._program

    def __getitem__(self, key: str) -> np.ndarray:
        try:
            return self._loaded()[key]
        except KeyError:
            raise FrontendError(f"{self.name}: the model has no parameter {key!r}") from None

    def __contains__(self, key: object) -> bool:
        return key in self._loaded()

    def __iter__(self) -> Iterator[str]:
        return iter(self._loaded())

    def __len__(self) -> int:
        return len(self._loaded())


_ATTACHED: weakref.WeakKeyDictionary[ModuleOp, WeightStore] = weakref.WeakKeyDictionary()


def attach_weights(module: ModuleOp, store: WeightStore) -> None:
    """Hand `store` down with `module`: every pass and the emitter read weights from it."""
    _ATTACHED[module] = store


def weights_of_module(module: ModuleOp) -> WeightStore | None:
    """The store attached to `module`; else one over the file its `nm.model` names (then
    attached, so later users share it); None when the module has neither."""
    store = _ATTACHED.get(module)
    if store is None:
        path = model_path(module)
        if path is None:
            return None
        store = _ATTACHED[module] = WeightStore.from_file(path)
    return store


__all__ = ["WeightStore", "attach_weights", "weights_of_module"]

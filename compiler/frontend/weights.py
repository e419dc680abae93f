"""The weights store: a model's tensors by state_dict key (the names `nm.param` ops carry).

    load_weights(model_path) -> dict[str, np.ndarray]

float32 numpy arrays (non-float buffers keep their dtype), read-only, cached per process by
(absolute path, mtime, size) together with the loaded program, so one `nmc compile` reads
the model file once. `Weights(model_path)` is a small read-only mapping over the same data
that says which parameter is missing by name.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping

import numpy as np

from nmc.compiler.errors import FrontendError
from nmc.compiler.frontend.loader import clear_cache, load_weights


class Weights(Mapping[str, np.ndarray]):
    """`weights["fc1.weight"]` -> float32 array; a missing key is a FrontendError."""

    def __init__(self, model_path: str | os.PathLike[str]):
        self.model_path = os.fspath(model_path)
        self._arrays = load_weights(model_path)

    def __getitem__(self, key: str) -> np.ndarray:
        try:
            return self._arrays[key]
        except KeyError:
            raise FrontendError(
                f"{self.model_path}: the model has no parameter {key!r}"
            ) from None

    def __iter__(self) -> Iterator[str]:
        return iter(self._arrays)

    def __len__(self) -> int:
        return len(self._arrays)


__all__ = ["Weights", "clear_cache", "load_weights"]

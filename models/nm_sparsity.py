"""N:M structured sparsity, the PyTorch reference (issue 5).

A weight W [out, in] with pattern N:M keeps, in every group of M consecutive weights along
the input dimension, the N of largest magnitude (ties: the lower index wins). `nm_mask` is
that choice, `apply_nm` the masked copy of a model (what the compiled sparse program must
compute), `pack_nm` the compressed form the accelerator stores: the kept values in their
original order and their in-group indices.
"""

from __future__ import annotations

import copy
from typing import Mapping

import numpy as np
import torch


def _as_tensor(weight) -> torch.Tensor:
    return weight.detach() if isinstance(weight, torch.Tensor) else torch.from_numpy(np.array(weight))


def _check(shape, n: int, m: int) -> None:
    if not 0 < n <= m:
        raise ValueError(f"N:M pattern {n}:{m} needs 0 < N <= M")
    if len(shape) != 2:
        raise ValueError(f"an N:M weight must be 2-D [out, in], got shape {list(shape)}")
    if shape[1] % m:
        raise ValueError(f"input dimension {shape[1]} is not a multiple of M = {m}")


def _kept(weight: torch.Tensor, n: int, m: int) -> torch.Tensor:
    """In-group indices of the kept weights, ascending: [out, in/m, n] (int64)."""
    out, k = weight.shape
    groups = weight.abs().reshape(out, k // m, m)
    # a stable descending sort keeps the lower index first among equal magnitudes
    order = torch.sort(groups, dim=-1, descending=True, stable=True).indices[..., :n]
    return torch.sort(order, dim=-1).values


def nm_mask(weight, n: int, m: int) -> torch.Tensor:
    """The bool mask [out, in] of the weights an N:M pattern keeps."""
    w = _as_tensor(weight)
    _check(w.shape, n, m)
    out, k = w.shape
    mask = torch.zeros(out, k // m, m, dtype=torch.bool)
    mask.scatter_(-1, _kept(w, n, m), True)
    return mask.reshape(out, k)


def pack_nm(weight, n: int, m: int) -> tuple[np.ndarray, np.ndarray]:
    """(values [out, in*n/m] float32, indices [out, in*n/m] int64 in 0..m-1): per group of
    m inputs, the n kept weights in input order and their positions in the group."""
    w = _as_tensor(weight).float()
    _check(w.shape, n, m)
    out, k = w.shape
    idx = _kept(w, n, m)  # [out, k/m, n]
    vals = torch.gather(w.reshape(out, k // m, m), -1, idx)
    return (vals.reshape(out, k * n // m).numpy().astype(np.float32),
            idx.reshape(out, k * n // m).numpy().astype(np.int64))


def unpack_nm(values: np.ndarray, indices: np.ndarray, n: int, m: int) -> np.ndarray:
    """The dense [out, in] weight of a packed one (the inverse of pack_nm on the mask)."""
    out, kc = values.shape
    k = kc * m // n
    dense = np.zeros((out, k), np.float32)
    cols = (np.arange(kc) // n * m)[None, :] + indices
    np.put_along_axis(dense, cols, values, axis=1)
    return dense


def apply_nm(module: torch.nn.Module,
             config: Mapping[str, tuple[int, int]]) -> torch.nn.Module:
    """A copy of `module` whose listed linear layers (module path -> (n, m)) have their
    weights masked to the pattern; N = M (or a missing entry) leaves a layer dense."""
    masked = copy.deepcopy(module)
    for name, (n, m) in config.items():
        layer = masked.get_submodule(name)
        weight = getattr(layer, "weight", None)
        if weight is None:
            raise ValueError(f"'{name}' has no weight to make {n}:{m} sparse")
        if n == m:
            continue
        with torch.no_grad():
            weight.mul_(nm_mask(weight, n, m).to(weight.dtype))
    return masked

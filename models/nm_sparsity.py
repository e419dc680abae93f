"""N:M structured sparsity, the PyTorch reference (issue 5).

A weight W [out, in] with pattern N:M keeps, in every group of M consecutive weights along
the input dimension, the N of largest magnitude (ties: the lower index wins, by a stable
sort; torch.topk, which most N:M code uses, leaves the order among equal magnitudes
unspecified, so on real weights with exact ties the two masks can differ). `nm_mask` is
that choice, `apply_nm` the masked copy of a model (what the compiled sparse program must
compute), `pack_nm` the compressed form the accelerator stores: the kept values in their
original order and their in-group indices. The rule itself lives in
`nmc.common.nm_format` (numpy), which the compiler and the emulator use too; this module
is its PyTorch face.
"""

from __future__ import annotations

import copy
from typing import Mapping

import numpy as np
import torch

from nmc.common import nm_format


def _as_array(weight) -> np.ndarray:
    """A numpy view (or copy) of a tensor or array."""
    return weight.detach().cpu().numpy() if isinstance(weight, torch.Tensor) \
        else np.asarray(weight)


def nm_mask(weight, n: int, m: int) -> torch.Tensor:
    """The bool mask [out, in] of the weights an N:M pattern keeps."""
    return torch.from_numpy(nm_format.nm_mask(_as_array(weight), n, m))


def pack_nm(weight, n: int, m: int) -> tuple[np.ndarray, np.ndarray]:
    """(values [out, in*n/m] float32, indices [out, in*n/m] int64 in 0..m-1): per group of
    m inputs, the n kept weights in input order and their positions in the group."""
    return nm_format.pack_values(np.asarray(_as_array(weight), np.float32), n, m)


def unpack_nm(values: np.ndarray, indices: np.ndarray, n: int, m: int) -> np.ndarray:
    """The dense [out, in] weight of a packed one (the inverse of pack_nm on the mask)."""
    return nm_format.unpack_values(values, indices, n, m)


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
        if nm_format.is_dense((n, m)):
            continue
        with torch.no_grad():
            weight.mul_(nm_mask(weight, n, m).to(weight.dtype))
    return masked

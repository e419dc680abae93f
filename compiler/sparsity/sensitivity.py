"""Per-layer sensitivity: the model-output error that one (layer, pattern) choice causes
alone, measured by running the PyTorch model of the export file with only that layer's
weight masked (`nm_mask`, keep the N largest |w| of every M along the input dimension).

error = ||y_masked - y|| / ||y|| (Frobenius norms over all calibration outputs).

Calibration inputs: `--calib FILE.npy` holds one input of the model's input shape, or a
stack of them ([n, *input shape]); by default two fixed-seed inputs: for an image model
([B, 3, H, H]) the demo image (`nmc.models.images.demo_image`) and a random normal one,
otherwise two random normal tensors. Results are cached per process by (model file,
calibration inputs, layer, pattern).
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
import torch

from nmc.compiler.sparsity.spec import Pattern, SparsityError

from nmc.models.nm_sparsity import nm_mask  # the reference mask of prune-and-pack

_CACHE: dict[tuple, float] = {}


def _file_key(path: str) -> tuple:
    st = Path(path).stat()
    return (str(Path(path).absolute()), st.st_mtime_ns, st.st_size)


def load_calibration(calib: str, input_shape: tuple[int, ...]) -> list[torch.Tensor]:
    """The calibration inputs (each of `input_shape`)."""
    shape = tuple(input_shape)
    if calib:
        try:
            arr = np.load(calib, allow_pickle=False)
        except FileNotFoundError:
            raise SparsityError(f"--calib {calib}: file not found") from None
        except (OSError, ValueError, EOFError) as e:
            raise SparsityError(f"--calib {calib}: cannot read it as .npy ("
                                f"{getattr(e, 'strerror', None) or str(e).splitlines()[0]})") \
                from None
        if not isinstance(arr, np.ndarray) or arr.dtype.kind not in "fiu":
            raise SparsityError(f"--calib {calib}: expected a numeric array, got dtype "
                                f"{getattr(arr, 'dtype', '?')}")
        if tuple(arr.shape) == shape:
            arr = arr[None]
        if tuple(arr.shape[1:]) != shape or arr.shape[0] == 0:
            raise SparsityError(f"--calib {calib}: shape {tuple(arr.shape)}; expected the "
                                f"model's input shape {shape} or a stack [n, *{shape}]")
        if not np.all(np.isfinite(arr)):
            raise SparsityError(f"--calib {calib}: holds NaN or infinite values")
        return [torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32)) for a in arr]
    gen = torch.Generator().manual_seed(0)
    inputs = []
    if len(shape) == 4 and shape[1] == 3 and shape[2] == shape[3]:
        from nmc.models.images import demo_image

        image, _ = demo_image(shape[2])
        inputs.append(image.expand(shape).contiguous())
    while len(inputs) < 2:
        inputs.append(torch.randn(shape, generator=gen))
    return inputs


class Sensitivity:
    """Measures errors on the exported model; `error(layer_param, pattern)`."""

    def __init__(self, model_path: str, calib: str, input_shape: tuple[int, ...]):
        self.model_path = os.fspath(model_path)
        from nmc.compiler.frontend.loader import _quiet_torch

        with _quiet_torch(), open(self.model_path, "rb") as f:
            self.module = torch.export.load(f).module()
        self.inputs = load_calibration(calib, input_shape)
        digest = hashlib.sha1()
        for x in self.inputs:
            digest.update(x.numpy().tobytes())
        self.key = (_file_key(self.model_path), digest.hexdigest())
        self.params = dict(self.module.named_parameters())
        self.params.update(dict(self.module.named_buffers()))
        self.reference = self._outputs()
        self.ref_norm = float(torch.sqrt(sum((y.double() ** 2).sum() for y in self.reference)))

    def _outputs(self) -> list[torch.Tensor]:
        outs = []
        with torch.no_grad():
            for x in self.inputs:
                y = self.module(x)
                y = y if isinstance(y, (tuple, list)) else [y]
                outs.extend(t.detach().clone() for t in y)
        return outs

    def weight(self, param: str) -> torch.Tensor:
        w = self.params.get(param)
        if w is None:
            raise SparsityError(f"{self.model_path}: no parameter '{param}' to measure the "
                                f"sensitivity of")
        return w

    def error(self, param: str, pattern: Pattern) -> float:
        if pattern is None or pattern[0] == pattern[1]:
            return 0.0
        key = (*self.key, param, pattern)
        hit = _CACHE.get(key)
        if hit is not None:
            return hit
        w = self.weight(param)
        saved = w.detach().clone()
        try:
            with torch.no_grad():
                w.mul_(nm_mask(saved, *pattern).to(saved.dtype))
            outs = self._outputs()
        finally:
            with torch.no_grad():
                w.copy_(saved)
        diff = torch.sqrt(sum(((a.double() - b.double()) ** 2).sum()
                              for a, b in zip(outs, self.reference)))
        err = float(diff) / max(self.ref_norm, 1e-30)
        _CACHE[key] = err
        return err

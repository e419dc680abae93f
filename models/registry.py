"""The built-in models `nmc export` and `nmc demo` know, and how to export them.

A model is a factory of keyword hyper-parameters plus the shape of its example input;
`nmc export NAME --set key=value` overrides any of them.
"""

from __future__ import annotations

import inspect
import io
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

from nmc.isa.errors import NmcError
from nmc.isa.fileio import atomic_write_bytes
from nmc.models.mlp_block import MLPBlock


class ModelError(NmcError):
    """An unknown built-in model or a bad hyper-parameter."""


@dataclass(frozen=True)
class ModelSpec:
    description: str
    factory: Callable[..., torch.nn.Module]
    defaults: dict[str, int]
    # the example input's shape from the hyper-parameters
    input_shape: Callable[[dict[str, int]], tuple[int, ...]]


MODELS: dict[str, ModelSpec] = {
    "mlp_block": ModelSpec(
        "x + fc2(gelu(fc1(layer_norm(x)))): a ViT block's MLP half (DeiT-tiny sizes)",
        MLPBlock,
        {"dim": 192, "hidden": 768, "tokens": 197, "batch": 1},
        lambda p: (p["batch"], p["tokens"], p["dim"]),
    ),
}
DEFAULT_MODEL = "mlp_block"


def parse_overrides(items: list[str]) -> dict[str, int]:
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        try:
            out[key] = int(value)
        except ValueError:
            raise ModelError(f"--set {item}: expected KEY=INTEGER") from None
        if not sep:
            raise ModelError(f"--set {item}: expected KEY=INTEGER")
    return out


def build_model(name: str, overrides: dict[str, int], seed: int = 0):
    """(module in eval mode with seeded random weights, example input)."""
    spec = MODELS.get(name)
    if spec is None:
        raise ModelError(f"unknown model '{name}' (built-in: {', '.join(MODELS)})")
    unknown = set(overrides) - set(spec.defaults)
    if unknown:
        raise ModelError(f"{name} has no parameter {', '.join(sorted(unknown))} "
                         f"(parameters: {', '.join(spec.defaults)})")
    params = {**spec.defaults, **overrides}
    bad = [k for k, v in params.items() if v < 1]
    if bad:
        raise ModelError(f"{name}: {', '.join(bad)} must be positive")
    accepted = inspect.signature(spec.factory).parameters
    torch.manual_seed(seed)
    module = spec.factory(**{k: v for k, v in params.items() if k in accepted}).eval()
    example = torch.randn(spec.input_shape(params), generator=torch.Generator().manual_seed(seed))
    return module, example


def export_to_file(module: torch.nn.Module, example: torch.Tensor, path: str | Path) -> None:
    """torch.export the module on `example` and save it atomically (any file name: .pt
    or .pt2)."""
    program = torch.export.export(module, (example,))
    buf = io.BytesIO()
    torch.export.save(program, buf)
    atomic_write_bytes(path, buf.getvalue())

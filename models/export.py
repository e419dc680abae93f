"""Writing models in the format nmc reads (a torch.export archive)."""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn


def export_model(
    module: nn.Module,
    example_input: torch.Tensor | tuple[torch.Tensor, ...],
    path: str | os.PathLike[str],
) -> Path:
    """`torch.export.export` `module` (in eval mode) on `example_input` and save it to `path`.

    The shapes of the example input(s) become the static shapes of the compiled model. Any
    file name works (`model.pt`, `model.pt2`). Returns the path written.
    """
    args = example_input if isinstance(example_input, tuple) else (example_input,)
    module = module.eval()
    with torch.no_grad():
        ep = torch.export.export(module, args)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # An open file object: torch warns about names not ending in .pt2 otherwise.
    with open(path, "wb") as f:
        torch.export.save(ep, f)
    return path

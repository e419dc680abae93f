"""A model with ops nmc does not support, shared by the API test of the error
(test_frontend_errors.py) and the CLI test of its one line (test_robust_model_files.py).
The lines marked `# SIGMOID` / `# TANH` are where the error must say the ops are."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn


def line_of(marker: str, path: str | Path = __file__) -> int:
    """Line number (1-based) of the line of `path` that ends with `# <marker>`."""
    for i, line in enumerate(Path(path).read_text().splitlines(), 1):
        if line.rstrip().endswith(f"# {marker}"):
            return i
    raise AssertionError(marker)


class _Act(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(x)  # SIGMOID


class SigmoidTanh(nn.Module):
    """sigmoid in the submodule `act`, tanh at the top level: both unsupported."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(8, 8)
        self.act = _Act()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.act(self.fc(x)))  # TANH


def expected_locations() -> list[str]:
    """What the error says of each op, in program order."""
    here = Path(__file__).name
    return [f"torch.aten.sigmoid at act ({here}:{line_of('SIGMOID')})",
            f"torch.aten.tanh at <top level> ({here}:{line_of('TANH')})"]

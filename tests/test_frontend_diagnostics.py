"""Errors that come from torch-mlir or name a source line: one line, the op, file:line.

torch-mlir's own diagnostics (an op it cannot lower, LSTM) are captured, not printed raw,
and reported like every other unsupported op; an op inside a torch module at the top of
the model (a bare nn.Conv3d, a top-level nn.Sequential) is named by the torch module's
source line; a strict export names the line of the op itself, even in a helper method.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from nmc.compiler.driver import import_nm
from nmc.compiler.errors import UnsupportedOpsError
from nmc.models.export import export_model

from robust_helpers import expect_process_error, line_of, run_nmc

HERE = Path(__file__).name


def _line_of(marker: str) -> int:
    return line_of(__file__, marker)


class _Lstm(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lstm = nn.LSTM(8, 8, batch_first=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y, _ = self.lstm(x)  # LSTM
        return y


def _unsupported(path: Path) -> UnsupportedOpsError:
    with pytest.raises(UnsupportedOpsError) as info:
        import_nm(path)
    assert "\n" not in str(info.value)
    return info.value


def test_lstm_is_one_line_naming_the_op_and_its_line(tmp_path: Path) -> None:
    path = export_model(_Lstm().eval(), torch.randn(1, 5, 8), tmp_path / "lstm.pt2")
    err = _unsupported(path)
    assert [op.op_name for op in err.ops] == ["torch.aten.lstm.input"]
    assert str(err).startswith(
        f"unsupported operation(s): torch.aten.lstm.input at lstm ({HERE}:{_line_of('LSTM')}): "
        "torch-mlir cannot import it")
    # as a process: exactly that line on stderr (no raw `loc(...): error:` from MLIR), exit 1
    line = expect_process_error(run_nmc("compile", path, "-o", tmp_path / "p.bin"),
                                "torch.aten.lstm.input at lstm")
    assert "loc(" not in line and "failed with the following" not in line
    assert not (tmp_path / "p.bin").exists()


def test_top_level_conv3d_names_the_torch_line_and_why(tmp_path: Path) -> None:
    path = export_model(nn.Conv3d(3, 4, 2, stride=2).eval(), torch.randn(1, 3, 4, 4, 4),
                        tmp_path / "conv3d.pt2")
    (op,) = _unsupported(path).ops
    assert op.op_name == "torch.aten.convolution"
    assert op.source is not None and op.source.startswith("conv.py:")  # torch's Conv3d
    assert "only 2-D convolutions are supported" in op.describe()


class _Block(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(8, 8)

    def _attn(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.fc(x))  # HELPER

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self._attn(x)  # CALLER


@pytest.mark.parametrize("strict", [True, False])
def test_location_is_the_innermost_line_the_export_recorded(tmp_path: Path, strict) -> None:
    """A strict export records every frame: the op's own line in the helper; the default
    (non-strict) export records `forward` frames only: the line calling the helper."""
    ep = torch.export.export(_Block().eval(), (torch.randn(1, 3, 8),), strict=strict)
    torch.export.save(ep, tmp_path / "m.pt2")
    (op,) = _unsupported(tmp_path / "m.pt2").ops
    assert op.op_name == "torch.aten.sigmoid"
    assert op.source == f"{HERE}:{_line_of('HELPER' if strict else 'CALLER')}"

"""Frontend errors: each user mistake gives an NmcError subclass with a helpful message."""

from __future__ import annotations

import os
import zipfile
from pathlib import Path

import pytest
import torch
from torch import nn

from unsupported_models import SigmoidTanh, expected_locations, line_of

from nmc.compiler.driver import import_nm
from nmc.compiler.errors import FrontendError, UnsupportedOpsError
from nmc.compiler.frontend import load_exported_program, load_weights
from nmc.common.errors import NmcError
from nmc.models.export import export_model
from nmc.models.mlp_block import MLPBlock

HOWTO = "torch.export.save(torch.export.export(model, (example,)), 'model.pt')"


def _line_of(marker: str) -> int:
    """Line number (1-based) of the line of this file that ends with `# <marker>`."""
    return line_of(marker, __file__)


@pytest.fixture(scope="module")
def tmp(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("frontend_errors")


def _error(path: Path | str, cls: type[NmcError] = FrontendError) -> str:
    with pytest.raises(cls) as info:
        import_nm(path)
    assert isinstance(info.value, NmcError)
    message = str(info.value)
    assert "\n" not in message
    return message


# ---------------------------------------------------------------------- file format


def test_missing_file(tmp: Path) -> None:
    path = tmp / "does_not_exist.pt"
    assert _error(path) == f"model file not found: {path}"
    with pytest.raises(FrontendError, match="not found"):
        load_weights(path)
    with pytest.raises(FrontendError, match="not found"):
        load_exported_program(path)


def test_random_bytes(tmp: Path) -> None:
    path = tmp / "random.pt"
    path.write_bytes(os.urandom(4096))
    msg = _error(path)
    assert "not a torch.export archive" in msg and HOWTO in msg


def test_zip_without_export_layout(tmp: Path) -> None:
    path = tmp / "other.pt2"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("archive/readme.txt", "hello")
    msg = _error(path)
    assert "zip file but not a torch.export archive" in msg and HOWTO in msg


def test_directory(tmp: Path) -> None:
    assert "is a directory" in _error(tmp)


def test_pickled_module(tmp: Path) -> None:
    path = tmp / "pickled.pt"
    torch.save(MLPBlock(8, 16), path)
    msg = _error(path)
    assert (
        "this is a pickled nn.Module (torch.save); nmc needs a torch.export file: " + HOWTO
    ) in msg


def test_pickled_module_legacy_format(tmp: Path) -> None:
    path = tmp / "legacy.pt"
    torch.save(MLPBlock(8, 16), path, _use_new_zipfile_serialization=False)
    assert "this is a pickled nn.Module (torch.save)" in _error(path)


def test_state_dict(tmp: Path) -> None:
    path = tmp / "weights.pt"
    torch.save(MLPBlock(8, 16).state_dict(), path)
    msg = _error(path)
    assert "state_dict" in msg and HOWTO in msg


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_torchscript(tmp: Path) -> None:
    path = tmp / "scripted.pt"
    torch.jit.script(MLPBlock(8, 16)).save(str(path))
    msg = _error(path)
    assert "TorchScript" in msg and "torch.jit.save" in msg
    assert HOWTO in msg and "TS2EPConverter" in msg


def test_dynamic_shapes(tmp: Path) -> None:
    path = tmp / "dynamic.pt2"
    ep = torch.export.export(
        MLPBlock(8, 16),
        (torch.randn(4, 3, 8),),
        dynamic_shapes={"x": {0: torch.export.Dim("batch")}},
    )
    torch.export.save(ep, path)
    msg = _error(path)
    assert (
        "nmc needs static shapes; export with concrete example inputs and no dynamic_shapes"
        in msg
    )
    assert "x [" in msg  # names the dynamic input


# -------------------------------------------------------------------- unsupported ops


def test_unsupported_ops_listed_in_one_error(tmp: Path) -> None:
    path = export_model(SigmoidTanh(), torch.randn(1, 4, 8), tmp / "sigmoid_tanh.pt")
    with pytest.raises(UnsupportedOpsError) as info:
        import_nm(path)
    err = info.value
    assert isinstance(err, NmcError)
    msg = str(err)
    assert msg.startswith("unsupported operation(s): ")
    assert all(location in msg for location in expected_locations())
    assert [op.op_name for op in err.ops] == ["torch.aten.sigmoid", "torch.aten.tanh"]
    assert [op.module_path for op in err.ops] == ["act", ""]


class _Unsupported(nn.Module):
    """Known ops in forms nmc cannot take: each gets a reason."""

    def __init__(self) -> None:
        super().__init__()
        self.norm = nn.LayerNorm((4, 8))  # over two dims (without affine is supported)
        self.bias = nn.Parameter(torch.ones(4, 1))  # [1, 4, 8] + [4, 1]: not nm.add's rule

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.norm(x)
        y = y + self.bias  # BROADCAST
        return torch.add(y, x, alpha=2)  # ALPHA


def test_unsupported_forms_have_reasons(tmp: Path) -> None:
    path = export_model(_Unsupported(), torch.randn(1, 4, 8), tmp / "forms.pt")
    msg = _error(path, UnsupportedOpsError)
    here = Path(__file__).name
    assert "torch.aten.layer_norm at norm" in msg
    assert "normalized_shape must be the last dim [8], got [4, 8]" in msg
    assert f"torch.aten.add.Tensor at <top level> ({here}:{_line_of('BROADCAST')})" in msg
    assert "operands [1, 4, 8] and [4, 1]" in msg and "other broadcasts are not supported" in msg
    assert f"({here}:{_line_of('ALPHA')}): alpha must be 1" in msg


class _IntInput(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + x


def test_non_f32_input(tmp: Path) -> None:
    path = export_model(_IntInput(), torch.ones(2, 3, dtype=torch.int64), tmp / "int.pt")
    msg = _error(path, UnsupportedOpsError)
    assert "input 'x'" in msg and "f32" in msg

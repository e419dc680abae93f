"""Which frontend reads a model file: ONNX or torch.export (no heavy imports here)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from nmc.compiler.errors import FrontendError


def is_onnx_file(path: Path) -> bool:
    """An ONNX protobuf: by its name, or by its first byte (field 1, ir_version, a varint)
    when it is neither a zip (torch.export) nor a pickle."""
    if path.suffix.lower() == ".onnx":
        return True
    try:
        with open(path, "rb") as f:
            head = f.read(2)
    except OSError:
        return False
    return head[:1] == b"\x08"


def require_onnx(shown: str) -> None:
    """A clear error when the `onnx` package (an optional dependency) is missing."""
    if importlib.util.find_spec("onnx") is None:
        raise FrontendError(f"{shown} is an ONNX model; reading it needs the onnx package: "
                            f"pip install 'nmc[onnx]' (or pip install onnx==1.23.2)")

"""A model file of either format -> torch-level xDSL module: the frontend's entry point.

torch.export archives go through `importer.import_model`, ONNX files through
`onnx_import.import_onnx_model` (their dynamic dims fixed by `input_shapes` / `batch`,
options that only ONNX models take: a torch.export file has static shapes).
"""

from __future__ import annotations

import os
from pathlib import Path

from xdsl.context import Context
from xdsl.dialects.builtin import ModuleOp

from nmc.compiler.errors import FrontendError
from nmc.compiler.frontend.model_format import is_onnx_file, require_onnx


def import_model_file(path: str | os.PathLike[str], ctx: Context | None = None, *,
                      input_shapes: dict[str, tuple[int, ...]] | None = None,
                      batch: int | None = None) -> ModuleOp:
    shown = os.fspath(path)
    p = Path(path).expanduser()
    if p.is_file() and is_onnx_file(p):
        require_onnx(shown)
        from nmc.compiler.frontend.onnx_import import import_onnx_model

        return import_onnx_model(path, ctx, input_shapes, batch)
    if input_shapes or batch is not None:
        raise FrontendError(f"{shown}: --input-shape and --batch fix the dynamic dims of "
                            f"ONNX models; a torch.export file has its shapes fixed when "
                            f"it is exported")
    from nmc.compiler.frontend.importer import import_model

    return import_model(path, ctx)

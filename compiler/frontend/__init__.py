"""nmc frontend: torch.export file -> torch-mlir -> xDSL (torch dialect) -> nm dialect.

    load_exported_program(path) -> ExportedProgram      (decomposed, checked, cached)
    load_weights(path) -> dict[str, np.ndarray]          (state_dict key -> float32 array)
    import_to_torch_mlir(ep) -> str                      (generic MLIR text, xDSL-parsable)
    import_model(path) -> ModuleOp                       (torch dialect, annotated)
    import_nm(path) -> ModuleOp                          (import_model + raise-torch-to-nm)
"""

from nmc.compiler.errors import FrontendError, UnsupportedOp, UnsupportedOpsError
from nmc.compiler.frontend.importer import (
    PARAM_ARG_ATTR,
    annotate_module,
    import_exported_program,
    import_model,
    import_to_torch_mlir,
    location_info,
    parse_module,
)
from nmc.compiler.frontend.loader import (
    clear_cache,
    load_exported_program,
    load_weights,
    weights_of,
)


def import_nm(path):  # type: ignore[no-untyped-def]
    """Import the model at `path` and raise it to the nm dialect (verified ModuleOp)."""
    from nmc.compiler.dialects.context import make_context
    from nmc.compiler.transforms.raise_torch_to_nm import RaiseTorchToNm

    module = import_model(path)
    RaiseTorchToNm().apply(make_context(), module)
    return module


__all__ = [
    "FrontendError",
    "UnsupportedOp",
    "UnsupportedOpsError",
    "PARAM_ARG_ATTR",
    "annotate_module",
    "clear_cache",
    "import_exported_program",
    "import_model",
    "import_nm",
    "import_to_torch_mlir",
    "load_exported_program",
    "load_weights",
    "location_info",
    "parse_module",
    "weights_of",
]

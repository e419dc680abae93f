"""nmc frontend: torch.export file -> torch-mlir -> xDSL (torch dialect).

    load_exported_program(path) -> ExportedProgram      (decomposed, checked, cached)
    load_weights(path) -> dict[str, np.ndarray]          (state_dict key -> float32 array)
    weights_of_module(module) -> WeightStore             (the weights handed down with a
                                                          module: nmc.compiler.frontend.weights)
    import_to_torch_mlir(ep) -> str                      (generic MLIR text, xDSL-parsable)
    import_model(path) -> ModuleOp                       (torch dialect, annotated)

Names are resolved lazily so that importing `nmc.compiler.frontend.locations` (used by
passes) does not import torch. The frontend imports no pass: raising the torch dialect to
nm is the first pass, raise-torch-to-nm (`nmc.compiler.driver.import_nm` runs both).
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "FrontendError": "nmc.compiler.errors",
    "UnsupportedOp": "nmc.compiler.errors",
    "UnsupportedOpsError": "nmc.compiler.errors",
    "annotate_module": "nmc.compiler.frontend.importer",
    "import_exported_program": "nmc.compiler.frontend.importer",
    "import_model": "nmc.compiler.frontend.importer",
    "import_to_torch_mlir": "nmc.compiler.frontend.importer",
    "output_names": "nmc.compiler.frontend.importer",
    "parse_module": "nmc.compiler.frontend.importer",
    "clear_cache": "nmc.compiler.frontend.loader",
    "load_exported_program": "nmc.compiler.frontend.loader",
    "load_weights": "nmc.compiler.frontend.loader",
    "WeightStore": "nmc.compiler.frontend.weights",
    "attach_weights": "nmc.compiler.frontend.weights",
    "weights_of_module": "nmc.compiler.frontend.weights",
    "weights_of": "nmc.compiler.frontend.loader",
    "location_info": "nmc.compiler.frontend.locations",
}


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


__all__ = list(_EXPORTS)

"""Reading back the locations the frontend gives ops (no torch import here).

The importer sets each op's location to `callsite("<module path>":0:0 at "<file>":<line>:0)`,
or `"<file>":<line>:0` for ops at the top level of the model. A `FileLineColLoc` with line 0
is a module path (source lines start at 1). The ONNX frontend gives each op
`loc("ONNX <Op> node '<name>'"("<module path>":0:0))`: a `NameLoc` naming the node, where
a torch.export op has its source line.
"""

from __future__ import annotations

import os

from xdsl.dialects.builtin import CallSiteLoc, FileLineColLoc, FusedLoc, NameLoc
from xdsl.ir import Attribute


def location_info(loc: Attribute | None) -> tuple[str, str | None]:
    """(module path, "file.py:line" or None) from an op location built by the importer.

    `callsite("blocks.0.fc1":0:0 at "/x/model.py":12:0)` -> ("blocks.0.fc1", "model.py:12");
    `"/x/model.py":12:0` -> ("", "model.py:12");
    `"ONNX MatMul node 'mm1'"("blocks.0.fc1":0:0)` -> ("blocks.0.fc1", "ONNX MatMul node
    'mm1'"); unknown -> ("", None).
    """
    path = ""
    source: str | None = None

    def visit(l: Attribute | None) -> None:
        nonlocal path, source
        if isinstance(l, CallSiteLoc):
            visit(l.callee)
            visit(l.caller)
        elif isinstance(l, FileLineColLoc):
            if l.line.data == 0:
                if not path:
                    path = l.filename.data
            elif source is None:
                source = f"{os.path.basename(l.filename.data)}:{l.line.data}"
        elif isinstance(l, NameLoc):  # the ONNX frontend's: it names the node
            if source is None:
                source = l.desc.data
            visit(l.location)
        elif isinstance(l, FusedLoc):
            for sub in l.locations.data:  # type: ignore[attr-defined]
                visit(sub)

    visit(loc)
    return path, source

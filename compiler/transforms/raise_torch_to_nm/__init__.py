"""raise-torch-to-nm: the imported torch-dialect module -> the nm dialect.

What torch.export + `run_decompositions({})` + the torch-mlir import make of a timm / nmc
ViT is raised by pattern families, one module each under `matchers/` (their docstrings
show each pattern): one-to-one ops (linear, layer_norm, gelu, add), the patch embedding,
attention (core, head split, head merge), class-token select, concat, the class token's
expand, global average pooling; then chains of row movement (`movement.py`) become
nm.permute_rows / nm.reshape, and no-ops (`noops.py`) disappear.

    reading.py     reading torch IR: shapes, constants, dims; `Reject` with a reason
    framework.py   `Group` (the torch ops one nm op replaces) and `Matcher` (a family)
    matchers/      the pattern families, in priority order in `matchers.MATCHERS`
    noops.py       value-semantics no-ops (same-shape reshape, clone, ...)
    movement.py    row-movement composition (`movement_rows`)
    arguments.py   parameters -> nm.param ops, user inputs -> tensor arguments
    plan.py        the plan of a function: every op claimed once, or reported
    naming.py      layer names from module paths (`assign_layer_names`)
    rewrite.py     the rewrite of a planned function (an xDSL RewritePattern)
    raise_pass.py  the pass, `RaiseTorchToNm`

Every other op, and any op of a pattern that does not match in full (the anchor of a
partial match, e.g. the sdpa or the conv2d, carries the reason), is reported as
unsupported: everything that cannot be raised is collected first and reported in a single
`UnsupportedOpsError` listing each op with its module path and source line. A model that
is wrong for nmc (an image size the patch does not divide) is a `FrontendError`.

`!torch.vtensor<[...],f32>` becomes `tensor<...xf32>`; torch constants and lists are
removed once unused. Every compute op gets a unique `layer` name from the module path of
the ops it came from (for a pattern, the common prefix of their paths: `blocks.0.attn`,
`patch_embed`). After the pass the module holds only builtin, func and nm ops, and
verifies.
"""

from nmc.compiler.transforms.raise_torch_to_nm.movement import movement_rows
from nmc.compiler.transforms.raise_torch_to_nm.naming import assign_layer_names
from nmc.compiler.transforms.raise_torch_to_nm.plan import collect_unsupported
from nmc.compiler.transforms.raise_torch_to_nm.raise_pass import RaiseTorchToNm
from nmc.compiler.transforms.raise_torch_to_nm.reading import convert_type

__all__ = [
    "RaiseTorchToNm",
    "assign_layer_names",
    "collect_unsupported",
    "convert_type",
    "movement_rows",
]

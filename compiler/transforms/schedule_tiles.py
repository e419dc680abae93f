"""schedule-tiles: choose the tile sizes of every nm compute op.

For each op, the kernel's candidate tilings (multiples of the PE array / lane granule, in
powers of two, plus the whole extent) are emitted with dummy addresses and ranked by the
timing model (`nmc.runtime.timing` through `estimate_cycles`); tilings whose double-buffered
working set does not fit SPAD/ACC are skipped. The choice is written on the op as
`nm.tile = #nm.tile<m = 64, ...>` (nm_attrs.TilingAttr) so it shows in IR dumps and `nmc opt` can start from it.

An empty tensor (a dimension of 0, e.g. a model exported with zero tokens) has no tiling:
it is refused first, naming the input or the layer it reaches.
"""

from __future__ import annotations

from dataclasses import dataclass

from xdsl.context import Context
from xdsl.dialects.builtin import ModuleOp, TensorType
from xdsl.dialects.func import FuncOp

from nmc.compiler.dialects.nm_attrs import input_names, set_tiling
from nmc.compiler.kernels.common import TileError
from nmc.compiler.kernels.registry import KERNELS
from nmc.compiler.sparsity.target_check import check_linear_patterns
from nmc.compiler.transforms.target_option import TargetedPass


@dataclass(frozen=True)
class ScheduleTiles(TargetedPass):
    name = "schedule-tiles"

    def apply(self, ctx: Context, op: ModuleOp) -> None:
        target = self.target_for(op)
        check_not_empty(op)
        check_linear_patterns(op, target)  # refused before a tiling is costed for it
        for inner in op.walk():
            kernel = KERNELS.get(inner.name)
            if kernel is not None:
                set_tiling(inner, kernel.choose(kernel.problem(inner), target, inner.layer_name))


def check_not_empty(module: ModuleOp) -> None:
    """TileError for the first empty tensor: an input of @main, else a compute op's operand
    or result (a kernel would divide by its zero extent)."""
    for func in (o for o in module.walk() if isinstance(o, FuncOp)):
        try:
            names = input_names(func)
        except ValueError:  # IR written by hand, without the names
            names = []
        for i, arg in enumerate(func.body.block.args):
            if _empty(arg.type):
                name = names[i] if i < len(names) else f"#{i}"
                raise TileError(f"input '{name}' has shape {list(arg.type.get_shape())}: an "
                                "empty tensor (a dimension of 0); nmc compiles tensors with at "
                                "least one element: export the model with a non-empty input")
    for inner in module.walk():
        if inner.name in KERNELS:
            for value in (*inner.operands, *inner.results):
                if _empty(value.type):
                    raise TileError(f"layer '{inner.layer_name}': tensor of shape "
                                    f"{list(value.type.get_shape())} is empty (a dimension "
                                    "of 0); nmc compiles tensors with at least one element")


def _empty(typ) -> bool:
    return isinstance(typ, TensorType) and 0 in typ.get_shape()

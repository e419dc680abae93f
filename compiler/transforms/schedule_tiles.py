"""schedule-tiles: choose the tile sizes of every nm compute op.

For each op, the kernel's candidate tilings (multiples of the PE array / lane granule, in
powers of two, plus the whole extent) are emitted with dummy addresses and ranked by the
timing model (`nmc.runtime.timing` through `estimate_cycles`); tilings whose double-buffered
working set does not fit SPAD/ACC are skipped. The choice is written on the op as
`nm.tile = #nm.tile<m = 64, ...>` (nm_attrs.TilingAttr) so it shows in IR dumps and `nmc opt` can start from it.
"""

from __future__ import annotations

from dataclasses import dataclass

from xdsl.context import Context
from xdsl.dialects.builtin import ModuleOp
from xdsl.passes import ModulePass

from nmc.compiler.dialects.nm_attrs import set_tiling
from nmc.compiler.kernels.registry import KERNELS
from nmc.compiler.sparsity.target_check import check_linear_patterns
from nmc.compiler.transforms.target_option import resolve_target


@dataclass(frozen=True)
class ScheduleTiles(ModulePass):
    name = "schedule-tiles"

    target: str = ""  # "": the module's target (nm.target), else DEFAULT_TARGET

    def apply(self, ctx: Context, op: ModuleOp) -> None:
        target = resolve_target(op, self.target, self.name)
        check_linear_patterns(op, target)  # refused before a tiling is costed for it
        for inner in op.walk():
            kernel = KERNELS.get(inner.name)
            if kernel is not None:
                set_tiling(inner, kernel.choose(kernel.problem(inner), target, inner.layer_name))

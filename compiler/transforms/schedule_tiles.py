"""schedule-tiles: choose the tile sizes of every nm compute op.

For each op, the kernel's candidate tilings (multiples of the PE array / lane granule, in
powers of two, plus the whole extent) are emitted with dummy addresses and ranked by the
timing model (`nmc.runtime.timing` through `estimate_cycles`); tilings whose double-buffered
working set does not fit SPAD/ACC are skipped. The choice is written on the op as
`nm.tile = {m = 64 : i64, ...}` so it shows in IR dumps and `nmc opt` can start from it.
"""

from __future__ import annotations

from dataclasses import dataclass

from xdsl.context import Context
from xdsl.dialects.builtin import DictionaryAttr, IntegerAttr, ModuleOp, StringAttr, i64
from xdsl.passes import ModulePass

from nmc.compiler.kernels.registry import KERNELS
from nmc.compiler.transforms.target_option import DEFAULT_TARGET, TARGET_ATTR, cached_target

TILE_ATTR = "nm.tile"


def tiling_of(op) -> dict[str, int]:
    attr = op.attributes.get(TILE_ATTR)
    if attr is None:
        raise ValueError(f"{op.name} has no {TILE_ATTR}: run schedule-tiles first")
    return {k: v.value.data for k, v in attr.data.items()}


@dataclass(frozen=True)
class ScheduleTiles(ModulePass):
    name = "schedule-tiles"

    target: str = DEFAULT_TARGET

    def apply(self, ctx: Context, op: ModuleOp) -> None:
        target = cached_target(self.target)
        op.attributes[TARGET_ATTR] = StringAttr(self.target)
        for inner in op.walk():
            kernel = KERNELS.get(inner.name)
            if kernel is None:
                continue
            tiling = kernel.choose(inner, target)
            inner.attributes[TILE_ATTR] = DictionaryAttr(
                {k: IntegerAttr(v, i64) for k, v in tiling.items()})

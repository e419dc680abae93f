"""Which layer, and which of its units, each cycle of a run belongs to.

On a pipelined machine layers overlap in time (the next layer's loads start while this
layer's matmuls finish), so "first start .. last end" spans add up to more than the run.
For per-layer cycles that add up exactly to the total, every cycle of [0, total) gets one
owner:

- the layer: the layer of the active instruction that started latest (ties: the higher
  pc), i.e. the work the pipeline has most recently moved on to; cycles in which no
  instruction runs, or whose owner is in no layer, are "(idle / other)";
- the unit within that layer: the first of matrix, vector, load, store that runs an
  instruction of the owning layer in that cycle. Compute comes first, so a layer's load
  and store cycles are the DMA time that no computation of the layer hides ("exposed").

Each unit runs one instruction at a time, so at any cycle at most one instruction per unit
is active; the timeline is cut at every start and end into segments that have one set of
active instructions each.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from nmc.runtime.emulator import UNIT_NAMES

UNIT_PRIORITY: tuple[str, ...] = ("matrix", "vector", "load", "store")
NO_LAYER = -1  # an active instruction outside every debug range, or no instruction at all

ATTRIBUTION_RULE = (
    "cycles: every cycle of the run belongs to the layer of the active instruction that "
    "started latest (ties: higher pc), so the layers' cycles add up to the total; within a "
    "layer, to the first of matrix, vector, load, store busy with that layer (load/store "
    "cycles = DMA time no computation of the layer hides)"
)


@dataclass(frozen=True)
class Attribution:
    """Cycles per (layer index into program.debug, or NO_LAYER) and unit name; `runs` are
    the maximal time intervals (start, end, layer index) of one owning layer, idle time
    included as NO_LAYER."""

    cycles: dict[int, dict[str, int]]
    runs: list[tuple[int, int, int]]
    total: int

    def layer_cycles(self, index: int) -> int:
        return sum(self.cycles.get(index, {}).values())


def layer_of_pc(debug: Sequence[Any], count: int) -> np.ndarray:
    """pc -> index of its debug range (NO_LAYER outside every range), for pcs < count."""
    out = np.full(count, NO_LAYER, dtype=np.int64)
    for i, r in enumerate(debug):
        out[max(0, r.start_pc):min(r.end_pc, count)] = i
    return out


def attribute_cycles(trace: Sequence[tuple[int, str, int, int]], layers: np.ndarray,
                     total: int) -> Attribution:
    """Attribute [0, total) from a run's trace ((pc, unit, start, end) per instruction) and
    `layers` (pc -> layer index, see `layer_of_pc`)."""
    if not trace or total <= 0:
        idle = {NO_LAYER: {"idle": total}} if total > 0 else {}
        return Attribution(idle, [(0, total, NO_LAYER)] if total > 0 else [], total)
    pcs = np.fromiter((t[0] for t in trace), np.int64, len(trace))
    unit_index = {u: i for i, u in enumerate(UNIT_NAMES)}
    units = np.fromiter((unit_index[t[1]] for t in trace), np.int64, len(trace))
    starts = np.fromiter((t[2] for t in trace), np.int64, len(trace))
    ends = np.fromiter((t[3] for t in trace), np.int64, len(trace))

    times = np.unique(np.concatenate(([0, total], starts, ends)))
    seg_len = np.diff(times)
    n_seg = len(seg_len)
    first = np.searchsorted(times, starts)
    count = np.searchsorted(times, ends) - first  # segments each instruction covers

    # active[u, s]: the position in `trace` of the instruction unit u runs in segment s
    active = np.full((len(UNIT_NAMES), n_seg), -1, dtype=np.int64)
    rows = np.repeat(np.arange(len(trace)), count)
    seg = np.repeat(first, count) + (np.arange(count.sum()) - np.repeat(np.cumsum(count) - count, count))
    active[units[rows], seg] = rows

    on = active >= 0
    # the latest start wins, then the higher pc: one integer key per active instruction
    key = np.where(on, starts[active] * (int(pcs.max()) + 1) + pcs[active], -1)
    owner_unit = key.argmax(axis=0)
    owner = active[owner_unit, np.arange(n_seg)]
    busy = owner >= 0
    owner_layer = np.where(busy, layers[pcs[owner]], NO_LAYER)

    # the unit a segment is charged to: the first in UNIT_PRIORITY running the owner's layer
    unit_layer = np.where(on, layers[pcs[active]], NO_LAYER - 1)
    charged = np.full(n_seg, -1, dtype=np.int64)
    for name in reversed(UNIT_PRIORITY):
        u = unit_index[name]
        charged = np.where(on[u] & (unit_layer[u] == owner_layer), u, charged)

    cycles: dict[int, dict[str, int]] = {}
    names = (*UNIT_NAMES, "idle")
    bucket = np.where(busy, charged, len(UNIT_NAMES))
    for layer in np.unique(owner_layer):
        sel = owner_layer == layer
        per = np.bincount(bucket[sel], weights=seg_len[sel], minlength=len(names))
        cycles[int(layer)] = {n: int(c) for n, c in zip(names, per) if c}
    return Attribution(cycles, _runs(times, owner_layer), total)


def _runs(times: np.ndarray, owner_layer: np.ndarray) -> list[tuple[int, int, int]]:
    """Maximal intervals of one owning layer."""
    change = np.flatnonzero(np.diff(owner_layer)) + 1
    bounds = np.concatenate(([0], change, [len(owner_layer)]))
    return [(int(times[a]), int(times[b]), int(owner_layer[a]))
            for a, b in zip(bounds[:-1], bounds[1:])]

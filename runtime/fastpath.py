"""The emulator's fast path: a whole program decoded at once into arrays, its timing computed
from the token graph, its races found with array operations, then one call per instruction.

`nmc.runtime.emulator` defines what a run means (an event-driven simulation, instruction
by instruction). This module computes the same run faster for the programs the compiler
makes, and says "not me" (returns None) for everything else, which the reference path
then runs, reporting errors with its messages:

- Decoding: instructions are grouped by opcode and their fields gathered into integer
  arrays; the static checks (token masks, operand fields, footprints against the memory
  sizes), the cycle counts (`timing.cycles_of`), the MACs and the DRAM traffic are computed
  per group, by the same per-instruction formulas as the reference path (the ISA table's
  and the timing model's, written to work on arrays). Any failed check -> None.
- Timing: tokens of queue V->U are pushed in V's program order and popped in U's, so the
  k-th pop of U matches the k-th push of V, whatever the timing: the token graph is static.
  An instruction starts at max(end of the previous one on its unit, end of the producers of
  the tokens it pops), the event simulation's rule, evaluated in program order when every
  producer comes before its consumer (what insert-tokens emits). A missing token (a
  deadlock), a producer after its consumer, or a zero-cycle instruction -> None.
- Order: with every instruction taking at least one cycle, the event simulation runs
  instructions exactly in (start, pc) order (a startable head with a smaller start always
  exists before a later one), so that order is a sort.
- Races: each instruction can only overlap, on another unit, the instruction that unit
  started last before it (units are in order): found with one `searchsorted` per unit, the
  pairs that overlap in time are checked for a shared word on the bounding ranges of their
  footprints with array comparisons, and the few hits are confirmed or dismissed (strided
  DMA rows may interleave) by the reference check (`Region.overlaps`, the one overlap test
  of nmc.isa.footprint), which raises its error for the first.
- Execution: `semantics.prepare` resolved every operand to a numpy view when decoding, so
  running an instruction is one call.
"""

from __future__ import annotations

from operator import itemgetter
from typing import Any

import numpy as np

from nmc.isa.footprint import Region
from nmc.isa.table import QUEUE_UNITS, Instr, Mem, OpSpec
from nmc.isa.target import Target
from nmc.runtime.semantics import (
    FN_ENUMS, ONCHIP_FIELDS, VALUE_CHECKED, datapath_error, operand_error, prepare,
)
from nmc.runtime.timing import cycles_of, token_schedule

NUM_UNITS = len(QUEUE_UNITS)

# A region in array form: (mem, start, end) of one footprint slot of every instruction of a
# group; mem < 0 where the slot is empty.
Slot = tuple[np.ndarray, np.ndarray, np.ndarray]

_ON_CHIP = (int(Mem.SPAD), int(Mem.ACC))


def per_instruction(value, count: int) -> np.ndarray:
    """A fact of a group of `count` instructions as one int per instruction (a formula
    gives a plain int where it does not depend on the fields)."""
    return np.broadcast_to(np.asarray(value, np.int64), (count,))


def footprint_slots(spec: OpSpec, fields: dict[str, np.ndarray]
                    ) -> tuple[list[Slot], list[Slot]]:
    """The bounding ranges of the footprint regions of every instruction of one opcode (the
    table's footprint evaluated on the field arrays), as slot arrays (empty slots and
    regions without words have mem -1)."""
    reads, writes = spec.footprint(fields)
    g = len(fields["wait"])

    def slot(region: Region) -> Slot:
        mem, start, length, words = (per_instruction(x, g) for x in (
            region.mem, region.start, region.length, region.words))
        return np.where(words > 0, mem, -1), start, start + length

    return [slot(r) for r in reads], [slot(r) for r in writes]


class Plan:
    """A decoded program: per instruction (index = pc) its unit, masks, cycles, footprint
    slots (mem, start, end arrays), MACs, DRAM traffic and prepared thunk."""

    def __init__(self, n: int):
        self.n = n
        self.unit = np.zeros(n, np.int64)
        self.wait = np.zeros(n, np.int64)
        self.signal = np.zeros(n, np.int64)
        self.cycles = np.zeros(n, np.int64)
        self.macs = np.zeros(n, np.int64)
        self.dram_read = 0
        self.dram_written = 0
        self.reads: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
        self.writes: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
        self.thunks: list = [None] * n


def _empty_slots(n: int, count: int):
    return [(np.full(n, -1, np.int64), np.zeros(n, np.int64), np.zeros(n, np.int64))
            for _ in range(count)]


def decode(instructions: list[Instr], target: Target, sizes: tuple[int, ...],
           max_instructions: int | None, mems) -> Plan | None:
    """Decode and check every instruction before the first halt; None if anything is
    unusual (the reference path then reports it)."""
    n = None
    groups: dict[str, list[int]] = {}
    for pc, instr in enumerate(instructions):
        mnemonic = instr.spec.mnemonic
        if mnemonic == "halt":
            n = pc
            break
        group = groups.get(mnemonic)
        if group is None:
            group = groups[mnemonic] = []
        group.append(pc)
    if n is None or (max_instructions is not None and n > max_instructions):
        return None
    halt = instructions[n]
    if halt.fields["wait"] or halt.fields["signal"]:
        return None
    instrs = instructions[:n]

    plan = Plan(n)
    size_arr = np.array(sizes, np.int64)
    slot_parts: list[tuple[np.ndarray, list, list]] = []
    for mnemonic, pcs in groups.items():
        spec = instrs[pcs[0]].spec
        unit = int(spec.unit)
        if unit >= NUM_UNITS:
            return None
        names = [f.name for f in spec.all_fields]
        get = itemgetter(*names)
        rows = [get(instrs[pc].fields) for pc in pcs]
        table = np.array(rows, dtype=np.int64).reshape(len(pcs), len(names))
        f = {name: table[:, i] for i, name in enumerate(names)}
        idx = np.asarray(pcs, np.int64)
        if mnemonic in VALUE_CHECKED and any(operand_error(instrs[pc]) for pc in pcs):
            return None  # the reference path reports the bad value
        if datapath_error(mnemonic, target):
            return None
        # token masks may not name the instruction's own unit
        if np.any(((f["wait"] | f["signal"]) >> unit) & 1):
            return None
        for name in ONCHIP_FIELDS.get(mnemonic, ()):
            if not np.all(np.isin(f[name], _ON_CHIP)):
                return None
        enum = FN_ENUMS.get(mnemonic)
        if enum is not None and not np.all(np.isin(f["fn"], [int(e) for e in enum])):
            return None
        reads, writes = footprint_slots(spec, f)
        for mem, start, end in reads + writes:
            live = mem >= 0
            if np.any(live & ((start < 0) | (end > size_arr[np.where(live, mem, 0)]))):
                return None
        plan.unit[idx] = unit
        plan.wait[idx] = f["wait"]
        plan.signal[idx] = f["signal"]
        plan.cycles[idx] = cycles_of(spec, f, target)
        plan.macs[idx] = spec.macs(f)
        read, written = spec.dram_traffic(f)
        plan.dram_read += int(per_instruction(read, len(pcs)).sum())
        plan.dram_written += int(per_instruction(written, len(pcs)).sum())
        slot_parts.append((idx, reads, writes))

    for side in ("reads", "writes"):
        width = max((len(part[1 if side == "reads" else 2]) for part in slot_parts), default=0)
        slots = _empty_slots(n, width)
        for idx, reads, writes in slot_parts:
            for s, (mem, start, end) in enumerate(reads if side == "reads" else writes):
                slots[s][0][idx] = mem
                slots[s][1][idx] = start
                slots[s][2][idx] = end
        setattr(plan, side, slots)

    thunks = plan.thunks
    shared: dict[tuple, Any] = {}
    for mnemonic, pcs in groups.items():
        if mnemonic in _DMA:
            for pc in pcs:
                thunks[pc] = prepare(mnemonic, mems, instrs[pc].fields)
            continue
        # on-chip operands come from a few ring buffers: the same instruction (but for its
        # tokens) recurs, and so can its prepared call
        get = itemgetter(*[f.name for f in instrs[pcs[0]].spec.fields], "wait")
        for pc in pcs:
            fields = instrs[pc].fields
            key = (mnemonic, *get(fields)[:-1])  # ("wait" only makes it a tuple)
            thunk = shared.get(key, shared)
            if thunk is shared:
                thunk = shared[key] = prepare(mnemonic, mems, fields)
            thunks[pc] = thunk
    return plan


_DMA = ("load", "store")


def schedule(plan: Plan):
    """(starts, ends, stall per unit, leftover tokens {(src, dst): count}) from the static
    token graph (`timing.token_schedule`), or None when it cannot be evaluated in program
    order or an instruction takes no cycle (see the module docstring)."""
    if plan.n and int(plan.cycles.min()) <= 0:
        return None
    return token_schedule(plan.unit.tolist(), plan.wait.tolist(), plan.signal.tolist(),
                          plan.cycles.tolist())


def race_candidates(plan: Plan, starts: np.ndarray, ends: np.ndarray,
                    order_rank: np.ndarray) -> list[tuple[int, int]]:
    """(later, earlier) pc pairs on different units that overlap in time and whose
    footprints' bounding ranges share a word with at least one side writing, sorted the
    way the event simulation meets them (by the later one's position, then the earlier
    one's unit)."""
    n = plan.n
    if n == 0:
        return []
    key = order_rank  # position in execution order
    later_all, earlier_all = [], []
    for o in range(NUM_UNITS):
        on_o = np.flatnonzero(plan.unit == o)
        if len(on_o) == 0:
            continue
        keys_o = key[on_o]  # increasing: a unit runs in order
        pos = np.searchsorted(keys_o, key, side="left") - 1
        ok = (pos >= 0) & (plan.unit != o)
        i = np.flatnonzero(ok)
        j = on_o[pos[ok]]
        overlap = (ends[j] > starts[i]) & (ends[i] > starts[j])
        later_all.append(i[overlap])
        earlier_all.append(j[overlap])
    if not later_all:
        return []
    i = np.concatenate(later_all)
    j = np.concatenate(earlier_all)
    if len(i) == 0:
        return []

    def hits(a_slots, b_slots, ia, ib):
        hit = np.zeros(len(ia), bool)
        for am, as_, ae in a_slots:
            m1, s1, e1 = am[ia], as_[ia], ae[ia]
            for bm, bs, be in b_slots:
                m2, s2, e2 = bm[ib], bs[ib], be[ib]
                hit |= (m1 >= 0) & (m1 == m2) & (s1 < e2) & (s2 < e1)
        return hit

    flagged = (hits(plan.writes, plan.reads, i, j) | hits(plan.writes, plan.writes, i, j)
               | hits(plan.reads, plan.writes, i, j))
    i, j = i[flagged], j[flagged]
    order = np.lexsort((plan.unit[j], key[i]))
    return list(zip(i[order].tolist(), j[order].tolist()))

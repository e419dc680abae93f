"""Dependency tokens derived from the instructions' memory footprints (`assign_tokens`).

The compiler's insert-tokens pass sets them on a whole program, and the kernels' cycle
simulation (`kernels.common.simulate_cycles`) on one kernel's instructions; both need only
the ISA layer, so the analysis lives here, beside it.

The units run their queues in order, so an instruction only needs a token for a hazard
with another unit: read-after-write, write-after-read or write-after-write on overlapping
words (`Instr.footprint`, from the ISA table; `hazard`, the overlap test the emulator's race
check uses too). For each instruction and each other unit we find the latest conflicting
instruction of that unit and wait for it; waiting for it implies everything before it on
that unit has finished.

Footprints are widened to their bounding ranges first (`bounding`), which is conservative:
it may order accesses that the race check (exact footprints) accepts unordered, never the
reverse. On the exact footprints some conflicts vanish (strided rows that interleave), the
vector clocks then know less, and other tokens are needed: the attention kernels' programs
would change (docs/ARCHITECTURE.md, "One source of truth", has the numbers).

Tokens match FIFO per (producer, consumer) queue, so the producers a unit waits for must be
strictly increasing in their own queue. We track, per unit, a vector clock of what it
already knows to be finished (its own earlier waits, and transitively what the producers
it waited for knew), and only wait for a conflict newer than that. Each producer then
signals a given consumer at most once, in order, and the n-th signal meets the n-th wait.
This also bounds the backward search: only instructions newer than the clock are scanned.
"""

from __future__ import annotations

from dataclasses import dataclass

from nmc.isa.footprint import bounding, hazard
from nmc.isa.table import QUEUE_UNITS, Instr, Unit

UNIT_BIT = {unit: 1 << i for i, unit in enumerate(QUEUE_UNITS)}


@dataclass
class _Issued:
    pc: int
    footprint: tuple
    clock: dict[Unit, int]  # per unit: highest queue position known finished when it starts


def assign_tokens(instrs: list[Instr]) -> list[Instr]:
    """Return `instrs` with `wait` and `signal` set from the hazards between units.
    Tokens already present are discarded and recomputed."""
    history: dict[Unit, list[_Issued]] = {u: [] for u in QUEUE_UNITS}
    known: dict[Unit, dict[Unit, int]] = {u: {v: -1 for v in QUEUE_UNITS} for u in QUEUE_UNITS}
    wait = [0] * len(instrs)
    signal = [0] * len(instrs)

    for pc, instr in enumerate(instrs):
        unit = instr.unit
        if unit not in history:  # halt: ends the stream, touches nothing
            continue
        footprint = bounding(instr.footprint())
        clock = dict(known[unit])
        conflicts = []  # (producer, queue position) of the latest conflict on each unit
        for producer in QUEUE_UNITS:
            if producer == unit:
                continue
            queue = history[producer]
            for pos in range(len(queue) - 1, clock[producer], -1):
                if hazard(queue[pos].footprint, footprint):
                    conflicts.append((producer, pos))
                    break
        # Latest first: waiting for a recent instruction may imply an older conflict is done.
        for producer, pos in sorted(conflicts, key=lambda c: -history[c[0]][c[1]].pc):
            if pos <= clock[producer]:
                continue
            issued = history[producer][pos]
            wait[pc] |= UNIT_BIT[producer]
            signal[issued.pc] |= UNIT_BIT[unit]
            for u in QUEUE_UNITS:
                clock[u] = max(clock[u], issued.clock[u])
            clock[producer] = pos
        clock[unit] = len(history[unit]) - 1  # in order: all earlier ones on this unit
        history[unit].append(_Issued(pc, footprint, clock))
        known[unit] = clock

    return [
        i.with_fields(wait=wait[pc], signal=signal[pc]) if i.unit in history else i
        for pc, i in enumerate(instrs)
    ]

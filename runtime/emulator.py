"""The emulator: runs a `Program` on a `Target`, functionally and with the timing model.

    result = run_program(program, {"x": x}, target)
    result.outputs["y"], result.total_cycles, format_report(result, program)

How a run proceeds:

1. The program must be built for this target (same name and id) and fit its DRAM.
2. Inputs are checked against the program's input symbols (see the input policy below),
   then constants and inputs are written to DRAM. Other memory starts as `fill` (0.0).
3. Every instruction before the first `halt` is validated statically: token masks (no bit
   for the instruction's own unit), operand fields (vector and DMA operands on chip,
   defined function numbers), and its footprint (`Instr.footprint()`) against the memory
   sizes. A program without `halt` is rejected.
4. The instructions are dispatched, in program order, into the queues of the four units
   (`QUEUE_UNITS`), and an event-driven simulation runs them. Each unit executes its queue
   in order, one instruction at a time. An instruction on unit U with wait bit V needs a
   token in queue V->U and pops it; it starts at max(U's free time, arrival time of every
   token it pops) and takes `instruction_cycles(instr, target)` cycles
   (`nmc.runtime.timing`, the single source of cycle counts); when it ends it pushes one
   token, stamped with its end time, to U->V for every signal bit V. The next instruction
   to run is always the startable one with the smallest start time (ties: lowest pc), and
   its functional semantics are executed at that point, all of it at once. So a hazard
   that no token protects shows up either as a wrong result (the consumer ran entirely
   before the producer) or, when the two run at overlapping times on different units and
   touch a common word (one of them writing; exact footprints, strided rows included:
   `nmc.isa.footprint`), as an "unordered access" error naming both instructions
   (`check_races=True`, the default).
5. If no unit can start while some queue is not empty, the program is deadlocked: the
   error lists every blocked unit with its pc, instruction and the tokens it waits for.
   Tokens left over at the end are fine; they are counted in `RunResult.leftover_tokens`.
6. Outputs are read from DRAM through the output symbols.

Steps 3-5 are the definition. Programs as the compiler makes them (every token produced
before it is consumed, every instruction at least one cycle) take `nmc.runtime.fastpath`
instead, which computes the same run (same outputs, times, statistics and errors; the tests
compare both on compiled models and on random programs) with array operations and one
prepared call per instruction, the tiles `nmc.runtime.fusion` proves equivalent to one
GEMM run as one (`fuse=False`: every tile on its own); `fast=False` forces the reference
simulation. While the instructions run, the garbage collector is paused and torch
(matmul, GELU) uses one thread.

Input policy: each input must be an array (anything `np.asarray` accepts) with exactly the
symbol's shape. float32 is used as is; other floating-point dtypes (float16, float64, ...)
are converted to float32 with round-to-nearest, as torch's `.float()` does; integer,
boolean, complex and object arrays are rejected. NaN and Inf are allowed and propagate as
they would in PyTorch. Missing or unexpected input names are errors.
"""

from __future__ import annotations

import gc
from collections import deque
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np

from nmc.isa.footprint import first_overlap
from nmc.isa.table import QUEUE_UNITS, Instr, Mem, Unit
from nmc.isa.target import Target
from nmc.runtime import fastpath, fusion
from nmc.runtime.batch import BatchMachine, BatchPreparer
from nmc.runtime.errors import EmulatorError, at_pc
from nmc.runtime.machine import Machine
from nmc.runtime.semantics import SEMANTICS, DataError, datapath_error, operand_error
from nmc.common.threads import torch_threads
from nmc.runtime.timing import WORD_BYTES, instruction_cycles

__all__ = ["EmulatorError", "LayerStats", "LoadedProgram", "RunResult", "run_program",
           "UNIT_NAMES"]

NUM_UNITS = len(QUEUE_UNITS)
UNIT_NAMES: tuple[str, ...] = tuple(u.name.lower() for u in QUEUE_UNITS)
assert tuple(QUEUE_UNITS) == tuple(Unit(i) for i in range(NUM_UNITS))


@dataclass(frozen=True)
class LayerStats:
    """Where the instructions of one debug range (a layer) spent their time."""

    name: str
    kind: str
    start_pc: int
    end_pc: int  # exclusive
    instructions: int
    busy: dict[str, int]  # unit name -> cycles its instructions of this layer took
    start: int  # cycle the layer's first instruction started (0 if it has none)
    end: int  # cycle the layer's last instruction ended
    macs: int = 0  # sum of m*k*n over the layer's matmuls
    mx_peak: int = 0  # MACs the matrix unit can do per cycle (mx_rows * mx_cols)

    @property
    def span(self) -> int:
        return self.end - self.start

    @property
    def matrix_utilization(self) -> float:
        """Useful MACs over what the matrix unit could have done during the layer's span:
        how well the layer keeps the matrix unit fed (0 for layers without matmuls)."""
        return self.macs / (self.span * self.mx_peak) if self.span and self.mx_peak else 0.0

    @property
    def matrix_efficiency(self) -> float:
        """Useful MACs over the matrix unit's busy cycles in the layer: how well the tiles
        fill the PE array (padding of partial tiles, pipeline latency)."""
        busy = self.busy.get("matrix", 0)
        return self.macs / (busy * self.mx_peak) if busy and self.mx_peak else 0.0


@dataclass
class RunResult:
    outputs: dict[str, np.ndarray]
    total_cycles: int  # the cycle at which the last instruction ends
    busy_cycles: dict[str, int]  # unit name -> cycles spent executing
    stall_cycles: dict[str, int]  # unit name -> cycles its next instruction waited for tokens
    instruction_counts: dict[str, int]  # unit name -> instructions executed
    layers: list[LayerStats]
    matrix_macs: int  # sum of m*k*n over matmuls
    matrix_utilization: float  # matrix_macs / (matrix busy cycles * mx_rows * mx_cols)
    dram_bytes_read: int  # by loads
    dram_bytes_written: int  # by stores
    leftover_tokens: dict[str, int]  # "src->dst" -> tokens never popped (only nonzero)
    instructions_executed: int  # excluding halt
    clock_mhz: float
    target_name: str
    trace: list[tuple[int, str, int, int]] | None = None  # (pc, unit, start, end)
    mx_peak: int = 0  # MACs the matrix unit can do per cycle (mx_rows * mx_cols)

    @property
    def idle_cycles(self) -> dict[str, int]:
        """Cycles each unit neither executed nor stalled (mostly: its queue was empty)."""
        return {
            u: self.total_cycles - self.busy_cycles[u] - self.stall_cycles[u] for u in UNIT_NAMES
        }

    @property
    def seconds(self) -> float:
        return self.total_cycles / (self.clock_mhz * 1e6)

    @property
    def matrix_occupancy(self) -> float:
        """Useful MACs over what the matrix unit could have done in the whole run."""
        if not self.mx_peak or not self.total_cycles:
            return 0.0
        return self.matrix_macs / (self.total_cycles * self.mx_peak)


class _Decoded:
    """One instruction, pre-decoded for the simulation loop."""

    __slots__ = ("pc", "instr", "unit", "wait", "signal", "cycles", "sem", "fields",
                 "reads", "writes")

    def __init__(self, pc, instr, unit, wait, signal, cycles, sem, fields, reads, writes):
        self.pc = pc
        self.instr = instr
        self.unit = unit
        self.wait = wait
        self.signal = signal
        self.cycles = cycles
        self.sem = sem
        self.fields = fields
        self.reads = reads
        self.writes = writes


# --------------------------------------------------------------------------------------
# Checks before running


def _check_target(program: Any, target: Target) -> None:
    if program.target_id != target.id or program.target_name != target.name:
        raise EmulatorError(
            f"program was built for target '{program.target_name}' (id {program.target_id}) "
            f"but is being run on target '{target.name}' (id {target.id})"
        )


def _symbols(program: Any, kind: str) -> list[Any]:
    for sym in program.symbols:
        if sym.kind not in ("input", "output"):
            raise EmulatorError(f"symbol '{sym.name}' has unknown kind '{sym.kind}'")
        if sym.dtype != "f32":
            raise EmulatorError(f"symbol '{sym.name}' has unsupported dtype '{sym.dtype}'")
    return [s for s in program.symbols if s.kind == kind]


def _check_inputs(program: Any, inputs: Mapping[str, Any]) -> list[tuple[Any, np.ndarray]]:
    symbols = _symbols(program, "input")
    names = [s.name for s in symbols]
    missing = [n for n in names if n not in inputs]
    extra = sorted(n for n in inputs if n not in names)
    if missing or extra:
        parts = []
        if missing:
            parts.append(f"missing input(s) {', '.join(map(repr, missing))}")
        if extra:
            parts.append(f"unexpected input(s) {', '.join(map(repr, extra))}")
        expected = ", ".join(f"{s.name}{list(s.shape)}" for s in symbols) or "none"
        raise EmulatorError(f"{'; '.join(parts)} (the program takes: {expected})")
    checked = []
    for sym in symbols:
        value = np.asarray(inputs[sym.name])
        if not np.issubdtype(value.dtype, np.floating):
            raise EmulatorError(
                f"input '{sym.name}' has dtype {value.dtype}; expected f32 (other floating-point "
                "dtypes are converted to float32, non-floating dtypes are rejected)"
            )
        if tuple(value.shape) != tuple(sym.shape):
            raise EmulatorError(
                f"input '{sym.name}' has shape {tuple(value.shape)}; expected {tuple(sym.shape)}"
            )
        checked.append((sym, value.astype(np.float32, copy=False)))
    return checked


_MASK_BITS: tuple[tuple[int, ...], ...] = tuple(
    tuple(v for v in range(NUM_UNITS) if mask >> v & 1) for mask in range(1 << NUM_UNITS)
)  # mask -> the units it names


def _decode(program: Any, target: Target, sizes: tuple[int, ...],
            max_instructions: int | None) -> list[_Decoded]:
    decoded: list[_Decoded] = []
    for pc, instr in enumerate(program.instructions):
        instr: Instr
        wait, signal = instr["wait"], instr["signal"]
        if instr.mnemonic == "halt":
            if wait or signal:
                raise EmulatorError(
                    f"halt belongs to no unit queue, so its wait/signal masks must be 0 "
                    f"{at_pc(pc, instr)}"
                )
            return decoded
        if max_instructions is not None and len(decoded) >= max_instructions:
            raise EmulatorError(
                f"instruction budget of {max_instructions} exceeded before halt "
                f"{at_pc(pc, instr)}"
            )
        unit = int(instr.unit)
        if unit >= NUM_UNITS:
            raise EmulatorError(f"'{instr.mnemonic}' has no unit queue {at_pc(pc, instr)}")
        for name, mask in (("wait", wait), ("signal", signal)):
            if mask >> unit & 1:
                raise EmulatorError(
                    f"'{name}' mask names the instruction's own unit ({UNIT_NAMES[unit]}) "
                    f"{at_pc(pc, instr)}"
                )
        reason = operand_error(instr) or datapath_error(instr.mnemonic, target)
        if reason is not None:
            raise EmulatorError(f"{instr.mnemonic}: {reason} {at_pc(pc, instr)}")
        try:
            reads, writes = instr.footprint()
        except ValueError as e:
            raise EmulatorError(f"{instr.mnemonic}: {e} {at_pc(pc, instr)}") from None
        for r in reads + writes:
            size = sizes[r.mem]
            if r.start < 0 or r.end > size:
                raise EmulatorError(
                    f"out-of-bounds access to {Mem(r.mem).name} [{r.start}, {r.end}) "
                    f"(size {size}) {at_pc(pc, instr)}"
                )
        decoded.append(_Decoded(
            pc, instr, unit, _MASK_BITS[wait], _MASK_BITS[signal],
            instruction_cycles(instr, target), SEMANTICS[instr.mnemonic], instr.fields,
            reads, writes,
        ))
    n = len(program.instructions)
    last = f"; the last is {at_pc(n - 1, program.instructions[-1])}" if n else ""
    raise EmulatorError(
        f"program has no halt (it has {n} instructions; the stream must end with halt{last})"
    )


# --------------------------------------------------------------------------------------
# The simulation


def _race_error(d: _Decoded, start: int, end: int, other: _Decoded, o_start: int,
                o_end: int) -> None:
    """Raise if `d` (about to run start..end) and `other` (running o_start..o_end on another
    unit, not ordered by any token) touch a common word, one of them writing it."""
    for mine, theirs, my_verb, verb in (
        (d.writes, other.reads, "writes", "reads"),
        (d.writes, other.writes, "writes", "writes"),
        (d.reads, other.writes, "reads", "writes"),
    ):
        hit = first_overlap(mine, theirs)
        if hit is None:
            continue
        a, b = hit  # named by the intersection of their bounding ranges
        raise EmulatorError(
            f"unordered access to {Mem(a.mem).name} [{max(a.start, b.start)}, "
            f"{min(a.end, b.end)}): pc {d.pc} "
            f"({UNIT_NAMES[d.unit]}, cycles {start}..{end}) {my_verb} it while pc {other.pc} "
            f"({UNIT_NAMES[other.unit]}, cycles {o_start}..{o_end}) {verb} it, and no "
            f"dependency token orders them; {at_pc(d.pc, d.instr)}; "
            f"{at_pc(other.pc, other.instr)}"
        )


def _data_error(e: DataError, pc: int, instr: Instr) -> EmulatorError:
    return EmulatorError(f"{instr.mnemonic}: {e} {at_pc(pc, instr)}")


def _deadlock_error(queues, head, tokens) -> EmulatorError:
    blocked = []
    for u in range(NUM_UNITS):
        if head[u] == len(queues[u]):
            continue
        d = queues[u][head[u]]
        missing = [UNIT_NAMES[v] for v in d.wait if not tokens[v][u]]
        blocked.append(
            f"{UNIT_NAMES[u]} waits for a token from {', '.join(missing)} {at_pc(d.pc, d.instr)}"
        )
    return EmulatorError(
        "deadlock: no unit can start its next instruction and no token is on its way; "
        + "; ".join(blocked)
    )


def _simulate(decoded: list[_Decoded], mems: tuple[np.ndarray, ...], check_races: bool,
              trace: list | None):
    n = len(decoded)
    queues: list[list[_Decoded]] = [[] for _ in range(NUM_UNITS)]
    for d in decoded:
        queues[d.unit].append(d)
    qlen = [len(q) for q in queues]
    tokens = [[deque() for _ in range(NUM_UNITS)] for _ in range(NUM_UNITS)]  # [src][dst]
    free = [0] * NUM_UNITS
    head = [0] * NUM_UNITS
    stall = [0] * NUM_UNITS
    starts = [0] * n
    ends = [0] * n
    last: list[_Decoded | None] = [None] * NUM_UNITS  # last started on each unit
    units = range(NUM_UNITS)

    for _ in range(n):
        best = None
        best_t = 0
        for u in units:
            h = head[u]
            if h == qlen[u]:
                continue
            d = queues[u][h]
            t = free[u]
            for v in d.wait:
                tq = tokens[v][u]
                if not tq:
                    break
                if tq[0] > t:
                    t = tq[0]
            else:
                if best is None or t < best_t or (t == best_t and d.pc < best.pc):
                    best, best_t = d, t
        if best is None:
            raise _deadlock_error(queues, head, tokens)

        u = best.unit
        for v in best.wait:
            tokens[v][u].popleft()
        end = best_t + best.cycles
        if check_races:
            for o in last:
                if o is not None and o.unit != u:
                    o_end = ends[o.pc]
                    if o_end > best_t and end > starts[o.pc]:
                        _race_error(best, best_t, end, o, starts[o.pc], o_end)
        try:
            best.sem(mems, best.fields)
        except DataError as e:
            raise _data_error(e, best.pc, best.instr) from None
        except Exception as e:  # a bug in the emulator: say where it happened
            e.add_note(f"while executing {at_pc(best.pc, best.instr)}")
            raise
        for v in best.signal:
            tokens[u][v].append(end)
        stall[u] += best_t - free[u]
        free[u] = end
        head[u] += 1
        starts[best.pc] = best_t
        ends[best.pc] = end
        last[u] = best
        if trace is not None:
            trace.append((best.pc, UNIT_NAMES[u], best_t, end))

    leftover = {
        f"{UNIT_NAMES[s]}->{UNIT_NAMES[d]}": len(tokens[s][d])
        for s in units for d in units if tokens[s][d]
    }
    return starts, ends, stall, leftover


# --------------------------------------------------------------------------------------
# Statistics


def _layer_stats(program: Any, units: np.ndarray, cycles: np.ndarray, macs: np.ndarray,
                 starts: np.ndarray, ends: np.ndarray, mx_peak: int) -> list[LayerStats]:
    n = len(units)
    layers = []
    for lr in getattr(program, "debug", None) or ():
        lo, hi = max(0, lr.start_pc), min(lr.end_pc, n)
        count = max(0, hi - lo)
        if count:
            busy_arr = np.bincount(units[lo:hi], weights=cycles[lo:hi], minlength=NUM_UNITS)
            start, end = int(starts[lo:hi].min()), int(ends[lo:hi].max())
            layer_macs = int(macs[lo:hi].sum())
        else:
            busy_arr = np.zeros(NUM_UNITS)
            start = end = layer_macs = 0
        layers.append(LayerStats(
            name=lr.name, kind=lr.kind, start_pc=lr.start_pc, end_pc=lr.end_pc,
            instructions=count, busy=dict(zip(UNIT_NAMES, (int(b) for b in busy_arr))),
            start=start, end=end, macs=layer_macs, mx_peak=mx_peak,
        ))
    return layers


def _reference_run(program, target, machine, max_instructions, check_races, trace_list):
    """Decode and simulate instruction by instruction (the definition of a run)."""
    decoded = _decode(program, target, machine.sizes, max_instructions)
    starts_l, ends_l, stall, leftover = _simulate(
        decoded, machine.mems, check_races, trace_list
    )
    n = len(decoded)
    units = np.fromiter((d.unit for d in decoded), dtype=np.int64, count=n)
    cycles = np.fromiter((d.cycles for d in decoded), dtype=np.int64, count=n)
    macs = np.fromiter((d.instr.spec.macs(d.fields) for d in decoded), dtype=np.int64,
                       count=n)
    dram_read = dram_written = 0
    for d in decoded:
        read, written = d.instr.spec.dram_traffic(d.fields)
        dram_read += read
        dram_written += written
    return (units, cycles, macs, np.asarray(starts_l, dtype=np.int64),
            np.asarray(ends_l, dtype=np.int64), stall, leftover, dram_read, dram_written)


@dataclass
class _FastRun:
    """A program decoded, timed and race-checked by the fast path: what every run of it
    repeats (the thunks, in execution order) and what all runs share (the statistics)."""

    order: list[int]  # pcs in execution order
    seq: list  # their thunks (None: nothing to do)
    stats: tuple  # (units, cycles, macs, starts, ends, stall, leftover, dram r, dram w)
    _trace: list[tuple[int, str, int, int]] | None = None
    fusion_plan: fusion.Fusion | None = None  # what runs fused (`nmc.runtime.fusion`)

    def trace(self) -> list[tuple[int, str, int, int]]:
        """(pc, unit, start, end) in execution order, built on the first request (most
        runs do not ask for one)."""
        if self._trace is None:
            units, _, _, starts, ends = (a.tolist() for a in self.stats[:5])
            self._trace = [(i, UNIT_NAMES[units[i]], starts[i], ends[i]) for i in self.order]
        return self._trace

    def execute(self, instructions: list[Instr]) -> None:
        k = 0
        try:
            for k, thunk in enumerate(self.seq):
                if thunk is not None:
                    thunk()
        except DataError as e:
            pc = self.order[k]
            raise _data_error(e, pc, instructions[pc]) from None
        except Exception as e:  # a bug in the emulator: say where it happened
            pc = self.order[k]
            e.add_note(f"while executing {at_pc(pc, instructions[pc])}")
            raise


@dataclass
class _BatchRun(_FastRun):
    """The fast path's walk prepared for the rows of a `BatchMachine` (`run_batch`)."""

    machine: BatchMachine | None = None


def _fast_plan(program, target, machine, max_instructions, check_races,
               fuse_varying: np.ndarray | None = None) -> _FastRun | None:
    """Decode, time and race-check through `nmc.runtime.fastpath` (raising the reference
    path's error for a race), or None where the fast path does not apply. With
    `fuse_varying` (the DRAM words that may differ between runs), the tiles
    `nmc.runtime.fusion` proves equivalent to one GEMM run as one."""
    plan = fastpath.decode(program.instructions, target, machine.sizes, max_instructions,
                           machine.mems)
    if plan is None:
        return None
    timed = fastpath.schedule(plan)
    if timed is None:
        return None
    starts_l, ends_l, stall, leftover = timed
    starts = np.asarray(starts_l, dtype=np.int64)
    ends = np.asarray(ends_l, dtype=np.int64)
    n = plan.n
    order = np.lexsort((np.arange(n), starts))  # execution order: by (start, pc)
    if check_races:
        rank = np.empty(n, np.int64)
        rank[order] = np.arange(n)
        pairs = fastpath.race_candidates(plan, starts, ends, rank)
        if pairs:
            instrs = program.instructions
            for i, j in pairs:  # confirmed by the reference check, which raises
                di = _decode_one(i, instrs[i], target)
                dj = _decode_one(j, instrs[j], target)
                _race_error(di, starts_l[i], ends_l[i], dj, starts_l[j], ends_l[j])
    order_list = order.tolist()
    leftover_named = {f"{UNIT_NAMES[s]}->{UNIT_NAMES[d]}": c
                      for (s, d), c in sorted(leftover.items())}
    stats = (plan.unit, plan.cycles, plan.macs, starts, ends, stall, leftover_named,
             plan.dram_read, plan.dram_written)
    run = _FastRun(order_list, [plan.thunks[i] for i in order_list], stats)
    if fuse_varying is not None:
        run.fusion_plan = fusion.plan(program.instructions, order_list, machine.sizes,
                                      fuse_varying, (plan.reads, plan.writes))
        for pos, thunk in run.fusion_plan.thunks(machine.mems).items():
            run.seq[pos] = thunk
    return run


def _decode_one(pc: int, instr: Instr, target: Target) -> _Decoded:
    """The reference decoding of one (already validated) instruction."""
    reads, writes = instr.footprint()
    return _Decoded(pc, instr, int(instr.unit), _MASK_BITS[instr["wait"]],
                    _MASK_BITS[instr["signal"]], instruction_cycles(instr, target),
                    SEMANTICS[instr.mnemonic], instr.fields, reads, writes)


@contextmanager
def _no_gc():
    """The cyclic garbage collector paused: a run makes ~2 objects per instruction (views,
    prepared calls), none of them cyclic, and in a process that holds a big object graph
    (a compiler's IR) every collection would rescan all of it."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def _stored_ranges(instructions: list[Instr], dram_words: int) -> list[tuple[int, int]]:
    """The DRAM word ranges the instructions before the first halt can write (the DRAM
    regions of their footprints: stores and scattered stores, clipped to DRAM, merged):
    all a run can change in DRAM."""
    spans = []
    for instr in instructions:
        if instr.mnemonic == "halt":
            break
        if instr.unit != Unit.STORE:  # only the store unit writes DRAM
            continue
        for region in instr.footprint()[1]:
            lo, hi = max(0, region.start), min(dram_words, region.end)
            if region.mem == Mem.DRAM and lo < hi:
                spans.append((lo, hi))
    merged: list[tuple[int, int]] = []
    for lo, hi in sorted(spans):
        if merged and lo <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], hi))
        else:
            merged.append((lo, hi))
    return merged


class LoadedProgram:
    """A program loaded into a machine of `target` once, to be run on many inputs.

        loaded = LoadedProgram(program, target)
        for x in images:
            result = loaded.run({"x": x})

    Loading checks the target, the symbols and the constants and writes the constants to
    DRAM. The first run also decodes, times and race-checks the program (the fast path's
    plan, see `nmc.runtime.fastpath`); later runs reuse it: they put back a fresh machine's
    state where a run can have changed it (`Machine.reset`: the on-chip memories and the
    DRAM that stores write, with the constants that lie there), write the inputs and run
    the prepared instructions. So every run gives the result `run_program` gives for its
    inputs alone. Programs that take the reference path are decoded and simulated on every
    run (that path is the definition, not tuned for speed). Arguments: as `run_program`.
    """

    def __init__(self, program: Any, target: Target, *, max_instructions: int | None = None,
                 check_races: bool = True, fill: float = 0.0, fast: bool = True,
                 fuse: bool = True):
        _check_target(program, target)
        try:
            machine = Machine(target, int(program.dram_words), fill)
        except MemoryError:
            raise EmulatorError(
                f"cannot allocate the memories of target '{target.name}' ({program.dram_words} "
                f"DRAM words for the program, {target.spad_words} SPAD, {target.acc_words} ACC)"
            ) from None
        self.program, self.target, self.machine = program, target, machine
        self._options = (max_instructions, check_races)
        self._fast = fast
        self._fuse = fuse
        self._plan: _FastRun | None = None
        self._batch: _BatchRun | None = None  # run_batch's walk, for its last batch size
        self._used = False  # the machine holds a run's leftovers
        self._outputs = _symbols(program, "output")
        self._write_constants(None)
        for sym in self._outputs:  # check before running, not after
            end = int(sym.addr) + int(np.prod(sym.shape, dtype=np.int64))
            if sym.addr < 0 or end > machine.dram.size:
                raise EmulatorError(
                    f"output '{sym.name}' at DRAM [{sym.addr}, {end}) does not fit the "
                    f"program's {machine.dram.size} DRAM words"
                )
        self._stored = _stored_ranges(program.instructions, machine.dram.size)

    def _constants(self, ranges: list[tuple[int, int]] | None):
        """(index, DRAM address, values) of the constants meeting `ranges` (all: None)."""
        for i, (addr, values) in enumerate(self.program.constants):
            values = np.asarray(values)
            if ranges is None or any(lo < addr + values.size and addr < hi
                                     for lo, hi in ranges):
                yield i, int(addr), values

    def _write_constants(self, ranges: list[tuple[int, int]] | None) -> None:
        """Write the constants (only those meeting `ranges`, when given) to DRAM."""
        for i, addr, values in self._constants(ranges):
            self.machine.write_dram(addr, values, f"constant #{i}")

    def _fast_plan_once(self) -> "_FastRun | None":
        """The fast path's plan, made on first use (None, and not tried again, where the
        fast path does not apply). Call it with the run's threads and gc settings."""
        if self._fast and self._plan is None:
            varying = self._varying_dram() if self._fuse else None
            self._plan = _fast_plan(self.program, self.target, self.machine, *self._options,
                                    varying)
            self._fast = self._plan is not None
        return self._plan

    def _varying_dram(self) -> np.ndarray:
        """Per DRAM word, whether it may differ between runs: an input, or a word the
        program stores to (everything else holds a constant or the fill)."""
        varying = np.zeros(int(self.program.dram_words), bool)
        for lo, hi in self._stored:
            varying[lo:hi] = True
        for sym in _symbols(self.program, "input"):
            varying[int(sym.addr):int(sym.addr) + int(np.prod(sym.shape))] = True
        return varying

    def run(self, inputs: Mapping[str, Any], *, trace: bool = False) -> RunResult:
        program, target, machine = self.program, self.target, self.machine
        checked_inputs = _check_inputs(program, inputs)
        if self._used:
            machine.reset(self._stored)
            self._write_constants(self._stored)
        self._used = True
        for sym, value in checked_inputs:
            machine.write_dram(int(sym.addr), value, f"input '{sym.name}'")

        max_instructions, check_races = self._options
        trace_list: list | None = [] if trace else None
        # NaN/Inf propagate silently, as in PyTorch
        # torch (tile matmuls, GELU) on one thread while the instructions run: tiles are
        # too small for two threads to gain anything (measured), and a pool busy-waiting
        # for a core that another process holds turns every call into a scheduler time
        # slice (a 100x slowdown of a whole run when the machine is shared, e.g. by
        # `pytest -n 2`); BLAS results may depend on the thread count, so both paths run
        # with the same one
        with np.errstate(all="ignore"), _no_gc(), torch_threads(1):
            if self._fast_plan_once() is not None:
                self._plan.execute(program.instructions)
                ran = self._plan.stats
                if trace_list is not None:
                    trace_list.extend(self._plan.trace())
            else:
                ran = _reference_run(program, target, machine, max_instructions,
                                     check_races, trace_list)
        outputs = {
            sym.name: machine.read_dram(int(sym.addr), tuple(sym.shape), f"output '{sym.name}'")
            for sym in self._outputs
        }
        return _result(program, target, ran, outputs, trace_list)

    def run_batch(self, batch_inputs: Sequence[Mapping[str, Any]]) -> list[RunResult]:
        """`run` on each of `batch_inputs`, all in one walk of the instruction stream
        (`nmc.runtime.batch`): each result equals, bit for bit, what `run` gives for that
        input alone, and the walk costs far less than one run per input. Programs the fast
        path does not take run one at a time."""
        program, target = self.program, self.target
        checked = [_check_inputs(program, inputs) for inputs in batch_inputs]
        if len(checked) <= 1 or not self._fast:
            return [self.run(inputs) for inputs in batch_inputs]
        with np.errstate(all="ignore"), _no_gc(), torch_threads(1):
            if self._fast_plan_once() is None:
                return [self.run(inputs) for inputs in batch_inputs]
            walk = self._batch_walk(len(checked))
            for b, values in enumerate(checked):
                for sym, value in values:
                    walk.machine.mems[Mem.DRAM][b, int(sym.addr):int(sym.addr) + value.size] = \
                        value.reshape(-1)
            walk.execute(program.instructions)
        dram = walk.machine.mems[Mem.DRAM]
        results = []
        for b in range(len(checked)):
            outputs = {sym.name: dram[b, int(sym.addr):int(sym.addr) + int(np.prod(sym.shape))]
                       .reshape(tuple(sym.shape)).copy() for sym in self._outputs}
            results.append(_result(program, target, self._plan.stats, outputs, None))
        return results

    def _batch_walk(self, batch: int) -> "_BatchRun":
        """The machine of `batch` rows and its prepared walk (the last batch size's are
        kept, with the state of a fresh machine put back where a run changed it)."""
        walk = self._batch
        if walk is not None and walk.machine.batch == batch:
            walk.machine.reset(self._stored)
            self._write_batch_constants(walk.machine, self._stored)
            return walk
        self._batch = None  # free the previous size's memories first
        machine = BatchMachine(self.target, int(self.program.dram_words), batch,
                               self.machine.fill)
        self._write_batch_constants(machine, None)
        preparer = BatchPreparer(machine, self._varying_dram())
        order = self._plan.order
        instrs = self.program.instructions
        fused = (self._plan.fusion_plan.thunks(machine.mems) if self._plan.fusion_plan
                 else {})
        seq = []
        for pos, pc in enumerate(order):
            if pos in fused:
                preparer.runs_elsewhere(instrs[pc])
                seq.append(fused[pos])
            else:
                seq.append(preparer.prepare(instrs[pc]))
        walk = _BatchRun(order, seq, self._plan.stats, machine=machine)
        self._batch = walk
        return walk

    def _write_batch_constants(self, machine: BatchMachine,
                               ranges: list[tuple[int, int]] | None) -> None:
        dram = machine.mems[Mem.DRAM]
        for _, addr, values in self._constants(ranges):
            dram[:, addr:addr + values.size] = values.reshape(-1)


def _result(program, target: Target, ran: tuple, outputs: dict[str, np.ndarray],
            trace_list: list | None) -> RunResult:
    units, cycles, macs, starts, ends, stall, leftover, dram_read, dram_written = ran
    n = len(units)
    busy = np.bincount(units, weights=cycles, minlength=NUM_UNITS)
    counts = np.bincount(units, minlength=NUM_UNITS)
    total_macs = int(macs.sum())
    mx_busy = int(busy[Unit.MATRIX])
    mx_peak = target.mx_rows * target.mx_cols
    utilization = total_macs / (mx_busy * mx_peak) if mx_busy else 0.0
    return RunResult(
        outputs=outputs,
        total_cycles=int(ends.max()) if n else 0,
        busy_cycles=dict(zip(UNIT_NAMES, (int(b) for b in busy))),
        stall_cycles=dict(zip(UNIT_NAMES, (int(s) for s in stall))),
        instruction_counts=dict(zip(UNIT_NAMES, (int(c) for c in counts))),
        layers=_layer_stats(program, units, cycles, macs, starts, ends, mx_peak),
        matrix_macs=total_macs,
        matrix_utilization=utilization,
        dram_bytes_read=int(dram_read) * WORD_BYTES,
        dram_bytes_written=int(dram_written) * WORD_BYTES,
        leftover_tokens=dict(leftover),
        instructions_executed=n,
        clock_mhz=target.clock_mhz,
        target_name=target.name,
        trace=trace_list,
        mx_peak=mx_peak,
    )


def run_program(
    program: Any,
    inputs: Mapping[str, Any],
    target: Target,
    *,
    max_instructions: int | None = None,
    trace: bool = False,
    check_races: bool = True,
    fill: float = 0.0,
    fast: bool = True,
    fuse: bool = True,
) -> RunResult:
    """Run `program` on `target` with `inputs` (name -> array); see the module docstring.
    (`LoadedProgram` does the same for many inputs, decoding the program once.)

    max_instructions: refuse programs with more instructions before `halt` (None: no limit;
        the ISA has no branches, so every instruction runs exactly once).
    trace: record (pc, unit, start, end) of every instruction, in execution order.
    check_races: report instructions on different units that run at overlapping times and
        touch overlapping words (at least one writing) as an error.
    fill: initial value of memory no constant or input initialises (NaN exposes reads of
        uninitialised memory).
    fast: use `nmc.runtime.fastpath` where it applies (same results, much faster); False
        runs the reference simulation instruction by instruction.
    fuse: on the fast path, run the matrix tiles that `nmc.runtime.fusion` proves
        equivalent to one GEMM as one (same results bit for bit); False runs every tile.
    """
    loaded = LoadedProgram(program, target, max_instructions=max_instructions,
                           check_races=check_races, fill=fill, fast=fast, fuse=fuse)
    return loaded.run(inputs, trace=trace)

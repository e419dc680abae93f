"""A run as a Chrome trace-event file (open it in https://ui.perfetto.dev or chrome://tracing).

    events = trace_events(result, program)      # result = run_program(..., trace=True)
    atomic_write_text("run.json", json.dumps(events))

One process (the program), one track per unit (load, store, matrix, vector) with one
complete event ("ph": "X") per executed instruction, named by its layer (category: the
layer's kind), and a "layer" track with the attribution of `nmc.runtime.attribution`
(which layer owns each cycle; the per-layer cycles of the report). Times are microseconds
at the target's clock; the exact cycles are in every event's args.
"""

from __future__ import annotations

from typing import Any

from nmc.runtime.attribution import NO_LAYER, attribute_cycles, layer_of_pc
from nmc.runtime.emulator import UNIT_NAMES, RunResult
from nmc.runtime.report import OTHER_ROW

PID = 1
LAYER_TID = 0  # the attribution track, above the units
UNIT_TIDS = {u: i + 1 for i, u in enumerate(UNIT_NAMES)}
OUTSIDE = "(no layer)"


def _metadata(program_name: str) -> list[dict]:
    events = [{"ph": "M", "pid": PID, "name": "process_name", "args": {"name": program_name}},
              {"ph": "M", "pid": PID, "tid": LAYER_TID, "name": "thread_name",
               "args": {"name": "layer (cycle attribution)"}}]
    for unit, tid in UNIT_TIDS.items():
        events.append({"ph": "M", "pid": PID, "tid": tid, "name": "thread_name",
                       "args": {"name": f"{unit} unit"}})
    for tid in (LAYER_TID, *UNIT_TIDS.values()):
        events.append({"ph": "M", "pid": PID, "tid": tid, "name": "thread_sort_index",
                       "args": {"sort_index": tid}})
    return events


def trace_events(result: RunResult, program: Any, name: str | None = None) -> dict:
    """The trace-event JSON object of a traced run of `program`."""
    if result.trace is None:
        raise ValueError("the run has no trace: run_program(..., trace=True)")
    mhz = result.clock_mhz
    debug = list(program.debug)
    layers = layer_of_pc(debug, result.instructions_executed)
    meta = program.meta if isinstance(program.meta, dict) else {}
    events = _metadata(name or str(meta.get("model") or "prog.bin"))

    for pc, unit, start, end in result.trace:
        index = int(layers[pc])
        layer = debug[index] if index != NO_LAYER else None
        events.append({
            "ph": "X", "pid": PID, "tid": UNIT_TIDS[unit],
            "name": layer.name if layer else OUTSIDE, "cat": (layer.kind if layer else "") or "op",
            "ts": start / mhz, "dur": (end - start) / mhz,
            "args": {"pc": pc, "op": program.instructions[pc].mnemonic,
                     "start_cycle": start, "end_cycle": end},
        })

    attribution = attribute_cycles(result.trace, layers, result.total_cycles)
    for start, end, index in attribution.runs:
        layer = debug[index] if index != NO_LAYER else None
        events.append({
            "ph": "X", "pid": PID, "tid": LAYER_TID, "name": layer.name if layer else OTHER_ROW,
            "cat": "attribution", "ts": start / mhz, "dur": (end - start) / mhz,
            "args": {"start_cycle": start, "end_cycle": end},
        })
    return {"traceEvents": events, "displayTimeUnit": "ns",
            "otherData": {"target": result.target_name, "clock_mhz": mhz,
                          "total_cycles": result.total_cycles}}

"""A plain-text performance report of one emulator run."""

from __future__ import annotations

from typing import Any

from nmc.runtime.emulator import UNIT_NAMES, RunResult


def _table(header: list[str], rows: list[list[str]], right: set[int]) -> list[str]:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]

    def line(cells: list[str]) -> str:
        return "  ".join(
            c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(cells, widths))
        ).rstrip()

    return [line(header), line(["-" * w for w in widths]), *(line(r) for r in rows)]


def _pct(part: float, whole: float) -> str:
    return f"{100.0 * part / whole:.1f}%" if whole else "-"


def _bytes(n: int) -> str:
    for unit, size in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= size:
            return f"{n} B ({n / size:.2f} {unit})"
    return f"{n} B"


def summarise_kinds(result: RunResult) -> dict[str, dict]:
    """Per layer kind: number of layers, summed span cycles, MACs, and matrix utilisation
    (MACs / (summed spans x PE array))."""
    out: dict[str, dict] = {}
    for layer in result.layers:
        k = out.setdefault(layer.kind, {"layers": 0, "cycles": 0, "macs": 0})
        k["layers"] += 1
        k["cycles"] += layer.span
        k["macs"] += layer.macs
    for k in out.values():
        peak = result.mx_peak
        k["utilization"] = k["macs"] / (k["cycles"] * peak) if k["cycles"] and peak else 0.0
    return out


def format_report(result: RunResult, program: Any = None) -> str:
    """Per-layer and per-unit cycle tables, totals, matrix utilisation and DRAM traffic.

    `program` is accepted for context (its name in the heading, when its meta has one);
    everything else comes from `result`.
    """
    total = result.total_cycles
    out: list[str] = []
    title = "nmc emulator report"
    meta = getattr(program, "meta", None) or {}
    if isinstance(meta, dict) and meta.get("model"):
        title += f": {meta['model']}"
    out += [title, f"target {result.target_name} @ {result.clock_mhz:g} MHz", ""]

    if result.layers:
        rows = [
            [
                layer.name, layer.kind, str(layer.instructions), str(layer.span),
                _pct(layer.span, total), *(str(layer.busy[u]) for u in UNIT_NAMES),
                _pct(layer.matrix_utilization, 1.0) if layer.macs else "-",
            ]
            for layer in result.layers
        ]
        header = ["layer", "kind", "instrs", "cycles", "share",
                  *(f"{u} busy" for u in UNIT_NAMES), "mx util"]
        out += ["Layers (cycles = first start .. last end; layers may overlap in time; "
                "mx util = useful MACs / (cycles x PE array))"]
        out += _table(header, rows, right=set(range(2, len(header))))
        out.append("")
        kinds = summarise_kinds(result)
        if kinds:
            rows = [[k, str(v["layers"]), str(v["cycles"]), _pct(v["cycles"], total),
                     _pct(v["utilization"], 1.0) if v["macs"] else "-"]
                    for k, v in kinds.items()]
            out += ["Layer kinds (cycles: sum of the layers' spans)"]
            out += _table(["kind", "layers", "cycles", "share", "mx util"], rows,
                          right={1, 2, 3, 4})
            out.append("")

    idle = result.idle_cycles
    rows = [
        [
            u, str(result.busy_cycles[u]), _pct(result.busy_cycles[u], total),
            str(result.stall_cycles[u]), str(idle[u]), str(result.instruction_counts[u]),
        ]
        for u in UNIT_NAMES
    ]
    out += ["Units"]
    out += _table(["unit", "busy", "busy %", "stalled", "idle", "instrs"], rows, right={1, 2, 3, 4, 5})
    out.append("")

    out.append(
        f"total: {total} cycles = {result.seconds * 1e6:.3f} us, "
        f"{result.instructions_executed} instructions"
    )
    out.append(
        f"matrix utilisation: {100.0 * result.matrix_occupancy:.1f}% of the run "
        f"({result.matrix_macs} useful MACs in {total} cycles), "
        f"{100.0 * result.matrix_utilization:.1f}% of its {result.busy_cycles['matrix']} "
        "busy cycles"
    )
    out.append(
        f"DRAM traffic: read {_bytes(result.dram_bytes_read)}, "
        f"written {_bytes(result.dram_bytes_written)}"
    )
    if result.leftover_tokens:
        left = ", ".join(f"{k}: {v}" for k, v in sorted(result.leftover_tokens.items()))
        out.append(f"tokens never consumed: {left}")
    return "\n".join(out) + "\n"

"""The performance report of one emulator run: per layer, per unit, totals, speedup.

    report = build_report(result, program)          # result = run_program(..., trace=True)
    print(render_text(report)); json.dumps(report.to_json())

Per-layer cycles follow `nmc.runtime.attribution` (each cycle of the run belongs to exactly
one layer, so they add up to the total); they need the run's trace. Without it the cycles
column is "-" and only the spans (first start .. last end, overlapping) are known.
Sparsity comes from the program's META "layers" (pattern, density, window_keep); DRAM bytes
from the layer's load and store instructions.
"""

from __future__ import annotations

import textwrap
from dataclasses import asdict, dataclass, field
from typing import Any

from nmc.runtime.attribution import (
    ATTRIBUTION_RULE, NO_LAYER, UNIT_PRIORITY, attribute_cycles, layer_of_pc,
)
from nmc.runtime.emulator import UNIT_NAMES, RunResult
from nmc.runtime.timing import WORD_BYTES

OTHER_ROW = "(idle / other)"
DENSE_CYCLES_META = "dense_cycles"  # META key: the compiler's estimate of the dense model


@dataclass(frozen=True)
class Baseline:
    """The cycles of the same model compiled dense, and where that number comes from;
    `layer_cycles` (layer name -> cycles) when a dense program was run."""

    cycles: int
    source: str
    layer_cycles: dict[str, int] | None = None


@dataclass
class LayerRow:
    name: str
    kind: str
    sparsity: str  # "dense", "2:4", "2:4, keep 0.50", ... ("-" when the meta says nothing)
    pattern: str | None
    density: float | None
    window_keep: float | None
    instructions: int
    macs: int
    cycles: int | None  # attributed cycles (None without a trace)
    cycles_by_unit: dict[str, int]  # how `cycles` split (see attribution); "idle" for gaps
    share: float | None
    span_start: int
    span_end: int
    busy: dict[str, int]  # unit -> cycles its instructions of this layer took
    matrix_utilization: float  # MACs / (span x PE array)
    dram_bytes_read: int
    dram_bytes_written: int
    dense_cycles: int | None = None  # the same layer in the dense baseline run

    @property
    def dram_bytes(self) -> int:
        return self.dram_bytes_read + self.dram_bytes_written


@dataclass
class Report:
    title: str
    model: str | None
    target: str
    clock_mhz: float
    total_cycles: int
    instructions: int
    layers: list[LayerRow]
    units: dict[str, dict[str, int]]  # unit -> busy, stalled, idle, instructions
    matrix_macs: int
    matrix_utilization: float  # of the matrix unit's busy cycles
    matrix_occupancy: float  # of the whole run
    dram_bytes_read: int
    dram_bytes_written: int
    leftover_tokens: dict[str, int]
    baseline: Baseline | None
    cycle_rule: str = ATTRIBUTION_RULE
    notes: list[str] = field(default_factory=list)

    @property
    def seconds(self) -> float:
        return self.total_cycles / (self.clock_mhz * 1e6) if self.clock_mhz else 0.0

    @property
    def speedup(self) -> float | None:
        if self.baseline is None or not self.total_cycles:
            return None
        return self.baseline.cycles / self.total_cycles

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["seconds"] = self.seconds
        out["speedup"] = self.speedup
        out["baseline"] = asdict(self.baseline) if self.baseline else None
        return out


# ------------------------------------------------------------------------ building


@dataclass(frozen=True)
class LayerSparsity:
    """What META says about one layer: N:M pattern ("dense" or "2:4"), kept weight
    fraction, SparseViT window keep ratio; None where it says nothing."""

    pattern: str | None = None
    density: float | None = None
    window_keep: float | None = None


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def layer_sparsity(program: Any) -> dict[str, LayerSparsity]:
    """Per layer name of program.debug, from META "layers" {name: {pattern, density,
    window_keep}}; a layer without its own "window_keep" takes that of the longest block
    prefix of its name in META "window_keep" {block: ratio}. Malformed entries are ignored."""
    meta = getattr(program, "meta", None)
    meta = meta if isinstance(meta, dict) else {}
    layers = meta.get("layers") if isinstance(meta.get("layers"), dict) else {}
    block_keep = meta.get("window_keep") if isinstance(meta.get("window_keep"), dict) else {}
    out = {}
    for r in getattr(program, "debug", None) or ():
        info = layers.get(r.name) if isinstance(layers.get(r.name), dict) else {}
        keep = _number(info.get("window_keep"))
        blocks = [b for b in block_keep if r.name == b or r.name.startswith(b + ".")]
        if keep is None and blocks:
            keep = _number(block_keep[max(blocks, key=len)])
        pattern = info.get("pattern")
        out[r.name] = LayerSparsity(pattern if isinstance(pattern, str) else None,
                                    _number(info.get("density")), keep)
    return out


def sparsity_text(s: LayerSparsity) -> str:
    parts = [s.pattern] if s.pattern else []
    if s.window_keep is not None:
        parts.append(f"keep {s.window_keep:.2f}")
    return ", ".join(parts) or "-"


# DRAM words a DMA moves: (mnemonic -> (direction, its fields whose product is the words))
_DMA_WORDS = {"load": ("read", ("rows", "cols")), "store": ("written", ("rows", "cols")),
              "gload": ("read", ("count", "block")), "gstore": ("written", ("count", "block"))}


def _dram_bytes(instructions: list, lo: int, hi: int) -> tuple[int, int]:
    """Bytes read from and written to DRAM by the DMAs among instructions[lo:hi]."""
    moved = {"read": 0, "written": 0}
    for instr in instructions[lo:hi]:
        dma = _DMA_WORDS.get(instr.mnemonic)
        if dma is not None:
            direction, (a, b) = dma
            moved[direction] += instr[a] * instr[b]
    return moved["read"] * WORD_BYTES, moved["written"] * WORD_BYTES


def meta_baseline(program: Any) -> Baseline | None:
    """The dense estimate a compiler recorded in META, if any."""
    meta = getattr(program, "meta", None)
    value = meta.get(DENSE_CYCLES_META) if isinstance(meta, dict) else None
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return Baseline(value, "compiler estimate (prog.bin META dense_cycles)")
    return None


def _self_baseline(sparsity: dict[str, LayerSparsity], total: int) -> Baseline | None:
    """A program whose META says every layer is dense (and no window is pruned) is its
    own dense baseline."""
    known = [s for s in sparsity.values() if s.pattern is not None or s.window_keep is not None]
    if total and known and all(s.pattern == "dense" and s.window_keep is None for s in known):
        return Baseline(total, "the program is dense (prog.bin META)")
    return None


def build_report(result: RunResult, program: Any = None,
                 baseline: Baseline | None = None) -> Report:
    """The report of `result`, a run of `program` (for layer names' sparsity and DRAM
    bytes). `baseline` defaults to the META estimate; None there means unknown."""
    total = result.total_cycles
    executed = result.instructions_executed
    debug = list(getattr(program, "debug", None) or ())
    instructions = list(getattr(program, "instructions", None) or ())
    attribution = None
    if result.trace is not None:
        attribution = attribute_cycles(result.trace, layer_of_pc(debug, executed), total)
    sparsity = layer_sparsity(program)
    baseline = baseline or meta_baseline(program) or _self_baseline(sparsity, total)

    rows = []
    for index, layer in enumerate(result.layers):
        sp = sparsity.get(layer.name, LayerSparsity())
        lo, hi = max(0, layer.start_pc), min(layer.end_pc, executed)
        read, written = _dram_bytes(instructions, lo, hi)
        cycles = attribution.layer_cycles(index) if attribution else None
        rows.append(LayerRow(
            name=layer.name, kind=layer.kind, sparsity=sparsity_text(sp),
            pattern=sp.pattern, density=sp.density, window_keep=sp.window_keep,
            instructions=layer.instructions, macs=layer.macs, cycles=cycles,
            cycles_by_unit=dict(attribution.cycles.get(index, {})) if attribution else {},
            share=cycles / total if cycles is not None and total else None,
            span_start=layer.start, span_end=layer.end, busy=dict(layer.busy),
            matrix_utilization=layer.matrix_utilization,
            dram_bytes_read=read, dram_bytes_written=written,
            dense_cycles=(baseline.layer_cycles or {}).get(layer.name) if baseline else None,
        ))
    if attribution and attribution.layer_cycles(NO_LAYER):
        rows.append(_other_row(result, attribution, rows,
                               _dram_bytes(instructions, 0, executed)))

    idle = result.idle_cycles
    units = {u: {"busy": result.busy_cycles[u], "stalled": result.stall_cycles[u],
                 "idle": idle[u], "instructions": result.instruction_counts[u]}
             for u in UNIT_NAMES}
    meta = getattr(program, "meta", None)
    model = meta.get("model") if isinstance(meta, dict) else None
    notes = [] if attribution else [
        "per-layer cycles need the run's trace (run_program(..., trace=True)); spans overlap"]
    return Report(
        title="nmc emulator report" + (f": {model}" if model else ""), model=model,
        target=result.target_name, clock_mhz=result.clock_mhz, total_cycles=total,
        instructions=executed, layers=rows, units=units, matrix_macs=result.matrix_macs,
        matrix_utilization=result.matrix_utilization,
        matrix_occupancy=result.matrix_occupancy, dram_bytes_read=result.dram_bytes_read,
        dram_bytes_written=result.dram_bytes_written,
        leftover_tokens=dict(result.leftover_tokens), baseline=baseline, notes=notes,
    )


def _other_row(result: RunResult, attribution, rows: list[LayerRow],
               program_dram: tuple[int, int]) -> LayerRow:
    """Cycles in which nothing runs, or only instructions outside every layer (whose
    instructions and DRAM bytes are the program's less the layers')."""
    cycles = attribution.layer_cycles(NO_LAYER)
    in_layers = sum(r.instructions for r in rows)
    read = program_dram[0] - sum(r.dram_bytes_read for r in rows)
    written = program_dram[1] - sum(r.dram_bytes_written for r in rows)
    return LayerRow(
        name=OTHER_ROW, kind="other", sparsity="-", pattern=None, density=None,
        window_keep=None, instructions=result.instructions_executed - in_layers, macs=0,
        cycles=cycles, cycles_by_unit=dict(attribution.cycles[NO_LAYER]),
        share=cycles / result.total_cycles, span_start=0, span_end=0, busy={},
        matrix_utilization=0.0, dram_bytes_read=read, dram_bytes_written=written,
    )


# ------------------------------------------------------------------------ text


def text_table(header: list[str], rows: list[list[str]], right: set[int]) -> list[str]:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]

    def line(cells: list[str]) -> str:
        return "  ".join(
            c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(cells, widths))
        ).rstrip()

    return [line(header), line(["-" * w for w in widths]), *(line(r) for r in rows)]


def _pct(part: float | None, whole: float = 1.0) -> str:
    return f"{100.0 * part / whole:.1f}%" if whole and part is not None else "-"


def _si(n: float) -> str:
    """Three significant digits with a decimal SI suffix (the exact value is in the JSON)."""
    for suffix, size in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(n) >= size:
            return f"{n / size:.3g}{suffix}"
    return f"{n:g}"


def _short_bytes(n: int, digits: int = 1) -> str:
    for unit, size in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= size:
            return f"{n / size:.{digits}f} {unit}"
    return f"{n} B"


def _bytes(n: int) -> str:
    """Exact, and in binary units when that is shorter to read."""
    return f"{n} B ({_short_bytes(n, 2)})" if n >= 1 << 10 else f"{n} B"


def _speedup(dense: int | None, cycles: int | None) -> str:
    return f"{dense / cycles:.2f}x" if dense and cycles else "-"


def summarise_kinds(report: Report) -> dict[str, dict]:
    """Per layer kind: number of layers, attributed cycles and MACs."""
    out: dict[str, dict] = {}
    for row in report.layers:
        k = out.setdefault(row.kind, {"layers": 0, "cycles": 0, "macs": 0})
        k["layers"] += 1
        k["cycles"] += row.cycles or 0
        k["macs"] += row.macs
    return out


def _layer_lines(report: Report) -> list[str]:
    with_dense = any(r.dense_cycles for r in report.layers)
    header = ["layer", "kind", "sparsity", "instrs", "MACs", "cycles", "share", "mx util",
              "DRAM bytes", *(["vs dense"] if with_dense else [])]
    rows = [
        [r.name, r.kind, r.sparsity, str(r.instructions), _si(r.macs) if r.macs else "-",
         "-" if r.cycles is None else str(r.cycles), _pct(r.share),
         _pct(r.matrix_utilization) if r.macs else "-",
         _short_bytes(r.dram_bytes) if r.dram_bytes else "-",
         *([_speedup(r.dense_cycles, r.cycles)] if with_dense else [])]
        for r in report.layers
    ]
    return text_table(header, rows, right=set(range(3, len(header))))


def render_text(report: Report) -> str:
    total = report.total_cycles
    out = [report.title, f"target {report.target} @ {report.clock_mhz:g} MHz", ""]
    if report.layers:
        legend = (f"{report.cycle_rule}. mx util: useful MACs / (the layer's first start .. "
                  "last end x PE array). DRAM bytes: its loads + stores.")
        out += ["Layers", *(f"  {line}" for line in textwrap.wrap(legend, 88))]
        out += [f"note: {n}" for n in report.notes]
        out += _layer_lines(report)
        out.append("")
        kinds = summarise_kinds(report)
        rows = [[k, str(v["layers"]), str(v["cycles"]), _pct(v["cycles"], total),
                 _si(v["macs"]) if v["macs"] else "-"] for k, v in kinds.items()]
        out += ["Layer kinds"]
        out += text_table(["kind", "layers", "cycles", "share", "MACs"], rows, right={1, 2, 3, 4})
        out.append("")

    rows = [[u, str(s["busy"]), _pct(s["busy"], total), str(s["stalled"]), str(s["idle"]),
             str(s["instructions"])] for u, s in report.units.items()]
    out += ["Units (stalled = waiting for dependency tokens; idle = queue empty)"]
    out += text_table(["unit", "busy", "busy %", "stalled", "idle", "instrs"], rows,
                  right={1, 2, 3, 4, 5})
    out.append("")

    # counted as prog.bin holds them (`nmc compile`, `nmc inspect`): the halt that ends
    # the run is one, though it runs on no unit (the table above)
    out.append(f"total: {total} cycles = {report.seconds * 1e6:.3f} us, "
               f"{report.instructions + 1} instructions (halt included)")
    out.append(
        f"matrix utilisation: {100.0 * report.matrix_occupancy:.1f}% of the run "
        f"({report.matrix_macs} useful MACs in {total} cycles), "
        f"{100.0 * report.matrix_utilization:.1f}% of its {report.units['matrix']['busy']} "
        "busy cycles")
    out.append(f"DRAM traffic: read {_bytes(report.dram_bytes_read)}, "
               f"written {_bytes(report.dram_bytes_written)}")
    if report.baseline is not None:
        out.append(f"speedup vs dense: {report.speedup:.3f}x (dense {report.baseline.cycles} "
                   f"cycles, {report.baseline.source})")
    else:
        out.append("speedup vs dense: unknown (pass --dense-baseline DENSE.bin or "
                   "--baseline-cycles N)")
    if report.leftover_tokens:
        left = ", ".join(f"{k}: {v}" for k, v in sorted(report.leftover_tokens.items()))
        out.append(f"tokens never consumed: {left}")
    return "\n".join(out) + "\n"


def format_report(result: RunResult, program: Any = None,
                  baseline: Baseline | None = None) -> str:
    """`render_text(build_report(...))`: the text report of one run."""
    return render_text(build_report(result, program, baseline))


__all__ = ["Baseline", "LayerRow", "LayerSparsity", "OTHER_ROW", "Report", "UNIT_PRIORITY", "build_report",
           "format_report", "meta_baseline", "layer_sparsity", "render_text", "sparsity_text", "summarise_kinds",
           "text_table"]

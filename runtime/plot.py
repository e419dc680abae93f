"""Per-layer cycle plots of one or several runs (matplotlib, Agg: no display needed).

    png = plot_reports([("dense", dense_report), ("2:4", sparse_report)], group="block")

One program: a horizontal bar per layer (top to bottom in program order) of its attributed
cycles, stacked by the unit they are charged to (`nmc.runtime.attribution`: matrix, vector,
exposed load, exposed store), next to a panel of each unit's busy / stalled / idle cycles.
Several programs of the same model (dense, 2:4, ELSA, pruned windows): per layer one bar
per program side by side, and a totals panel stacked by unit with the speedup against the
first program. Rows are grouped as in `nmc.runtime.compare` (layer, block, role, auto).
"""

from __future__ import annotations

import io

from nmc.runtime.attribution import UNIT_PRIORITY
from nmc.runtime.compare import grouped_cycles, resolve_group
from nmc.runtime.report import Report

UNIT_COLOURS = {"matrix": "#4C72B0", "vector": "#55A868", "load": "#DD8452",
                "store": "#C44E52", "idle": "#BBBBBB"}
SEGMENTS = (*UNIT_PRIORITY, "idle")
HATCHES = (None, "////", "....", "xxxx")  # one per run in a comparison


def _figure(rows: int, programs: int):
    from matplotlib.figure import Figure

    height = min(60.0, max(4.5, 0.24 * rows * (1 + 0.45 * (programs - 1)) + 1.5))
    fig = Figure(figsize=(14, height), layout="constrained")
    return fig, fig.subplots(1, 2, width_ratios=(3, 1))


def _cycles_axis(ax, label: str = "cycles") -> None:
    from matplotlib.ticker import EngFormatter

    ax.xaxis.set_major_formatter(EngFormatter())
    ax.set_xlabel(label)
    ax.grid(axis="x", alpha=0.3)


def _stacked(ax, y, height, parts: list[dict[str, int]], **kw) -> None:
    """Horizontal bars at `y`, each stacked from the segments of its dict."""
    left = [0] * len(parts)
    for seg in SEGMENTS:
        widths = [p.get(seg, 0) for p in parts]
        if any(widths):
            ax.barh(y, widths, height, left=left, color=UNIT_COLOURS[seg], label=seg, **kw)
            left = [a + b for a, b in zip(left, widths)]


def _single(label: str, report: Report, group: str):
    rows = grouped_cycles(report, group)
    fig, (ax, ax_units) = _figure(len(rows), 1)
    names = list(rows)
    _stacked(ax, range(len(names)), 0.8, [rows[n] for n in names])
    ax.set_yticks(range(len(names)), names, fontsize=8)
    ax.invert_yaxis()
    _cycles_axis(ax)
    _unit_legend(ax)
    ax.set_title(f"{label}: cycles per {group} ({report.total_cycles:,} in all)")

    units = list(report.units)
    states = (("busy", "#2F4B7C"), ("stalled", "#F2B134"), ("idle", "#DDDDDD"))
    left = [0] * len(units)
    for state, colour in states:
        widths = [report.units[u][state] for u in units]
        ax_units.barh(range(len(units)), widths, 0.6, left=left, color=colour, label=state)
        left = [a + b for a, b in zip(left, widths)]
    ax_units.set_yticks(range(len(units)), units)
    ax_units.invert_yaxis()
    _cycles_axis(ax_units)
    ax_units.legend(fontsize=8, loc="best")
    ax_units.set_title("units over the run")
    return fig


def _several(reports: list[tuple[str, Report]], group: str):
    per_run = [grouped_cycles(r, group) for _, r in reports]
    names: list[str] = []
    for rows in per_run:
        names += [n for n in rows if n not in names]
    fig, (ax, ax_total) = _figure(len(names), len(reports))
    n = len(reports)
    height = 0.8 / n
    labels = [label for label, _ in reports]
    for i, rows in enumerate(per_run):
        y = [k - 0.4 + height * (i + 0.5) for k in range(len(names))]
        parts = [rows.get(name, {}) for name in names]
        # every bar stacked by unit like the single-program plot; the run is told apart by
        # its hatch and named at the end of its bar, with its speedup against the first run
        _stacked(ax, y, height, parts, hatch=HATCHES[i % len(HATCHES)], edgecolor="white",
                 linewidth=0)
        for k, (yk, part) in enumerate(zip(y, parts)):
            cycles = sum(part.values())
            base = sum(per_run[0].get(names[k], {}).values())
            text = labels[i] + (f" {base / cycles:.2f}x" if i and cycles and base else "")
            ax.annotate(text, (cycles, yk), xytext=(2, 0), textcoords="offset points",
                        va="center", fontsize=6)
    ax.set_yticks(range(len(names)), names, fontsize=8)
    ax.invert_yaxis()
    ax.margins(x=0.08)
    _cycles_axis(ax)
    _unit_legend(ax)
    ax.set_title(f"cycles per {group}: " + " vs ".join(labels))

    totals = [{seg: sum(l.cycles_by_unit.get(seg, 0) for l in r.layers) for seg in SEGMENTS}
              for _, r in reports]
    _stacked(ax_total, range(n), 0.6, totals)
    first = reports[0][1].total_cycles
    for i, (_, r) in enumerate(reports):
        ax_total.annotate(f"{first / r.total_cycles:.2f}x" if r.total_cycles else "",
                          (r.total_cycles, i), xytext=(3, 0), textcoords="offset points",
                          va="center", fontsize=8)
    ax_total.set_yticks(range(n), labels)
    ax_total.invert_yaxis()
    ax_total.margins(x=0.2)
    _cycles_axis(ax_total)  # colours as in the legend on the left
    ax_total.set_title(f"total (speedup vs {labels[0]})")
    return fig


def _unit_legend(ax) -> None:
    """One legend entry per unit (stacked bars repeat the labels once per run)."""
    unique: dict = {}
    for handle, label in zip(*ax.get_legend_handles_labels()):
        unique.setdefault(label, handle)  # the first run's, without hatch
    ax.legend([unique[k] for k in SEGMENTS if k in unique], [k for k in SEGMENTS if k in unique],
              title="cycles charged to", fontsize=8, loc="lower right")


def plot_reports(reports: list[tuple[str, Report]], group: str = "auto") -> bytes:
    """The PNG bytes of the plot of (label, report) pairs (several: the same model)."""
    if not reports:
        raise ValueError("nothing to plot")
    group = resolve_group(group, [r for _, r in reports])
    fig = _single(*reports[0], group) if len(reports) == 1 else _several(reports, group)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    return buf.getvalue()

"""Several runs of the same model side by side (dense, 2:4, ELSA, pruned windows).

Rows are layers, or layers summed in groups, so that a whole DeiT stays readable:

- "layer": every layer;
- "block": the layers of one transformer block summed (`blocks.3.*`; Swin's
  `layers.0.blocks.1.*`); layers outside blocks stay as they are;
- "role": one layer summed over all blocks (`blocks.*.mlp.fc1`): which kind of layer gains;
- "auto": "layer" up to AUTO_MAX_ROWS layers, else "block".
"""

from __future__ import annotations

import re

from nmc.runtime.report import Report, text_table

GROUPS = ("auto", "layer", "block", "role")
AUTO_MAX_ROWS = 40
_BLOCK = re.compile(r"^(.*?\bblocks\.\d+)(?:\.|$)")
_BLOCK_INDEX = re.compile(r"\bblocks\.\d+\b")


def row_key(name: str, group: str) -> str:
    """The row a layer's cycles count in, for grouping `group` (not "auto")."""
    if group == "block":
        m = _BLOCK.match(name)
        return m.group(1) + ".*" if m else name
    if group == "role":
        return _BLOCK_INDEX.sub("blocks.*", name)
    return name


def resolve_group(group: str, reports: list[Report]) -> str:
    if group not in GROUPS:
        raise ValueError(f"unknown grouping '{group}' (one of {', '.join(GROUPS)})")
    if group != "auto":
        return group
    rows = max((len(r.layers) for r in reports), default=0)
    return "layer" if rows <= AUTO_MAX_ROWS else "block"


def grouped_cycles(report: Report, group: str) -> dict[str, dict[str, int]]:
    """Row name -> attributed cycles per unit (and "idle"), rows in program order."""
    out: dict[str, dict[str, int]] = {}
    for layer in report.layers:
        row = out.setdefault(row_key(layer.name, group), {})
        for seg, cycles in layer.cycles_by_unit.items():
            row[seg] = row.get(seg, 0) + cycles
    return out


def render_comparison(reports: list[tuple[str, Report]], group: str = "auto") -> str:
    """A table of cycles per row for every run, and each run's speedup against the first."""
    group = resolve_group(group, [r for _, r in reports])
    per_run = [grouped_cycles(r, group) for _, r in reports]
    names: list[str] = []
    for rows in per_run:
        names += [n for n in rows if n not in names]
    labels = [label for label, _ in reports]
    header = [group, *labels, *(f"{label} vs {labels[0]}" for label in labels[1:])]

    def speedups(base: int, values: list[int]) -> list[str]:
        return [f"{base / v:.2f}x" if base and v else "-" for v in values[1:]]

    body = []
    for name in names:
        values = [sum(rows.get(name, {}).values()) for rows in per_run]
        body.append([name, *(str(v) if v else "-" for v in values),
                     *speedups(values[0], values)])
    totals = [r.total_cycles for _, r in reports]
    body.append(["total", *map(str, totals), *speedups(totals[0], totals)])
    out = [f"Cycles per {group} (attributed: they add up to each run's total)"]
    out += text_table(header, body, right=set(range(1, len(header))))
    return "\n".join(out) + "\n"

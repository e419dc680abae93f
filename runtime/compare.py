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


def model_difference(a, b) -> str | None:
    """Why programs `a` and `b` cannot be compiled from one model, or None when they can
    (a comparison or a speedup between two models means nothing). One model: the same
    inputs and outputs (names and shapes), and the weight layers of one (prog.bin META
    "layers") all among the other's, each with the same dense size: N:M sparsity keeps
    every layer, window pruning that skips a block drops its layers, and two sizes of one
    architecture (DeiT-tiny, DeiT-small) differ in the sizes. Programs without META layers
    (assembled by hand) are compared by their inputs and outputs."""
    for kind in ("input", "output"):
        ours, theirs = _symbols(a, kind), _symbols(b, kind)
        if ours != theirs:
            return f"{kind}s {_shown(ours)} vs {_shown(theirs)}"
    ours, theirs = _dense_bytes(a), _dense_bytes(b)
    if not ours or not theirs:
        return None
    fewer, more = (ours, theirs) if len(ours) <= len(theirs) else (theirs, ours)
    missing = [name for name in fewer if name not in more]
    if missing:
        return (f"layers {', '.join(missing[:3])}{' ...' if len(missing) > 3 else ''} "
                f"({len(missing)} of {len(fewer)}) are in one program only")
    for name, size in fewer.items():
        if more[name] != size:
            first, second = (size, more[name]) if fewer is ours else (more[name], size)
            return f"layer {name} has {first} dense weight bytes vs {second}"
    return None


def _symbols(program, kind: str) -> dict[str, tuple[int, ...]]:
    return {s.name: tuple(s.shape) for s in program.symbols if s.kind == kind}


def _shown(symbols: dict[str, tuple[int, ...]]) -> str:
    return ", ".join(f"{name}{list(shape)}" for name, shape in symbols.items()) or "none"


def _dense_bytes(program) -> dict[str, object]:
    layers = program.meta.get("layers") if isinstance(program.meta, dict) else None
    if not isinstance(layers, dict):
        return {}
    return {name: info.get("dense_bytes") for name, info in layers.items()
            if isinstance(info, dict)}

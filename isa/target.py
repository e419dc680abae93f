"""Targets as data: a TOML file describes the accelerator; compiler and emulator read it.

`load_target(name_or_path)` accepts a built-in target name (a file in isa/targets/) or a
path to a TOML file, and validates every field, so a bad target file is reported by field
name instead of failing later in a pass or in the emulator.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path

from nmc.isa.errors import NmcError
from nmc.isa.table import VBinFn, VRowFn, VUnFn

TARGETS_DIR = Path(__file__).parent / "targets"
DEFAULT_TARGET = "sta_ref"


class TargetError(NmcError):
    """A target file is missing, malformed, or describes an impossible machine."""


@dataclass(frozen=True)
class Target:
    name: str
    id: int
    clock_mhz: float
    dram_words: int
    spad_words: int
    acc_words: int
    mx_rows: int
    mx_cols: int
    mx_latency: int
    sparse_patterns: tuple[tuple[int, int], ...]
    vec_lanes: int
    vec_latency: int
    vec_cost: dict[str, int]
    dma_bytes_per_cycle: int
    dma_latency: int
    dma_row_overhead: int
    source: str = ""

    def supports_pattern(self, n: int, m: int) -> bool:
        return n == m or (n, m) in self.sparse_patterns


def _vector_fn_names() -> list[str]:
    return sorted({e.name.lower() for fns in (VBinFn, VUnFn, VRowFn) for e in fns})


def _get(table: dict, section: str, key: str, kind: type, minimum: float | None = 1):
    where = f"[{section}] {key}"
    sec = table.get(section)
    if not isinstance(sec, dict):
        raise TargetError(f"missing section [{section}]")
    if key not in sec:
        raise TargetError(f"missing field {where}")
    value = sec[key]
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if not isinstance(value, kind) or isinstance(value, bool):
        raise TargetError(f"{where} must be {kind.__name__}, got {value!r}")
    if minimum is not None and value < minimum:
        raise TargetError(f"{where} = {value} is impossible (must be >= {minimum})")
    return value


def _parse_pattern(text: str) -> tuple[int, int]:
    try:
        n_text, m_text = text.split(":")
        n, m = int(n_text), int(m_text)
    except ValueError:
        raise TargetError(f"[matrix] sparse_patterns: '{text}' is not of the form N:M") from None
    if not 0 < n <= m:
        raise TargetError(f"[matrix] sparse_patterns: '{text}' needs 0 < N <= M")
    return n, m


def parse_target(table: dict, source: str = "<memory>") -> Target:
    patterns = _get(table, "matrix", "sparse_patterns", list, None)
    cost = _get(table, "vector", "cost", dict, None)
    for fn in _vector_fn_names():
        if not isinstance(cost.get(fn), int) or cost[fn] < 1:
            raise TargetError(f"[vector.cost] {fn} must be a positive integer")
    return Target(
        name=_get(table, "target", "name", str, None),
        id=_get(table, "target", "id", int, 0),
        clock_mhz=_get(table, "target", "clock_mhz", float),
        dram_words=_get(table, "memory", "dram_words", int),
        spad_words=_get(table, "memory", "spad_words", int),
        acc_words=_get(table, "memory", "acc_words", int),
        mx_rows=_get(table, "matrix", "rows", int),
        mx_cols=_get(table, "matrix", "cols", int),
        mx_latency=_get(table, "matrix", "latency", int, 0),
        sparse_patterns=tuple(_parse_pattern(p) for p in patterns),
        vec_lanes=_get(table, "vector", "lanes", int),
        vec_latency=_get(table, "vector", "latency", int, 0),
        vec_cost={fn: cost[fn] for fn in _vector_fn_names()},
        dma_bytes_per_cycle=_get(table, "dma", "bytes_per_cycle", int),
        dma_latency=_get(table, "dma", "latency", int, 0),
        dma_row_overhead=_get(table, "dma", "row_overhead", int, 0),
        source=source,
    )


def load_target(name_or_path: str = DEFAULT_TARGET) -> Target:
    path = Path(name_or_path)
    if not path.suffix:
        path = TARGETS_DIR / f"{name_or_path}.toml"
        if not path.exists():
            known = ", ".join(sorted(p.stem for p in TARGETS_DIR.glob("*.toml")))
            raise TargetError(f"unknown target '{name_or_path}' (built-in targets: {known})")
    try:
        text = path.read_text()
    except OSError as e:
        raise TargetError(f"cannot read target file {path}: {e.strerror}") from None
    try:
        table = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise TargetError(f"target file {path} is not valid TOML: {e}") from None
    return parse_target(table, str(path))

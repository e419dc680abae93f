"""Targets as data: a TOML file describes the accelerator; compiler and emulator read it.

`load_target(name_or_path)` accepts a built-in target name (a file in isa/targets/) or a
path to a TOML file, and validates every field, so a bad target file is reported by field
name instead of failing later in a pass or in the emulator: a missing or mistyped field, a
field or section this nmc does not know (a typo would otherwise be ignored), and impossible
values (sizes below 1, memories larger than the ISA's 32-bit addresses reach, a name or id
that prog.bin cannot record, a clock that is not a finite positive number).

The datapath (`[datapath]`) names the element types
the units compute in: the matrix unit's operands and accumulator and the vector unit's.
Two are built: f32/f32/f32 (sta_ref) and i8/i32/f32 (sta_int8: int8 operands, exact
int32 accumulation, fp32 vector unit; docs/INT8.md). Memories hold 32-bit words; an int8
buffer packs four elements to a word, so capacities and DMA traffic in bytes are 4 x the
words whatever the element type (`Target.spad_bytes`, `dma_bytes_per_cycle`).
"""

from __future__ import annotations

import difflib
import math
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path

from nmc.common import nm_format
from nmc.common.errors import NmcError
from nmc.isa.table import ADDR_BITS, VBinFn, VRedFn, VRowFn, VUnFn

TARGETS_DIR = Path(__file__).parent / "targets"
DEFAULT_TARGET = "sta_ref"


MATRIX_OPERAND_TYPES = ("f32", "i8")
DATAPATHS = {"f32": "f32", "i8": "i32"}
"""matrix operand type -> the accumulator type it needs (the datapaths this nmc models)."""
WORD_BYTES = 4
"""Memories are addressed in 32-bit words."""


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
    matrix_operands: str = "f32"  # element type of A and W on the matrix unit
    accumulator: str = "f32"  # element type of its results in ACC
    vector_type: str = "f32"  # element type the vector unit computes in

    @property
    def int8(self) -> bool:
        """Whether the matrix unit multiplies int8 operands (int32 accumulation)."""
        return self.matrix_operands == "i8"

    @property
    def spad_bytes(self) -> int:
        return self.spad_words * WORD_BYTES

    @property
    def acc_bytes(self) -> int:
        return self.acc_words * WORD_BYTES

    def supports_pattern(self, n: int, m: int) -> bool:
        return nm_format.is_dense((n, m)) or (n, m) in self.sparse_patterns


def _vector_fn_names() -> list[str]:
    """The keys of [vector.cost]: every vector function, and `topk`."""
    return sorted({e.name.lower() for fns in (VBinFn, VUnFn, VRowFn, VRedFn) for e in fns}
                  | {"topk"})


TARGET_NAME_BYTES = 32
"""prog.bin stores the target name in 32 bytes and the id in 32 bits (docs/PROGRAM_FORMAT.md)."""
MAX_MEMORY_WORDS = 1 << ADDR_BITS
"""Every address field of the ISA is ADDR_BITS wide: a larger memory could not be addressed."""


def _section(table: dict, section: str) -> dict:
    sec = table.get(section)
    if sec is None:
        raise TargetError(f"missing section [{section}]")
    if not isinstance(sec, dict):
        raise TargetError(f"[{section}] must be a table, got {sec!r}")
    return sec


def _get(table: dict, section: str, key: str, kind: type, minimum: float | None = 1,
         maximum: int | None = None):
    where = f"[{section}] {key}"
    sec = _section(table, section)
    if key not in sec:
        raise TargetError(f"missing field {where}")
    value = sec[key]
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if not isinstance(value, kind) or isinstance(value, bool):
        raise TargetError(f"{where} must be {kind.__name__}, got {value!r}")
    if kind is float and not math.isfinite(value):
        raise TargetError(f"{where} = {value} is impossible (must be a finite number)")
    if minimum is not None and value < minimum:
        raise TargetError(f"{where} = {value} is impossible (must be >= {minimum})")
    if maximum is not None and value > maximum:
        raise TargetError(f"{where} = {value} is impossible (must be <= {maximum})")
    return value


def _parse_pattern(text: object) -> tuple[int, int]:
    if not isinstance(text, str):
        raise TargetError(f"[matrix] sparse_patterns: {text!r} is not a string \"N:M\"")
    try:
        n_text, m_text = text.split(":")
        n, m = int(n_text), int(m_text)
    except ValueError:
        raise TargetError(f"[matrix] sparse_patterns: '{text}' is not of the form N:M") from None
    if not 0 < n <= m:
        raise TargetError(f"[matrix] sparse_patterns: '{text}' needs 0 < N <= M")
    return n, m


def _name(table: dict) -> str:
    name = _get(table, "target", "name", str, None)
    size = len(name.encode("utf-8", "surrogatepass"))
    if not name or "\0" in name or size > TARGET_NAME_BYTES:
        raise TargetError(
            f"[target] name = {name!r} is impossible (1 to {TARGET_NAME_BYTES} bytes of UTF-8, "
            "no NUL: prog.bin stores it in its header)"
        )
    return name


# The fields parse_target reads, by section: anything else in a target file is a typo or a
# field this nmc does not know, and is reported rather than silently ignored.
_FIELDS = {
    "target": ("name", "id", "clock_mhz"),
    "memory": ("dram_words", "spad_words", "acc_words"),
    "matrix": ("rows", "cols", "latency", "sparse_patterns"),
    "vector": ("lanes", "latency", "cost"),
    "dma": ("bytes_per_cycle", "latency", "row_overhead"),
    "datapath": ("matrix_operands", "accumulator", "vector"),
}


def _check_unknown(table: dict) -> None:
    for section, value in table.items():
        if section not in _FIELDS:
            close = difflib.get_close_matches(section, list(_FIELDS), 1)
            hint = f" (did you mean [{close[0]}]?)" if close else ""
            raise TargetError(
                f"unknown section [{section}]{hint} (sections: {', '.join(_FIELDS)})"
            )
        if not isinstance(value, dict):
            continue  # reported by _section
        for key in value:
            if key not in _FIELDS[section]:
                close = difflib.get_close_matches(key, _FIELDS[section], 1)
                hint = f" (did you mean {close[0]}?)" if close else ""
                raise TargetError(
                    f"unknown field [{section}] {key}{hint} "
                    f"(fields of [{section}]: {', '.join(_FIELDS[section])})"
                )


def _datapath(table: dict) -> dict[str, str]:
    """The [datapath] section, checked against the datapaths this nmc models."""
    operands = _get(table, "datapath", "matrix_operands", str, None)
    accumulator = _get(table, "datapath", "accumulator", str, None)
    vector = _get(table, "datapath", "vector", str, None)
    if operands not in DATAPATHS:
        raise TargetError(f"[datapath] matrix_operands = {operands!r}: must be one of "
                          f"{', '.join(MATRIX_OPERAND_TYPES)}")
    if accumulator != DATAPATHS[operands]:
        raise TargetError(f"[datapath] accumulator = {accumulator!r}: {operands} operands "
                          f"accumulate in {DATAPATHS[operands]}")
    if vector != "f32":
        raise TargetError(f"[datapath] vector = {vector!r}: the vector unit computes in f32")
    return dict(matrix_operands=operands, accumulator=accumulator, vector_type=vector)


def parse_target(table: dict, source: str = "<memory>") -> Target:
    _check_unknown(table)
    patterns = _get(table, "matrix", "sparse_patterns", list, None)
    cost = _get(table, "vector", "cost", dict, None)
    fns = _vector_fn_names()
    for fn in fns:
        value = cost.get(fn)
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            what = "missing" if fn not in cost else f"= {value!r}"
            raise TargetError(f"[vector.cost] {fn} {what}: must be a positive integer")
    unknown = sorted(set(cost) - set(fns))
    if unknown:
        raise TargetError(
            f"unknown field [vector.cost] {unknown[0]} (vector functions: {', '.join(fns)})"
        )
    words = dict(maximum=MAX_MEMORY_WORDS)
    return Target(
        name=_name(table),
        id=_get(table, "target", "id", int, 0, (1 << 32) - 1),
        clock_mhz=_get(table, "target", "clock_mhz", float),
        dram_words=_get(table, "memory", "dram_words", int, **words),
        spad_words=_get(table, "memory", "spad_words", int, **words),
        acc_words=_get(table, "memory", "acc_words", int, **words),
        mx_rows=_get(table, "matrix", "rows", int),
        mx_cols=_get(table, "matrix", "cols", int),
        mx_latency=_get(table, "matrix", "latency", int, 0),
        sparse_patterns=tuple(_parse_pattern(p) for p in patterns),
        vec_lanes=_get(table, "vector", "lanes", int),
        vec_latency=_get(table, "vector", "latency", int, 0),
        vec_cost={fn: cost[fn] for fn in fns},
        dma_bytes_per_cycle=_get(table, "dma", "bytes_per_cycle", int),
        dma_latency=_get(table, "dma", "latency", int, 0),
        dma_row_overhead=_get(table, "dma", "row_overhead", int, 0),
        source=source,
        **_datapath(table),
    )


def builtin_targets() -> list[str]:
    return sorted(p.stem for p in TARGETS_DIR.glob("*.toml"))


def _is_builtin_name(name: str) -> bool:
    return re.fullmatch(r"[A-Za-z0-9_\-]+", name) is not None


def target_file(name_or_path: str) -> Path | None:
    """The file a `--target` value names; None for a built-in target's name."""
    return None if _is_builtin_name(str(name_or_path)) else Path(name_or_path)


def load_target(name_or_path: str = DEFAULT_TARGET, builtin_only: bool = False) -> Target:
    """A built-in target by name (a plain word: letters, digits, `_`, `-`), or the target
    file at a path (anything else). `builtin_only` refuses paths: used for the target name
    recorded in a prog.bin, which must not name a file. Raises TargetError."""
    name = str(name_or_path)
    if _is_builtin_name(name) or builtin_only:
        path = TARGETS_DIR / f"{name}.toml"
        if not _is_builtin_name(name) or not path.is_file():
            raise TargetError(
                f"unknown target '{name}' (built-in targets: {', '.join(builtin_targets())})"
            )
    else:
        path = Path(name)
    try:
        if path.exists() and not path.is_dir() and not path.is_file():
            raise TargetError(f"cannot read target file {path}: not a regular file")
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise TargetError(f"cannot read target file {path}: {e.strerror or e}") from None
    except UnicodeDecodeError:
        raise TargetError(f"target file {path} is not valid TOML: not UTF-8 text") from None
    try:
        table = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise TargetError(f"target file {path} is not valid TOML: {e}") from None
    try:
        return parse_target(table, str(path))
    except TargetError as e:
        raise TargetError(f"target file {path}: {e}") from None

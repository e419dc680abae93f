"""Strict JSON, as nmc reads every JSON it is given: prog.bin's sections, assembly `.meta`,
per-layer sparsity and keep-ratio files.

A key given twice in one object is an error: Python's json module keeps the last of
repeated keys, silently dropping the first, which turns a copy-and-paste slip in a
configuration file into another configuration (LLVM's option parser refuses repeats for
the same reason). NaN and Infinity are not JSON, and a number that overflows a double is
refused rather than read as infinity.
"""

from __future__ import annotations

import json
import math
from typing import Any


class DuplicateKeyError(ValueError):
    """An object of the JSON text names one key twice."""

    def __init__(self, key: str):
        super().__init__(f"duplicate key {key!r}: each key may appear once in an "
                         "object")
        self.key = key


def _reject_duplicates(pairs):
    out = {}
    for k, v in pairs:
        if k in out:
            raise DuplicateKeyError(k)
        out[k] = v
    return out


def _reject_constant(name):
    raise ValueError(f"{name} is not JSON")


def _finite_float(text):
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"number {text} overflows a double")
    return value


def parse_json(text: str) -> Any:
    """Strict JSON: no duplicate keys, no NaN/Infinity. Raises ValueError (a syntax error:
    json.JSONDecodeError, with its line and column; a repeated key: DuplicateKeyError)."""
    try:
        return json.loads(
            text,
            object_pairs_hook=_reject_duplicates,
            parse_constant=_reject_constant,
            parse_float=_finite_float,
        )
    except RecursionError:
        raise ValueError("nested too deeply") from None

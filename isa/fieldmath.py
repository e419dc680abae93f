"""Integer arithmetic on instruction field values: ints, or numpy int arrays.

The per-instruction facts (footprints and MACs in `nmc.isa.table`, cycles in
`nmc.runtime.timing`) are each written once, as formulas over an instruction's field
values. The emulator's fast path evaluates them on arrays holding the fields of many
instructions of one opcode at once; everything else passes the ints of one instruction.
`+ - * // %` and comparisons already work on both; these helpers cover the rest, and return
Python ints for int arguments.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np


def _any_array(*values: Any) -> bool:
    return any(isinstance(v, np.ndarray) for v in values)


def ceil_div(a, b):
    """ceil(a / b) for b > 0."""
    return -(-a // b)


def maximum(a, b):
    """max(a, b), elementwise."""
    return np.maximum(a, b) if _any_array(a, b) else max(a, b)


def where(cond, yes, no):
    """`yes if cond else no`, elementwise."""
    return np.where(cond, yes, no) if _any_array(cond, yes, no) else (yes if cond else no)


def log2_ceil(n):
    """ceil(log2(n)) for n >= 1 (0 for n <= 1), elementwise."""
    if _any_array(n):
        return np.ceil(np.log2(np.maximum(n, 1))).astype(np.int64)
    return max(0, (int(n) - 1).bit_length())


def lookup(table: Sequence[int], index):
    """table[index], elementwise over an index array."""
    if _any_array(index):
        return np.asarray(table, dtype=np.int64)[index]
    return table[index]

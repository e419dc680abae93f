"""Hypothesis strategies for ISA objects, shared by the tests/test_isa_*.py files.

Drawn from the table (every opcode, every field over its whole legal range; f32 fields over
all 2**32 bit patterns, NaN payloads included) so new instructions are covered for free.
"""

from __future__ import annotations

import numpy as np
from hypothesis import strategies as st

from nmc.isa.container import LayerRange, Program, Symbol
from nmc.isa.table import OPS, Field, Instr, OpSpec


def field_values(f: Field) -> st.SearchStrategy[int]:
    if f.enum is not None:
        return st.sampled_from([int(e) for e in f.enum])
    return st.integers(0, f.max_value)


def instrs_of(spec: OpSpec) -> st.SearchStrategy[Instr]:
    return st.fixed_dictionaries({f.name: field_values(f) for f in spec.all_fields}).map(
        lambda values: Instr.make(spec.mnemonic, **values)
    )


instrs = st.one_of([instrs_of(op) for op in OPS])

names = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\0"), min_size=1, max_size=12)
target_names = names.filter(lambda s: len(s.encode()) <= 32)

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**64), 2**64)
    | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=8,
)


def f32_arrays(size: int) -> st.SearchStrategy[np.ndarray]:
    """Arbitrary float32 bit patterns (NaN payloads, -0.0, denormals)."""
    return st.lists(st.integers(0, 2**32 - 1), min_size=size, max_size=size).map(
        lambda bits: np.array(bits, dtype=np.uint32).view(np.float32)
    )


@st.composite
def programs(draw, max_instrs: int = 12) -> Program:
    instructions = draw(st.lists(instrs, max_size=max_instrs))
    # Constants laid out left to right with gaps, so they never overlap.
    constants, addr = [], 0
    for _ in range(draw(st.integers(0, 3))):
        addr += draw(st.integers(0, 64))
        size = draw(st.integers(0, 6))
        constants.append((addr, draw(f32_arrays(size))))
        addr += size
    dram_words = addr + 512 + draw(st.integers(0, 1 << 20))  # room for any symbol
    symbols, seen = [], set()
    for _ in range(draw(st.integers(0, 3))):
        kind = draw(st.sampled_from(["input", "output"]))
        name = draw(names)
        if (kind, name) in seen:
            continue
        seen.add((kind, name))
        shape = tuple(draw(st.lists(st.integers(0, 8), max_size=3)))
        words = int(np.prod(shape, dtype=np.int64))
        symbols.append(Symbol(name, kind, shape, "f32", draw(st.integers(0, dram_words - words))))
    debug = []
    n = len(instructions)
    for _ in range(draw(st.integers(0, 3))):
        start = draw(st.integers(0, n))
        debug.append(LayerRange(draw(names), draw(names), start, draw(st.integers(start, n))))
    meta = draw(st.dictionaries(st.text(max_size=8), json_values, max_size=4))
    return Program(
        draw(target_names), draw(st.integers(0, 2**32 - 1)), dram_words,
        instructions, constants, symbols, debug, meta,
    )

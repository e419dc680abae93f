"""Small builders shared by the emulator tests (tests/test_emulator_*.py)."""

from __future__ import annotations

from typing import Iterable

import numpy as np

from nmc.isa.container import LayerRange, Program, Symbol
from nmc.isa.table import Instr, Mem, Unit
from nmc.isa.target import load_target

TARGET = load_target("sta_ref")
SPAD, ACC, DRAM = int(Mem.SPAD), int(Mem.ACC), int(Mem.DRAM)
LOAD, STORE, MATRIX, VECTOR = (1 << int(u) for u in (Unit.LOAD, Unit.STORE, Unit.MATRIX, Unit.VECTOR))
_BIT = {Unit.LOAD: LOAD, Unit.STORE: STORE, Unit.MATRIX: MATRIX, Unit.VECTOR: VECTOR}


def I(mnemonic: str, **fields: int) -> Instr:  # noqa: E743 - reads like assembly
    return Instr.make(mnemonic, **fields)


def f32bits(x: float) -> int:
    return int(np.array(x, dtype=np.float32).view(np.uint32))


def program(
    instrs: Iterable[Instr],
    *,
    inputs: Iterable[tuple[str, tuple[int, ...], int]] = (),
    outputs: Iterable[tuple[str, tuple[int, ...], int]] = (),
    constants: Iterable[tuple[int, np.ndarray]] = (),
    debug: Iterable[tuple[str, str, int, int]] = (),
    dram_words: int = 1 << 16,
    halt: bool = True,
    target=TARGET,
) -> Program:
    instrs = list(instrs) + ([I("halt")] if halt else [])
    symbols = [Symbol(n, "input", tuple(s), "f32", a) for n, s, a in inputs]
    symbols += [Symbol(n, "output", tuple(s), "f32", a) for n, s, a in outputs]
    return Program(
        target_name=target.name,
        target_id=target.id,
        dram_words=dram_words,
        instructions=instrs,
        constants=[(a, np.asarray(d, dtype=np.float32).reshape(-1)) for a, d in constants],
        symbols=symbols,
        debug=[LayerRange(*d) for d in debug],
    )


def serialize(instrs: list[Instr]) -> list[Instr]:
    """Add tokens so that every instruction starts after the previous one ended (each hands
    a token to the next one when they are on different units)."""
    out = [instr for instr in instrs]
    for i in range(1, len(out)):
        prev, cur = out[i - 1], out[i]
        if prev.unit != cur.unit:
            out[i - 1] = prev.with_fields(signal=prev["signal"] | _BIT[cur.unit])
            out[i] = cur.with_fields(wait=cur["wait"] | _BIT[prev.unit])
    return out

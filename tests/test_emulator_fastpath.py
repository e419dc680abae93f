"""The emulator's fast path (nmc.runtime.fastpath) against its reference simulation: same
footprints as the ISA table, and the same outputs, timing, statistics and errors on random
programs, with tokens from insert-tokens (race-free) and with random token masks (races,
deadlocks, tokens from later instructions)."""

from __future__ import annotations

import random

import numpy as np
import pytest
from hypothesis import given, settings

from emulator_helpers import TARGET, program
from isa_strategies import instrs
from nmc.isa.tokens import assign_tokens
from nmc.isa.table import Instr, Mem, VBinFn, VRowFn, VUnFn
from nmc.runtime.emulator import EmulatorError, run_program
from nmc.runtime.fastpath import footprint_slots


def _table_regions(instr: Instr):
    reads, writes = instr.footprint()
    return [sorted((int(r.mem), r.start, r.end) for r in regs if r.length > 0)
            for regs in (reads, writes)]


@settings(max_examples=300, deadline=None)
@given(instrs)
def test_array_footprints_match_the_table(instr):
    if instr.mnemonic == "halt":
        return
    fields = {k: np.array([v], np.int64) for k, v in instr.fields.items()}
    reads, writes = footprint_slots(instr.spec, fields)
    got = [sorted((int(m[0]), int(s[0]), int(e[0])) for m, s, e in slots if m[0] >= 0)
           for slots in (reads, writes)]
    assert got == _table_regions(instr)


# ---------------------------------------------------------------------------- random programs

DRAM_WORDS = 4096


def _random_instr(rng: random.Random) -> Instr:
    """A valid instruction on small blocks (so that footprints often overlap)."""
    kind = rng.choice(["load", "load", "store", "matmul", "vbin", "vun", "vrow"])
    rows, cols = rng.randint(1, 6), rng.randint(1, 12)
    onchip = lambda: rng.choice([Mem.SPAD, Mem.ACC])  # noqa: E731
    addr = lambda: rng.randrange(0, 256)  # noqa: E731
    if kind in ("load", "store"):
        stride = rng.choice([cols, cols + rng.randint(0, 5)])
        return Instr.make(kind, mem=onchip(), local=addr(), dram=rng.randrange(0, 1024),
                          rows=rows, cols=cols, stride=stride)
    if kind == "matmul":
        return Instr.make("matmul", a=addr(), w=addr(), out=addr(), m=rows, k=cols,
                          n=rng.randint(1, 6), accumulate=rng.randint(0, 1),
                          transpose_w=rng.randint(0, 1))
    if kind == "vbin":
        return Instr.make("vbin", fn=rng.choice(list(VBinFn)), dst_mem=onchip(), dst=addr(),
                          a_mem=onchip(), a=addr(), b_mem=onchip(), b=addr(), rows=rows,
                          cols=cols, bcast=rng.randint(0, 1))
    if kind == "vun":
        return Instr.make("vun", fn=rng.choice([VUnFn.COPY, VUnFn.RELU, VUnFn.SCALE,
                                                VUnFn.GELU, VUnFn.EXP]),
                          dst_mem=onchip(), dst=addr(), src_mem=onchip(), src=addr(),
                          rows=rows, cols=cols, imm=0x3F000000)
    return Instr.make("vrow", fn=rng.choice(list(VRowFn)), dst_mem=onchip(), dst=addr(),
                      src_mem=onchip(), src=addr(), param=addr(), rows=rows, cols=cols,
                      imm=0x3727C5AC)


def _compare(prog, inputs):
    outcomes = []
    for fast in (True, False):
        try:
            r = run_program(prog, inputs, TARGET, trace=True, fast=fast)
            outcomes.append(("ok", r))
        except EmulatorError as e:
            outcomes.append(("error", str(e)))
    (kind_f, fast), (kind_r, ref) = outcomes
    assert kind_f == kind_r, (fast, ref)
    if kind_f == "error":
        assert fast == ref
        return "error"
    np.testing.assert_array_equal(fast.outputs["y"], ref.outputs["y"])
    for field in ("trace", "total_cycles", "busy_cycles", "stall_cycles", "instruction_counts",
                  "layers", "matrix_macs", "dram_bytes_read", "dram_bytes_written",
                  "leftover_tokens", "instructions_executed"):
        assert getattr(fast, field) == getattr(ref, field), field
    return "ok"


@pytest.mark.parametrize("seed", range(40))
def test_fast_path_equals_reference_on_tokened_programs(seed):
    rng = random.Random(seed)
    body = assign_tokens([_random_instr(rng) for _ in range(rng.randint(1, 60))])
    x = np.random.default_rng(seed).standard_normal(1024).astype(np.float32)
    prog = program(body, inputs=[("x", (1024,), 0)], outputs=[("y", (DRAM_WORDS,), 0)],
                   dram_words=DRAM_WORDS, debug=[("first", "k", 0, len(body) // 2),
                                                 ("rest", "k", len(body) // 2, len(body))])
    assert _compare(prog, {"x": x}) == "ok"


@pytest.mark.parametrize("seed", range(60))
def test_fast_path_equals_reference_on_random_tokens(seed):
    # random masks: races, deadlocks and out-of-order tokens must give the same error or
    # the same result on both paths
    rng = random.Random(1000 + seed)
    body = []
    for _ in range(rng.randint(1, 30)):
        instr = _random_instr(rng)
        own = 1 << int(instr.unit)
        body.append(instr.with_fields(wait=rng.randrange(16) & ~own & rng.choice([0, 15]),
                                      signal=rng.randrange(16) & ~own & rng.choice([0, 15])))
    x = np.random.default_rng(seed).standard_normal(1024).astype(np.float32)
    prog = program(body, inputs=[("x", (1024,), 0)], outputs=[("y", (DRAM_WORDS,), 0)],
                   dram_words=DRAM_WORDS)
    _compare(prog, {"x": x})


@pytest.mark.parametrize("seed", range(60))
def test_fast_path_equals_reference_with_missing_waits(seed):
    # insert-tokens' masks with some waits dropped: leftover tokens, and races that the
    # fast path must find (and report) exactly like the reference
    rng = random.Random(2000 + seed)
    body = assign_tokens([_random_instr(rng) for _ in range(rng.randint(2, 60))])
    body = [i.with_fields(wait=i["wait"] & rng.randrange(16)) if rng.random() < 0.2 else i
            for i in body]
    x = np.random.default_rng(seed).standard_normal(1024).astype(np.float32)
    prog = program(body, inputs=[("x", (1024,), 0)], outputs=[("y", (DRAM_WORDS,), 0)],
                   dram_words=DRAM_WORDS)
    _compare(prog, {"x": x})

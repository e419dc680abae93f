"""Every way a program or its inputs can be wrong is an EmulatorError with a clear message."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from emulator_helpers import ACC, DRAM, LOAD, MATRIX, SPAD, STORE, TARGET, VECTOR, I, program
from nmc.common.errors import NmcError
from nmc.isa.table import VUnFn
from nmc.runtime.emulator import EmulatorError, run_program


def test_emulator_error_is_an_nmc_error():
    assert issubclass(EmulatorError, NmcError)


DEADLOCKS = {
    "every blocked unit with pc and instruction": (
        [
            I("load", mem=SPAD, local=0, dram=0, rows=1, cols=16, stride=16),  # signals nobody
            I("matmul", a=0, w=0, out=0, m=1, k=16, n=1, wait=LOAD, signal=STORE),
            I("store", mem=ACC, local=0, dram=64, rows=1, cols=1, stride=1, wait=MATRIX),
        ],
        ["matrix waits for a token from load at pc 1: matmul",
         "store waits for a token from matrix at pc 2: store"]),
    # the vector op waits for a token the *later* vector op was to trigger: circular
    "a signal that comes too late in the same queue": (
        [
            I("vun", fn=VUnFn.COPY, dst_mem=SPAD, dst=0, src_mem=SPAD, src=16, rows=1, cols=16, wait=LOAD),
            I("vun", fn=VUnFn.COPY, dst_mem=SPAD, dst=0, src_mem=SPAD, src=16, rows=1, cols=16, signal=LOAD),
            I("load", mem=SPAD, local=32, dram=0, rows=1, cols=16, stride=16, wait=VECTOR, signal=VECTOR),
        ],
        ["vector waits for a token from load at pc 0: vun",
         "load waits for a token from vector at pc 2: load"]),
}


@pytest.mark.parametrize("case", sorted(DEADLOCKS))
def test_deadlock_is_reported_with_each_blocked_unit(case):
    instrs, blocked = DEADLOCKS[case]
    with pytest.raises(EmulatorError) as info:
        run_program(program(instrs), {}, TARGET)
    msg = str(info.value)
    assert msg.startswith("deadlock")
    for line in blocked:
        assert line in msg


def test_out_of_bounds_spad_access():
    prog = program([
        I("load", mem=SPAD, local=0, dram=0, rows=1, cols=16, stride=16),
        I("load", mem=SPAD, local=65530, dram=0, rows=1, cols=16, stride=16),
    ])
    with pytest.raises(EmulatorError) as info:
        run_program(prog, {}, TARGET)
    msg = str(info.value)
    assert msg.startswith("out-of-bounds access to SPAD [65530, 65546) (size 65536) at pc 1: load")
    text = msg.split("at pc 1:")[1]  # the instruction text shows the operands
    assert "65530" in text or "0xfffa" in text


def test_out_of_bounds_strided_dram_read():
    # 4 rows of 8 words, stride 100: the last row ends at 300 + 8 > 256 DRAM words
    prog = program([I("load", mem=SPAD, local=0, dram=0, rows=4, cols=8, stride=100)], dram_words=256)
    with pytest.raises(EmulatorError, match=r"out-of-bounds access to DRAM \[0, 308\) \(size 256\) at pc 0"):
        run_program(prog, {}, TARGET)


def test_out_of_bounds_accumulator():
    prog = program([I("matmul", a=0, w=0, out=16384 - 10, m=4, k=4, n=4)])
    with pytest.raises(EmulatorError, match=r"out-of-bounds access to ACC \[16374, 16390\) \(size 16384\) at pc 0: matmul"):
        run_program(prog, {}, TARGET)


def test_no_halt():
    prog = program([I("load", mem=SPAD, local=0, dram=0, rows=1, cols=1, stride=1)], halt=False)
    with pytest.raises(EmulatorError, match="program has no halt"):
        run_program(prog, {}, TARGET)


def test_instructions_after_halt_are_not_run():
    prog = program([I("halt"), I("load", mem=SPAD, local=65535, dram=0, rows=1, cols=2, stride=2)],
                   halt=False)
    assert run_program(prog, {}, TARGET).instructions_executed == 0


def test_halt_with_token_masks():
    prog = program([I("halt", wait=LOAD)], halt=False)
    with pytest.raises(EmulatorError, match="halt .* masks must be 0 at pc 0"):
        run_program(prog, {}, TARGET)


@pytest.mark.parametrize("mask", ["wait", "signal"])
def test_token_bit_for_own_unit(mask):
    prog = program([
        I("vun", fn=VUnFn.COPY, dst_mem=SPAD, dst=0, src_mem=SPAD, src=0, rows=1, cols=1),
        I("matmul", a=0, w=0, out=0, m=1, k=1, n=1, **{mask: MATRIX | VECTOR}),
    ])
    with pytest.raises(EmulatorError, match=rf"'{mask}' mask names the instruction's own unit \(matrix\) at pc 1: matmul"):
        run_program(prog, {}, TARGET)


def test_vector_operand_in_dram():
    prog = program([I("vun", fn=VUnFn.COPY, dst_mem=DRAM, dst=0, src_mem=SPAD, src=0, rows=1, cols=1)])
    with pytest.raises(EmulatorError, match=r"'dst_mem' = DRAM: the operand must be in SPAD or ACC at pc 0"):
        run_program(prog, {}, TARGET)


def test_undefined_function_number():
    prog = program([I("vun", fn=15, dst_mem=SPAD, dst=0, src_mem=SPAD, src=0, rows=1, cols=1)])
    with pytest.raises(EmulatorError, match=r"field 'fn' = 15 is not a VUnFn at pc 0"):
        run_program(prog, {}, TARGET)


def test_instruction_budget():
    prog = program([I("load", mem=SPAD, local=0, dram=0, rows=1, cols=1, stride=1)] * 5)
    with pytest.raises(EmulatorError, match="instruction budget of 3 exceeded before halt at pc 3"):
        run_program(prog, {}, TARGET, max_instructions=3)
    assert run_program(prog, {}, TARGET, max_instructions=5).instructions_executed == 5


def test_target_mismatch():
    other = dataclasses.replace(TARGET, name="other-chip", id=7)
    prog = program([], target=other)
    with pytest.raises(EmulatorError, match=rf"built for target 'other-chip' \(id 7\).*target '{TARGET.name}' \(id {TARGET.id}\)"):
        run_program(prog, {}, TARGET)
    prog = program([], target=dataclasses.replace(TARGET, id=2))  # same name, other id
    with pytest.raises(EmulatorError, match="built for target"):
        run_program(prog, {}, TARGET)


def test_program_dram_larger_than_target():
    prog = program([], dram_words=TARGET.dram_words + 1)
    with pytest.raises(EmulatorError, match=f"DRAM words but target '{TARGET.name}' has"):
        run_program(prog, {}, TARGET)


PROG_XY = program([], inputs=[("x", (2, 3), 0), ("y", (4,), 16)])
X, Y = np.zeros((2, 3), np.float32), np.zeros(4, np.float32)


def test_input_shape_mismatch():
    with pytest.raises(EmulatorError, match=r"input 'x' has shape \(3, 2\); expected \(2, 3\)"):
        run_program(PROG_XY, {"x": X.T, "y": Y}, TARGET)


@pytest.mark.parametrize("dtype", [np.int32, np.int64, np.bool_, np.complex64])
def test_input_non_floating_dtype_rejected(dtype):
    with pytest.raises(EmulatorError, match=rf"input 'x' has dtype {np.dtype(dtype)}; expected f32"):
        run_program(PROG_XY, {"x": X.astype(dtype), "y": Y}, TARGET)


@pytest.mark.parametrize("dtype", [np.float16, np.float64])
def test_input_other_float_dtypes_accepted(dtype):
    run_program(PROG_XY, {"x": X.astype(dtype), "y": Y.astype(dtype)}, TARGET)


def test_missing_and_extra_inputs():
    with pytest.raises(EmulatorError, match=r"missing input\(s\) 'y'.*the program takes: x\[2, 3\], y\[4\]"):
        run_program(PROG_XY, {"x": X}, TARGET)
    with pytest.raises(EmulatorError, match=r"unexpected input\(s\) 'z'"):
        run_program(PROG_XY, {"x": X, "y": Y, "z": Y}, TARGET)


def test_nan_inputs_are_allowed():
    prog = program(
        [I("load", mem=SPAD, local=0, dram=0, rows=1, cols=4, stride=4, signal=STORE),
         I("store", mem=SPAD, local=0, dram=8, rows=1, cols=4, stride=4, wait=LOAD)],
        inputs=[("x", (4,), 0)], outputs=[("y", (4,), 8)],
    )
    x = np.array([np.nan, np.inf, -np.inf, 1.0], np.float32)
    np.testing.assert_array_equal(run_program(prog, {"x": x}, TARGET).outputs["y"], x)


def test_instruction_text_falls_back_without_the_disassembler(monkeypatch):
    import sys

    from nmc.runtime.errors import instr_text

    monkeypatch.setitem(sys.modules, "nmc.isa.asm", None)  # import now raises ImportError
    text = instr_text(I("load", mem=SPAD, local=5, dram=0, rows=1, cols=2, stride=2))
    assert text == "load wait=0 signal=0 mem=1 local=5 dram=0 rows=1 cols=2 stride=2"

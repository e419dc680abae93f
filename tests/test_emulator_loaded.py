"""`LoadedProgram` (a program decoded once, run on many inputs) and the overlapped execution
of the matrix unit's instructions (runtime/overlap.py): both must give exactly what a fresh,
sequential run gives."""

from __future__ import annotations

import random
import threading

import numpy as np
import pytest

from emulator_helpers import SPAD, TARGET, I, program, serialize
from nmc.compiler.commands import compile_model
from nmc.compiler.transforms.insert_tokens import assign_tokens
from nmc.models.registry import build_model, export_to_file
from nmc.runtime import overlap
from nmc.runtime.emulator import LoadedProgram, run_program
from test_emulator_fastpath import DRAM_WORDS, _random_instr

SMALL = {"img_size": 32, "patch": 8, "dim": 64, "depth": 2, "heads": 2, "num_classes": 10}


@pytest.fixture(scope="module")
def small_deit(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("deit")
    module, example = build_model("deit_tiny", SMALL, seed=0)
    export_to_file(module, example, tmp / "m.pt")
    prog = compile_model(tmp / "m.pt")
    (name,) = [s.name for s in prog.symbols if s.kind == "input"]
    return prog, name, example.shape


def _out(result):
    (y,) = result.outputs.values()
    return y


def test_repeated_runs_equal_fresh_runs(small_deit):
    prog, name, shape = small_deit
    loaded = LoadedProgram(prog, TARGET, fill=float("nan"))
    rng = np.random.default_rng(0)
    xs = [rng.standard_normal(shape).astype(np.float32) for _ in range(3)]
    for x in xs + xs[::-1]:  # a run must not see what the previous one left
        got = loaded.run({name: x}, trace=True)
        want = run_program(prog, {name: x}, TARGET, fill=float("nan"), trace=True)
        np.testing.assert_array_equal(_out(got), _out(want))
        assert got.trace == want.trace and got.total_cycles == want.total_cycles
        assert got.layers == want.layers


def test_overlapped_matrix_unit_is_bit_identical_to_sequential(small_deit, monkeypatch):
    monkeypatch.setattr(overlap, "MIN_MATRIX_INSTRUCTIONS", 1)
    monkeypatch.setattr(overlap, "usable_cores", lambda: 2)
    prog, name, shape = small_deit
    loaded = LoadedProgram(prog, TARGET)
    x = {name: np.random.default_rng(1).standard_normal(shape).astype(np.float32)}
    first = loaded.run(x)
    assert loaded._plan.overlapped is not None
    sequential = run_program(prog, x, TARGET, check_races=False)  # no race check: no overlap
    np.testing.assert_array_equal(_out(first), _out(sequential))


def test_a_run_sees_the_constants_even_where_the_previous_run_stored():
    # the program stores its input over its own constant, then reads the constant region
    # back to the output: each run must start from the constant again
    body = serialize([
        I("load", mem=SPAD, local=0, dram=0, rows=1, cols=4, stride=4),     # constant
        I("store", mem=SPAD, local=0, dram=8, rows=1, cols=4, stride=4),    # -> output
        I("load", mem=SPAD, local=4, dram=16, rows=1, cols=4, stride=4),    # input
        I("store", mem=SPAD, local=4, dram=0, rows=1, cols=4, stride=4),    # over the constant
    ])
    prog = program(body, inputs=[("x", (4,), 16)], outputs=[("y", (4,), 8)],
                   constants=[(0, np.arange(4, dtype=np.float32))], dram_words=32)
    loaded = LoadedProgram(prog, TARGET)
    for x in (np.full(4, 7, np.float32), np.full(4, 9, np.float32)):
        np.testing.assert_array_equal(loaded.run({"x": x}).outputs["y"], np.arange(4))


def test_input_errors_leave_the_loaded_program_usable(small_deit):
    prog, name, shape = small_deit
    loaded = LoadedProgram(prog, TARGET)
    with pytest.raises(Exception, match="shape"):
        loaded.run({name: np.zeros((1, 2), np.float32)})
    x = np.random.default_rng(2).standard_normal(shape).astype(np.float32)
    np.testing.assert_array_equal(_out(loaded.run({name: x})),
                                  _out(run_program(prog, {name: x}, TARGET)))


@pytest.mark.parametrize("seed", range(20))
def test_overlap_on_random_tokened_programs(seed, monkeypatch):
    monkeypatch.setattr(overlap, "MIN_MATRIX_INSTRUCTIONS", 1)
    monkeypatch.setattr(overlap, "usable_cores", lambda: 2)
    rng = random.Random(5000 + seed)
    body = assign_tokens([_random_instr(rng) for _ in range(rng.randint(2, 60))])
    x = np.random.default_rng(seed).standard_normal(1024).astype(np.float32)
    prog = program(body, inputs=[("x", (1024,), 0)], outputs=[("y", (DRAM_WORDS,), 0)],
                   dram_words=DRAM_WORDS)
    fast = run_program(prog, {"x": x}, TARGET)
    ref = run_program(prog, {"x": x}, TARGET, fast=False)
    np.testing.assert_array_equal(fast.outputs["y"], ref.outputs["y"])


# ------------------------------------------------------------------- the two-thread protocol


def _schedule(seed):
    """A random execution order of matrix (M) and other (O) instructions with modelled
    start/end cycles: the matrix unit in order, others anywhere."""
    rng = random.Random(seed)
    n = rng.randint(1, 80)
    is_matrix = np.array([rng.random() < 0.4 for _ in range(n)])
    starts = np.cumsum([rng.randint(0, 3) for _ in range(n)])
    ends = np.empty(n, np.int64)
    free = 0
    for p in range(n):  # a matrix instruction ends after the previous one
        ends[p] = max(starts[p], free) + rng.randint(1, 6) if is_matrix[p] else starts[p] + rng.randint(1, 6)
        if is_matrix[p]:
            free = ends[p]
    return is_matrix, starts, ends


@pytest.mark.parametrize("seed", range(30))
def test_overlap_orders_what_the_schedule_orders(seed):
    is_matrix, starts, ends = _schedule(seed)
    log, lock = [], threading.Lock()

    def thunk(p):
        def run():
            with lock:
                log.append(p)
        return run

    run = overlap.OverlappedRun([thunk(p) for p in range(len(starts))], is_matrix,
                                starts, ends)
    run.run()
    assert sorted(log) == list(range(len(starts)))  # every instruction exactly once
    at = {p: i for i, p in enumerate(log)}
    for j in range(len(starts)):
        for i in range(j):
            if is_matrix[i] != is_matrix[j]:
                if is_matrix[j]:  # a matrix instruction runs after every other one before it
                    assert at[i] < at[j]
                elif ends[i] <= starts[j]:  # others after the matrix work that ended
                    assert at[i] < at[j]
            elif is_matrix[i]:
                assert at[i] < at[j]  # the matrix unit in order
            else:
                assert at[i] < at[j]  # the main thread in order


@pytest.mark.parametrize("side", ["matrix", "other"])
def test_overlap_raises_the_first_failure_without_hanging(side):
    is_matrix = np.array([True, False] * 50)
    starts = np.arange(100)
    ends = starts + 1
    fail_at = 41 if side == "matrix" else 40

    def thunk(p):
        def run():
            if p == fail_at:
                raise ValueError(f"boom at {p}")
        return run

    run = overlap.OverlappedRun([thunk(p) for p in range(100)], is_matrix, starts, ends)
    with pytest.raises(ValueError, match=f"boom at {fail_at}") as info:
        run.run()
    assert info.value.position == fail_at

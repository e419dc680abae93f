"""`LoadedProgram` (a program decoded once, run on many inputs): every run must give exactly
what a fresh `run_program` gives for its inputs alone."""

from __future__ import annotations

import numpy as np
import pytest

from emulator_helpers import SPAD, TARGET, I, program, serialize
from nmc.compiler.driver import compile_model
from nmc.models.registry import build_model, export_to_file
from nmc.runtime.emulator import LoadedProgram, run_program

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


def test_a_run_sees_the_constants_even_where_the_previous_run_scattered():
    # the block a gstore writes depends on the input: run 2 writes elsewhere than run 1,
    # so the block run 1 wrote must hold its constant again
    body = serialize([
        I("load", mem=SPAD, local=0, dram=16, rows=1, cols=1, stride=1),    # the index
        I("load", mem=SPAD, local=16, dram=20, rows=1, cols=4, stride=4),   # the values
        I("gstore", mem=SPAD, local=16, dram=0, idx=0, count=1, block=4, stride=4, limit=2),
    ])
    prog = program(body, inputs=[("i", (1,), 16), ("v", (4,), 20)],
                   outputs=[("table", (8,), 0)],
                   constants=[(0, np.arange(8, dtype=np.float32))], dram_words=32)
    loaded = LoadedProgram(prog, TARGET)
    for index in (1.0, 0.0):
        inputs = {"i": np.array([index], np.float32), "v": np.full(4, -1, np.float32)}
        np.testing.assert_array_equal(loaded.run(inputs).outputs["table"],
                                      run_program(prog, inputs, TARGET).outputs["table"])


def test_input_errors_leave_the_loaded_program_usable(small_deit):
    prog, name, shape = small_deit
    loaded = LoadedProgram(prog, TARGET)
    with pytest.raises(Exception, match="shape"):
        loaded.run({name: np.zeros((1, 2), np.float32)})
    x = np.random.default_rng(2).standard_normal(shape).astype(np.float32)
    np.testing.assert_array_equal(_out(loaded.run({name: x})),
                                  _out(run_program(prog, {name: x}, TARGET)))

"""The N:M sparse backend pieces (issue 5): the sparse linear kernel's counted cost,
its k tiles, the packed DRAM allocation, the fast path against the reference emulator, and
`nmc inspect`."""

from __future__ import annotations

import random
import sys
from pathlib import Path

import numpy as np
import pytest

from nmc.common import nm_format
from nmc.compiler.kernels.linear import LINEAR, LinearProblem
from nmc.isa.target import load_target
from nmc.models.registry import build_model, export_to_file

sys.path.insert(0, str(Path(__file__).parent))
from kernel_helpers import emitted_and_costed  # noqa: E402
from test_nm_sparse import compile_sparse  # noqa: E402

TARGET = load_target()
PATTERNS = [(1, 4), (2, 4), (1, 8), (2, 8), (4, 8)]


def test_sparse_linear_closed_form_cost_matches_the_emitted_kernel():
    rng = random.Random(0)
    for _ in range(120):
        pattern = rng.choice(PATTERNS)
        step = nm_format.k_step(pattern)
        M, N = rng.randint(1, 200), rng.randint(1, 300)
        K = pattern[1] * rng.randint(1, 100)
        t = {"m": rng.choice([16, 32, 64, M]), "n": rng.choice([16, 32, 64, 128, N]),
             "k": rng.choice([step, 2 * step, 4 * step, K])}
        bias = rng.random() < 0.5
        problem = LinearProblem(M, K, N, bias, pattern)
        emitted, closed = emitted_and_costed(problem, t, TARGET)
        assert closed == emitted, (M, K, N, t, bias, pattern)


@pytest.mark.parametrize("pattern", PATTERNS)
def test_sparse_k_tiles_start_on_index_word_rows(pattern):
    step = nm_format.k_step(pattern)
    n, m = pattern
    assert step % m == 0 and (step * n // m) % (32 // (m - 1).bit_length()) == 0
    sparse_problem = LinearProblem(197, 768, 384, True, pattern)
    t = LINEAR.choose(sparse_problem, TARGET, "x")
    assert t["k"] % step == 0 or t["k"] >= 768
    # the sparse layer is modelled faster than the dense one under the same search
    dense_problem = LinearProblem(197, 768, 384, True)
    dense = LINEAR.choose(dense_problem, TARGET, "x")
    cost = LINEAR.cost(sparse_problem, t, TARGET).cycles
    assert cost < LINEAR.cost(dense_problem, dense, TARGET).cycles


def test_packed_shape():
    # 2:4 of W^T [64 x 48]: 32 value rows, 2 rows of 16 2-bit indices per word
    assert nm_format.packed_shape(64, 48, (2, 4)) == (34, 48)
    # 1:8 of [80 x 8]: 10 value rows, one row of 10 3-bit indices per word
    assert nm_format.packed_shape(80, 8, (1, 8)) == (11, 8)


@pytest.fixture(scope="module")
def sparse_prog(tmp_path_factory):
    from nmc.isa.container import write_program

    d = tmp_path_factory.mktemp("nm")
    module, example = build_model("mlp_block", {"dim": 32, "hidden": 64, "tokens": 9})
    export_to_file(module, example, d / "m.pt")
    program = compile_sparse(d / "m.pt", {"fc1": (2, 4), "fc2": (1, 8)})
    write_program(program, d / "prog.bin")
    return d, program, example


def test_plan_memory_allocates_the_packed_size(sparse_prog):
    _, program, _ = sparse_prog
    sizes = sorted(c.size for _, c in program.constants)
    fc1 = np.prod(nm_format.packed_shape(32, 64, (2, 4)))
    fc2 = np.prod(nm_format.packed_shape(64, 32, (1, 8)))
    assert fc1 in sizes and fc2 in sizes
    assert 64 * 32 not in sizes  # no weight stored dense
    layers = program.meta["layers"]
    assert layers["fc1"] == {"pattern": "2:4", "density": 0.5, "weight_bytes": 4 * fc1,
                             "dense_bytes": 4 * 64 * 32}
    assert layers["fc2"]["pattern"] == "1:8"


def test_fast_path_equals_reference_run(sparse_prog):
    from nmc.runtime.emulator import run_program

    _, program, example = sparse_prog
    x = {"x": np.random.default_rng(0).standard_normal(example.shape).astype(np.float32)}
    fast = run_program(program, x, TARGET)
    ref = run_program(program, x, TARGET, fast=False)
    np.testing.assert_array_equal(fast.outputs["output"], ref.outputs["output"])
    assert fast.total_cycles == ref.total_cycles
    assert fast.matrix_macs == ref.matrix_macs == 9 * (32 * 64 // 2 + 64 * 32 // 8)


def test_bad_pattern_in_a_program_is_reported_not_crashed():
    from nmc.isa.container import Program
    from nmc.isa.table import Instr
    from nmc.runtime.emulator import run_program

    bad = Instr.make("spmatmul", m=1, k=6, n=1, pat_n=1, pat_m=4)
    program = Program("sta_ref", TARGET.id, 1024, [bad, Instr.make("halt")])
    with pytest.raises(Exception, match="k = 6 is not a multiple of M = 4"):
        run_program(program, {}, TARGET)


def test_inspect_shows_layers_patterns_and_counts(sparse_prog, capsys):
    from nmc.cli import main

    d, program, _ = sparse_prog
    assert main(["inspect", str(d / "prog.bin")]) == 0
    out = capsys.readouterr().out
    assert "target      sta_ref (id 1)" in out
    for section in ("INSTR", "CONST", "SYMBOLS", "DEBUG", "META"):
        assert section in out
    assert "input  x" in out and "output output" in out
    fc1 = next(line for line in out.splitlines() if line.strip().startswith("fc1 "))
    assert "linear" in fc1 and "2:4" in fc1 and "0.500" in fc1 and "spmatmul" in fc1
    assert str(program.meta["layers"]["fc1"]["weight_bytes"]) in fc1
    fc2 = next(line for line in out.splitlines() if line.strip().startswith("fc2 "))
    assert "1:8" in fc2


def test_inspect_rejects_a_file_that_is_not_a_program(tmp_path, capsys):
    from nmc.cli import main

    (tmp_path / "x.bin").write_bytes(b"hello")
    assert main(["inspect", str(tmp_path / "x.bin")]) == 1
    assert "nmc: error:" in capsys.readouterr().err

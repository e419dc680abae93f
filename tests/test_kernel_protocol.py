"""The kernel protocol (compiler/kernels/kernel.py) and the linear schedule written once
(`LinearSchedule.walk`): the cost the tile search ranks by is counted by the same walk
that emits the kernel, so the two cannot drift."""

from __future__ import annotations

import random

import pytest

from nmc.compiler.kernels.common import _DoesNotFit, estimate_cycles
from nmc.compiler.kernels.kernel import Buffers
from nmc.common import nm_format
from nmc.compiler.kernels.linear import LINEAR, LinearProblem, LinearSchedule
from nmc.compiler.kernels.registry import KERNELS, op_cycles
from nmc.compiler.kernels.walk import Walk
from nmc.isa.target import load_target

TARGET = load_target()


def _random_case(rng: random.Random) -> tuple[LinearProblem, dict]:
    pattern = rng.choice([None, None, (2, 4), (1, 8), (1, 4), (4, 8)])
    M, N = rng.randint(1, 300), rng.randint(1, 400)
    if pattern is None:
        K, step = rng.randint(1, 800), 16
    else:
        K, step = pattern[1] * rng.randint(1, 100), nm_format.k_step(pattern)
    t = {"m": rng.choice([16, 32, 48, 64, 100, M]), "n": rng.choice([16, 32, 64, 128, N]),
         "k": rng.choice([step, 2 * step, 4 * step, K])}
    if rng.random() < 0.3:
        t["acc"] = 1
    if t["k"] >= K and rng.random() < 0.3:
        t["a"] = 1
    layout = "kn" if pattern else rng.choice(["kn", "nk"])
    problem = LinearProblem(M, K, N, rng.random() < 0.5, pattern,
                            rng.choice([None, "gelu", "gelu_tanh"]), layout)
    return problem, t


def test_linear_cost_is_counted_by_the_walk_that_emits():
    """For every buffering (single buffers too, whose stalls the walk charges), shape and
    pattern: counting the walk over distinct tile lengths gives exactly what walking
    every tile gives, whose busy cycles are `estimate_cycles` of the emitted
    instructions, and the kernel's cost is that count."""
    rng = random.Random(0)
    checked = stalled = 0
    for _ in range(200):
        problem, t = _random_case(rng)
        try:
            schedule = LinearSchedule(problem, t, TARGET)
        except _DoesNotFit:
            with pytest.raises(_DoesNotFit):
                LINEAR.cost(problem, t, TARGET)
            continue
        counted = schedule.count()
        walked = Walk(TARGET, emit=True)  # every tile, building the instructions
        LinearSchedule(problem, t, TARGET).walk(walked, Buffers.dummy())
        instrs = walked.instrs
        where = (problem, t)
        assert counted.instructions == walked.instructions == len(instrs), where
        assert counted.estimate == walked.estimate == estimate_cycles(instrs, TARGET), where
        assert counted.stalls == walked.stalls, where
        cycles = counted.cycles(schedule.single_buffers)
        assert cycles == walked.cycles(schedule.single_buffers), where
        assert tuple(LINEAR.cost(problem, t, TARGET)) == (cycles, len(instrs)), where
        if "a" not in t and "acc" not in t:
            assert cycles == estimate_cycles(instrs, TARGET), where
        checked += 1
        stalled += cycles != counted.estimate
    assert checked > 100 and stalled > 10


def test_op_cycles_is_the_cost_of_the_chosen_tiling():
    """`op_cycles` (what ELSA and SparseViT add up) is the kernel's cost under the tiling
    schedule-tiles chooses: for a linear op, the same number the ELSA cost model gives."""
    from xdsl.dialects.builtin import TensorType, f32
    from xdsl.ir import Block

    from nmc.compiler.dialects.nm import LinearOp
    from nmc.compiler.sparsity.cost import linear_cycles

    block = Block(arg_types=[TensorType(f32, [1, 17, 64]), TensorType(f32, [192, 64])])
    op = LinearOp(block.args[0], block.args[1], None, "fc")
    kernel = KERNELS[op.name]
    problem = kernel.problem(op)
    assert problem == LinearProblem(17, 64, 192, False)
    tiling = kernel.choose(problem, TARGET, "fc")
    assert op_cycles(op, TARGET) == kernel.cost(problem, tiling, TARGET).cycles
    assert op_cycles(op, TARGET) == linear_cycles(problem, None, TARGET)
    assert linear_cycles(problem, (2, 4), TARGET) < op_cycles(op, TARGET)


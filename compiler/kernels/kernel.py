"""The kernel protocol: what every kernel offers the passes and the searches.

A kernel implements one family of nm ops. It sees an op only as its *problem*: a frozen
dataclass of what decides the instructions (shapes, N:M pattern, fused activation, ...),
built from the op by `problem(op)`. Being frozen and hashable, a problem is also the key
under which tile choices and costs are memoised (a ViT repeats a few shapes many times).
On a problem, a kernel offers:

- `candidates(problem, target)`: the tilings worth trying (dicts of tile sizes);
- `cost(problem, tiling, target)`: `Cost(cycles, instructions)` of the kernel under the
  tiling, from the timing model; raises `_DoesNotFit` when its buffers do not fit;
- `choose(problem, target, layer)`: the tiling to use (by default the cheapest candidate
  by `cost`, see `choose_best`), memoised per problem and target;
- `scratch_words(problem, tiling)`: DRAM words the kernel needs for itself while it runs
  (plan-memory places them; 0: none);
- `emit(problem, tiling, buffers, target)`: the instructions, with the DRAM addresses of
  the op's data in `buffers`;
- `cycles(problem, target)`: the cost under the chosen tiling, what `registry.op_cycles`
  returns to the sparsity searches.

`schedule-tiles` (choose), `plan-memory` (scratch_words, transposed), `lower-nm-to-isa`
(emit) and the ELSA and SparseViT searches (cycles) all go through this class, so the
tiling that is costed is the one that is emitted.
"""

from __future__ import annotations

from typing import Generic, Mapping, NamedTuple, TypeVar

from xdsl.ir import Operation, SSAValue

from nmc.compiler.kernels.common import (
    TILINGS, choose_best, estimate_cycles, simulate_cycles, _target_key,
)
from nmc.isa.table import Instr
from nmc.isa.target import Target

P = TypeVar("P")
"""A kernel's problem type (a frozen dataclass)."""


class Cost(NamedTuple):
    """A kernel's modelled cycles under one tiling, and its number of instructions (the
    tie-break of `choose_best`: the smaller program among near-equal ones)."""

    cycles: int
    instructions: int


class Buffers:
    """Where an op's data lives in DRAM: the address of each operand and result, by the
    name the op's definition gives it ("input", "weight", "bias", "result", ...; a
    variadic operand gives a tuple, an absent optional one None), and of the kernel's
    scratch space ("scratch").

    `Buffers.dummy()` puts everything at address 0: the tile search emits candidates
    with it, since addresses do not change an instruction's cycles."""

    def __init__(self, addrs: Mapping[str, int | tuple[int, ...] | None] | None):
        self._addrs = addrs  # None: the dummy

    @staticmethod
    def dummy() -> "Buffers":
        return Buffers(None)

    @staticmethod
    def of(op: Operation, addr, scratch: int | None = None) -> "Buffers":
        """`addr(value)`: the DRAM address plan-memory gave an SSA value."""
        definition = type(op).get_irdl_definition()
        addrs: dict[str, int | tuple[int, ...] | None] = {}
        for name, _ in (*definition.operands, *definition.results):
            value = getattr(op, name)
            if value is None:
                addrs[name] = None
            elif isinstance(value, SSAValue):
                addrs[name] = addr(value)
            else:  # variadic
                addrs[name] = tuple(addr(v) for v in value)
        addrs["scratch"] = scratch
        return Buffers(addrs)

    def __getitem__(self, name: str) -> int:
        if self._addrs is None:
            return 0
        return self._addrs[name]

    def many(self, name: str, count: int) -> tuple[int, ...]:
        """The addresses of a variadic operand of `count` values."""
        if self._addrs is None:
            return (0,) * count
        addrs = self._addrs[name]
        assert len(addrs) == count, (name, addrs, count)
        return addrs


class Kernel(Generic[P]):
    """The protocol (module docstring), with the defaults most kernels use: the cost of
    a tiling is the timing model on the kernel emitted with dummy addresses, and choose
    takes the best candidate by that cost."""

    simulate = False
    """Cost by the emulator's own timing rule (`simulate_cycles`: sees the stalls of an
    in-order unit waiting for another), not by the busiest unit (`estimate_cycles`);
    the tile search then simulates only a shortlist of the best estimates."""

    problem_type: type | None = None
    """The kernel's frozen problem class; its `of(op)` describes an op (`problem`)."""

    def problem(self, op: Operation) -> P:
        return self.problem_type.of(op)

    def problem_on(self, op: Operation, target: Target) -> P:
        """The problem of `op` as `target` will compute it (the matmul kernels: int8 on an
        int8 target, before the quantize pass has marked the op); what `op_cycles` costs."""
        return self.problem(op)

    def candidates(self, problem: P, target: Target) -> list[dict]:
        raise NotImplementedError

    def need(self, problem: P, target: Target) -> str:
        """What the smallest candidate needs, for the error when no tiling fits."""
        raise NotImplementedError

    def emit(self, problem: P, tiling: dict, buffers: Buffers, target: Target) -> list[Instr]:
        raise NotImplementedError

    def scratch_words(self, problem: P, tiling: dict) -> int:
        return 0

    def transposed(self, op: Operation) -> list[SSAValue]:
        """Operands the kernel wants stored transposed in DRAM (weights: [N, K] -> [K, N])."""
        return []

    def cost(self, problem: P, tiling: dict, target: Target) -> Cost:
        instrs = self.emit(problem, tiling, Buffers.dummy(), target)
        timing = simulate_cycles if self.simulate else estimate_cycles
        return Cost(timing(instrs, target), len(instrs))

    def choose(self, problem: P, target: Target, layer: str) -> dict:
        """The tiling to use, memoised per problem and target (`layer` names the op in
        the error raised when nothing fits)."""

        def search() -> dict:
            return choose_best(
                layer, self.candidates(problem, target), target,
                cost=lambda t: self.cost(problem, t, target),
                need=lambda: self.need(problem, target),
                shortlist=self._estimate(problem, target) if self.simulate else None)

        return TILINGS.get((type(self).__name__, problem), target, search)

    def cycles(self, problem: P, target: Target, layer: str = "") -> int:
        """The modelled cycles of the op under the tiling `choose` picks."""
        key = (problem, _target_key(target))
        hit = _CYCLES.get(key)
        if hit is None:
            tiling = self.choose(problem, target, layer)
            hit = _CYCLES[key] = self.cost(problem, tiling, target).cycles
        return hit

    def _estimate(self, problem: P, target: Target):
        def estimate(tiling: dict) -> Cost:
            instrs = self.emit(problem, tiling, Buffers.dummy(), target)
            return Cost(estimate_cycles(instrs, target), len(instrs))

        return estimate


_CYCLES: dict[tuple, int] = {}

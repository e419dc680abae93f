"""nm.linear: Y[M x N] = X[M x K] . W^T + b on the matrix unit.

W is stored in DRAM transposed ([K x N], layout "transpose") so that a W tile is a plain
2-D block. Loop order m, n, k: each (m, n) output tile accumulates over k tiles in one of
two ACC buffers, then the vector unit adds the bias while moving it to SPAD (and applies
the fused activation there, if any) and the store unit writes it out, so the next tile's
loads and matmuls overlap this tile's epilogue.
When one k tile covers K, the A tile is loaded once per m tile and reused across n.
Every ring is double-buffered unless the tiling asks for one A buffer (`a = 1`) or one
ACC/output buffer (`acc = 1`), which fit bigger tiles at the price of stalls that the
cost charges (`_slots`, `LinearSchedule.walk`).

`w_layout="nk"` reads W as stored by the model ([N x K], row-major, layout "identity"):
a W tile is then the [tn x tk] block at (n0, k0) and the matmul multiplies by its
transpose (`transpose_w`). The patch embedding uses it: its conv weight [D, Cin, p, p] is
already [D x Cin*p*p] row-major, so no layout change is needed.

N:M sparse weights (`pattern=(N, M)`, issue 5) are stored packed, in the layout
`nm_pack:N:M` that `nmc.common.nm_format` defines: W^T's kept values, then their in-group
indices packed into words. A W tile of [tk x tn] dense weights is then two 2-D blocks,
[tk*N/M x tn] values and their index words, multiplied by `spmatmul`; k tiles start at
multiples of `nm_format.k_step` so every tile's index words start on a word row.

int8 (`int8=True`, an op the quantize pass gave `nm.quant`; docs/INT8.md): the input is
quantised once into DRAM scratch by a pre-pass (kernels/int8.py), A and W tiles are int8
(four to a word: a quarter of the DMA bytes and SPAD words), the matrix unit accumulates
exactly in int32 (`imatmul` / `ispmatmul`), and the epilogue's `vrow rescale` adds
the int32 bias and scales each column back to fp32 (the rescale table stored after the
weight) before the fused activation and the store. The weight is always stored
transposed ([K x N/4] words, or packed N:M).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from math import prod

from nmc.compiler.dialects.nm import LinearOp, tensor_shape
from nmc.common import nm_format
from nmc.common.nm_format import Pattern
from nmc.common import quant as quant_rule
from nmc.compiler.dialects.nm_attrs import quant
from nmc.isa.table import Instr, Mem, Unit, VBinFn, VRowFn, VUnFn
from nmc.isa.target import Target
from nmc.runtime.timing import matmul_cycles, spmatmul_cycles

from nmc.compiler.kernels.common import (
    TILINGS, TOLERANCE, Matrix2D, OnChipAllocator, Ring, TileError, _DoesNotFit,
    block_fields,
    choose_best, size_candidates, tile_counts,
)
from nmc.compiler.kernels import int8
from nmc.compiler.kernels.kernel import Buffers, Cost, Kernel
from nmc.compiler.kernels.walk import Walk


def _w_tile_words(tk: int, tn: int, pattern: Pattern, per_word: int = 1) -> tuple[int, int]:
    """(value words, index words) of one W tile buffer; `per_word` values to a word."""
    if pattern is None:
        return tk * tn // per_word, 0
    kc = nm_format.compressed_rows(tk, *pattern)
    return kc * tn // per_word, nm_format.index_rows(kc, pattern[1]) * tn


_ACTIVATION_FN = {"gelu": VUnFn.GELU, "gelu_tanh": VUnFn.GELU_TANH}


@dataclass(frozen=True)
class LinearProblem:
    """Y[M x N] = X[M x K] . W^T (+ bias), then the fused activation if any: an nm.linear
    (leading dims of its input flattened into M), or the linear half of a patch embedding
    (`w_layout="nk"`). `pattern`: the N:M pattern of W, None for dense (N = M is dense).
    `int8`: computed in int8 (module docstring), its input quantised by multiplying by
    `inv_scale` (fp32(1 / s_x)), which changes no instruction count or cycle, so it does
    not take part in comparing problems: the tile choices stay shared per shape."""

    M: int
    K: int
    N: int
    has_bias: bool
    pattern: Pattern = None
    activation: str | None = None
    w_layout: str = "kn"
    int8: bool = False
    inv_scale: float = field(default=1.0, compare=False)

    def __post_init__(self):
        object.__setattr__(self, "pattern", nm_format.sparse_pattern(self.pattern))
        assert not (self.w_layout == "nk" and self.pattern), \
            "N:M weights are stored packed along K of W^T"
        assert not (self.int8 and self.w_layout == "nk"), "int8 weights are stored W^T"

    @staticmethod
    def of(op: LinearOp) -> "LinearProblem":
        shape = tensor_shape(op.input)
        scales = quant(op)
        return LinearProblem(prod(shape[:-1]), shape[-1], tensor_shape(op.weight)[0],
                             op.bias is not None, op.sparsity_pattern, op.activation_name,
                             int8=scales is not None,
                             inv_scale=float(quant_rule.inverse_scale(scales[0])) if scales
                             else 1.0)

    @property
    def macs(self) -> int:
        """Multiply-accumulates of the dense layer."""
        return self.M * self.K * self.N

    def on(self, target: Target) -> "LinearProblem":
        """The problem as `target` will compute it: on an int8 target a linear of int8
        shape (`int8.int8_shape`) is int8. The searches that cost layers before the
        quantize pass ran (ELSA, SparseViT) see int8 timing through this."""
        if (target.int8 and not self.int8 and self.w_layout == "kn"
                and int8.int8_shape(self.K, self.N)):
            return replace(self, int8=True)
        return self


class LinearSchedule:
    """The linear kernel under one tiling, written once: its on-chip buffers (allocated
    here: raises _DoesNotFit when they do not fit, unless `bounded=False`) and its loop
    nest (`walk`), which `emit` runs over every tile and `count` over each distinct tile
    length (`kernels.walk`). The waits that single buffers add, which the busiest-unit
    estimate cannot see, are charged in the walk too (`Walk.stall`, by cause: "a" one A
    buffer, "acc" one ACC/output buffer; `single_buffers` says which hold), so one count
    serves every buffering of the same tile sizes; the tests compare the waits with the
    emulator's timing rule (`simulate_cycles`)."""

    def __init__(self, problem: LinearProblem, tiling: dict, target: Target,
                 bounded: bool = True):
        self.problem, self.tiling, self.target = problem, tiling, target
        tm, tn, tk = tiling["m"], tiling["n"], tiling["k"]
        self.a_slots, self.acc_slots = _slots(tiling, problem.K)
        per_word = 4 if problem.int8 else 1  # int8 operands: four to a word
        chip = OnChipAllocator(target, bounded=bounded)
        self.a_bufs = chip.allocs(Mem.SPAD, tm * tk // per_word, self.a_slots)
        w_words, idx_words = _w_tile_words(tk, tn, problem.pattern, per_word)
        self.w_bufs = chip.allocs(Mem.SPAD, w_words)
        self.idx_bufs = chip.allocs(Mem.SPAD, idx_words) if problem.pattern else None
        self.o_bufs = chip.allocs(Mem.SPAD, tm * tn, self.acc_slots)
        self.acc_bufs = chip.allocs(Mem.ACC, tm * tn, self.acc_slots)
        # the bias row (fp32), or the rescale table (int8: bias and scale per column)
        self.bias_buf = (chip.alloc(Mem.SPAD, 2 * problem.N) if problem.int8 else
                         chip.alloc(Mem.SPAD, problem.N) if problem.has_bias else None)
        self.words = dict(chip.used)  # SPAD and ACC words the buffers take
        # the causes of the waits `walk` charges that hold for this tiling ("quant": the
        # int8 input's pre-pass, which the matmuls wait for)
        self.single_buffers = tuple(
            cause for cause, slots in (("a", self.a_slots), ("acc", self.acc_slots))
            if slots == 1) + (("quant",) if problem.int8 else ())

    def emit(self, buffers: Buffers) -> list[Instr]:
        out = Walk(self.target, emit=True)
        self.walk(out, buffers)
        return out.instrs

    def count(self) -> Walk:
        out = Walk(self.target, emit=False)
        self.walk(out, Buffers.dummy())
        return out

    def walk(self, out: Walk, buffers: Buffers) -> None:
        """Loop order m, n, k (module docstring); `buffers`: input, weight, bias, result."""
        p, t = self.problem, self.tiling
        M, K, N, pattern = p.M, p.K, p.N, p.pattern
        tm, tn, tk = t["m"], t["n"], t["k"]
        nk = p.w_layout == "nk"
        q = 4 if p.int8 else 1  # int8 elements per word of A and W
        X, Y = Matrix2D(buffers["input"], M, K), Matrix2D(buffers["result"], M, N)
        wt = buffers["weight"]
        if p.int8:
            xq = buffers["scratch"]
            wait = int8.quantize_prepass(out, M, K, X.addr, xq, p.inv_scale, self.target)
            out.stall(Unit.MATRIX, wait, "quant")
            X = Matrix2D(xq, M, K // 4)
        if pattern is not None:
            kc_all = nm_format.compressed_rows(K, *pattern)
            W = Matrix2D(wt, kc_all, N // q)  # the kept values
            Wi = Matrix2D(wt + kc_all * N // q, nm_format.index_rows(kc_all, pattern[1]), N)
            per_word = nm_format.indices_per_word(pattern[1])
        else:
            W = Matrix2D(wt, N, K) if nk else Matrix2D(wt, K, N // q)
        a_ring, w_ring, o_ring, acc_ring = (
            Ring(self.a_bufs), Ring(self.w_bufs), Ring(self.o_bufs), Ring(self.acc_bufs))
        idx_ring = Ring(self.idx_bufs) if pattern is not None else None
        single_k = tk >= K

        def load(*block) -> int:
            return out.add("load", **block_fields(*block))

        if p.int8:
            table = wt + int8.rescale_offset(N, K, pattern)
            load(Matrix2D(table, 1, 2 * N), 0, 0, 1, 2 * N, Mem.SPAD, self.bias_buf)
        elif p.has_bias:
            load(Matrix2D(buffers["bias"], 1, N), 0, 0, 1, N, Mem.SPAD, self.bias_buf)
        first_a_load = w_first = None
        for m in out.tiles(M, tm):
            m0, mr = m.start, m.length
            if single_k:
                a = a_ring.next()
                a_load = load(X, m0, 0, mr, K // q, Mem.SPAD, a)
                first_a_load = first_a_load or a_load
            for n in out.tiles(N, tn):
                n0, nr = n.start, n.length
                acc = acc_ring.next()
                for k in out.tiles(K, tk):
                    k0, kr = k.start, k.length
                    if not single_k:
                        a = a_ring.next()
                        load(X, m0, k0 // q, mr, kr // q, Mem.SPAD, a)
                    w = w_ring.next()
                    i = "i" if p.int8 else ""
                    if pattern is not None:
                        kc0 = nm_format.compressed_rows(k0, *pattern)
                        kcr = nm_format.compressed_rows(kr, *pattern)
                        idx = idx_ring.next()
                        w_load = load(W, kc0, n0 // q, kcr, nr // q, Mem.SPAD, w)
                        w_load += load(Wi, kc0 // per_word, n0,
                                       nm_format.index_rows(kcr, pattern[1]), nr, Mem.SPAD, idx)
                        out.add(i + "spmatmul", a=a, w=w, idx=idx, out=acc, m=mr, k=kr, n=nr,
                                pat_n=pattern[0], pat_m=pattern[1], accumulate=int(k0 > 0))
                    else:
                        if nk:
                            w_load = load(W, n0, k0, nr, kr, Mem.SPAD, w)
                        else:
                            w_load = load(W, k0, n0 // q, kr, nr // q, Mem.SPAD, w)
                        mm = dict(a=a, w=w, out=acc, m=mr, k=kr, n=nr, accumulate=int(k0 > 0))
                        if p.int8:
                            out.add("imatmul", **mm)
                        else:
                            out.add("matmul", **mm, transpose_w=int(nk))
                    w_first = w_first or w_load
                o = o_ring.next()
                if p.int8:  # int32 + bias, to fp32, times the column's scale
                    epilogue = out.add("vrow", fn=VRowFn.RESCALE, dst_mem=Mem.SPAD, dst=o,
                                       src_mem=Mem.ACC, src=acc, param=self.bias_buf + 2 * n0,
                                       rows=mr, cols=nr)
                elif p.has_bias:
                    epilogue = out.add("vbin", fn=VBinFn.ADD, dst_mem=Mem.SPAD, dst=o,
                                       a_mem=Mem.ACC, a=acc, b_mem=Mem.SPAD, b=self.bias_buf + n0,
                                       rows=mr, cols=nr, bcast=1)
                else:
                    epilogue = out.add("vun", fn=VUnFn.COPY, dst_mem=Mem.SPAD, dst=o,
                                       src_mem=Mem.ACC, src=acc, rows=mr, cols=nr)
                activation = 0
                if p.activation is not None:  # fused (fuse-activations), in place in SPAD
                    activation = out.add("vun", fn=_ACTIVATION_FN[p.activation],
                                         dst_mem=Mem.SPAD, dst=o, src_mem=Mem.SPAD, src=o,
                                         rows=mr, cols=nr)
                store = out.add("store", **block_fields(Y, m0, n0, mr, nr, Mem.SPAD, o))
                # one ACC buffer: the next tile's first matmul waits for this epilogue to
                # read ACC; with an activation, one output buffer: the next epilogue
                # writes it only after this tile's activation and store, which the next
                # tile's matmuls may not cover
                chain = activation + store if p.activation is not None else 0
                out.stall(Unit.MATRIX, epilogue + max(0, chain - n.busy[Unit.MATRIX]), "acc")
            if single_k:
                # one A buffer: m tiles are separated by a barrier: the A load of an m
                # tile waits for the previous m tile's last matmul, and the first W tile
                # load queues behind it; loads cannot run ahead into the next m tile, so
                # an m tile whose W loads outlast its matmuls (a short last one) makes
                # the matrix unit wait for the difference
                w_loads = m.busy[Unit.LOAD] - a_load
                out.stall(Unit.MATRIX,
                          a_load + w_first + max(0, w_loads - m.busy[Unit.MATRIX]), "a")
        if single_k and not p.has_bias and not p.int8:
            # the first A load is then the first load the estimate adds anyway
            out.stall(Unit.MATRIX, -first_a_load, "a")


def _slots(tiling: dict, K: int) -> tuple[int, int]:
    """(A buffers, ACC/output buffers) of a tiling: 2 and 2 (double buffering) unless the
    tiling says `a = 1` (only with one k tile: the A rows of an m tile stay resident for
    all its n tiles, so a bigger m tile fits and W is re-read fewer times) or `acc = 1`
    (one output tile twice as big: A and W are re-read half as often). Single buffers cost
    stalls, which the schedule's walk charges."""
    a_slots, acc_slots = tiling.get("a", 2), tiling.get("acc", 2)
    assert a_slots in (1, 2) and acc_slots in (1, 2)
    assert a_slots == 2 or tiling["k"] >= K, "one A buffer only when A stays resident"
    return a_slots, acc_slots


def _mx_cycles(mr: int, kr: int, nr: int, target: Target, pattern: Pattern) -> int:
    if pattern is None:
        return matmul_cycles(mr, kr, nr, target)
    return spmatmul_cycles(mr, kr, nr, pattern[0], pattern[1], target)


def linear_matrix_cycles(p: LinearProblem, tiling: dict, target: Target) -> int:
    """The matrix unit's busy cycles under `tiling`, in closed form: a lower bound of the
    kernel's cost (no need to walk the schedule), used to prune the tile search."""
    total = 0
    for mr, cm in tile_counts(p.M, tiling["m"]):
        for nr, cn in tile_counts(p.N, tiling["n"]):
            for kr, ck in tile_counts(p.K, tiling["k"]):
                total += cm * cn * ck * _mx_cycles(mr, kr, nr, target, p.pattern)
    return total


def linear_tiling_candidates(M: int, K: int, N: int, target: Target,
                             pattern: Pattern = None) -> list[dict]:
    """Tile sizes (multiples of the PE array; k of the N:M index-word step) and buffering:
    double-buffered everything, or one ACC/output buffer, or (one k tile) one A buffer."""
    k_granule = 16 if pattern is None else nm_format.k_step(pattern)
    out = []
    for tm in size_candidates(M, target.mx_rows, limit=512):
        for tn in size_candidates(N, target.mx_cols, limit=512):
            for tk in size_candidates(K, k_granule, limit=1024):
                base = {"m": tm, "n": tn, "k": tk}
                out += [base, {**base, "acc": 1}]
                if tk >= K:
                    out += [{**base, "a": 1}, {**base, "a": 1, "acc": 1}]
    return out


class LinearKernel(Kernel[LinearProblem]):
    """nm.linear on the matrix unit (module docstring). Its cost is counted by walking
    the same schedule that emits it (`LinearSchedule`), in a few dozen steps whatever
    the number of tiles: the tile search costs thousands of candidates per layer shape."""

    problem_type = LinearProblem

    def problem_on(self, op: LinearOp, target: Target) -> LinearProblem:
        return self.problem(op).on(target)

    def scratch_words(self, problem: LinearProblem, tiling: dict) -> int:
        """int8: the quantised input (kernels/int8.py)."""
        return int8.quantized_words(problem.M, problem.K) if problem.int8 else 0

    def transposed(self, op: LinearOp) -> list:
        return [op.weight]

    def candidates(self, problem: LinearProblem, target: Target) -> list[dict]:
        out = linear_tiling_candidates(problem.M, problem.K, problem.N, target, problem.pattern)
        if problem.activation is not None:
            # a resident A buffer separates m tiles by a barrier that a vector-bound
            # epilogue (a fused activation after a very sparse matmul) turns into stalls
            # the model does not charge
            out = [t for t in out if "a" not in t]
        return out

    def cost(self, problem: LinearProblem, tiling: dict, target: Target,
             counted: dict | None = None) -> Cost:
        """`counted`: walks already counted for this problem and target, by tile sizes
        (tilings that differ only in buffering issue the same instructions)."""
        schedule = LinearSchedule(problem, tiling, target)
        if counted is None:
            walk = schedule.count()
        else:
            sizes = (tiling["m"], tiling["n"], tiling["k"])
            walk = counted.get(sizes) or counted.setdefault(sizes, schedule.count())
        return Cost(walk.cycles(schedule.single_buffers), walk.instructions)

    def emit(self, problem: LinearProblem, tiling: dict, buffers: Buffers,
             target: Target) -> list[Instr]:
        return LinearSchedule(problem, tiling, target).emit(buffers)

    def need(self, problem: LinearProblem, target: Target) -> str:
        """What the smallest candidate needs: its SPAD words among those whose ACC fits
        the target, else the least ACC any candidate needs."""
        words = [(LinearSchedule(problem, t, target, bounded=False).words, t)
                 for t in self.candidates(problem, target)]
        acc_ok = [(w[Mem.SPAD], t) for w, t in words if w[Mem.ACC] <= target.acc_words]
        if acc_ok:
            need, t, mem = *min(acc_ok, key=lambda x: x[0]), "SPAD"
        else:
            w, t = min(words, key=lambda x: x[0][Mem.ACC])
            need, mem = w[Mem.ACC], "ACC"
        single = [f"one {name} buffer" for key, name in (("a", "A"), ("acc", "ACC"))
                  if t.get(key) == 1]
        return (f"at least {need} {mem} words for {t['m']}x{t['n']}x{t['k']} tiles"
                + (f" with {' and '.join(single)}" if single else ""))

    def choose(self, problem: LinearProblem, target: Target, layer: str) -> dict:
        counted: dict[tuple, Walk] = {}
        costs: dict[tuple, Cost | None] = {}  # None: does not fit

        def cost(t: dict) -> Cost:  # the fallback below ranks some candidates again
            key = tuple(sorted(t.items()))
            if key not in costs:
                try:
                    costs[key] = self.cost(problem, t, target, counted)
                except _DoesNotFit:
                    costs[key] = None
            if costs[key] is None:
                raise _DoesNotFit
            return costs[key]

        def best(candidates: list[dict]) -> dict:
            return choose_best(
                layer, candidates, target, cost=cost,
                need=lambda: self.need(problem, target),
                lower_bound=lambda t: linear_matrix_cycles(problem, t, target))

        def search() -> dict:
            candidates = self.candidates(problem, target)
            chosen = best(candidates)
            double = [t for t in candidates if "a" not in t and "acc" not in t]
            if chosen in double:
                return chosen
            try:
                fallback = best(double)
            except TileError:
                return chosen
            # a single-buffer schedule's stalls are modelled, not exact (within a few % of
            # the emulator's timing): it must beat double buffering on cycles, not merely
            # tie within choose_best's tolerance with fewer instructions
            if cost(chosen).cycles < cost(fallback).cycles * (1 - TOLERANCE):
                return chosen
            return fallback

        return TILINGS.get((type(self).__name__, problem), target, search)


LINEAR = LinearKernel()

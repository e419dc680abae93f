"""nm.linear: Y[M x N] = X[M x K] . W^T + b on the matrix unit.

W is stored in DRAM transposed ([K x N], layout "transpose") so that a W tile is a plain
2-D block. Loop order m, n, k: each (m, n) output tile accumulates over k tiles in one of
two ACC buffers, then the vector unit adds the bias while moving it to SPAD (and applies
the fused activation there, if any) and the store unit writes it out, so the next tile's
loads and matmuls overlap this tile's epilogue.
When one k tile covers K, the A tile is loaded once per m tile and reused across n.
Every ring is double-buffered unless the tiling asks for one A buffer (`a = 1`) or one
ACC/output buffer (`acc = 1`), which fit bigger tiles at the price of stalls that the
closed-form cost charges (`_slots`, `_stall_cycles`).

`w_layout="nk"` reads W as stored by the model ([N x K], row-major, layout "identity"):
a W tile is then the [tn x tk] block at (n0, k0) and the matmul multiplies by its
transpose (`transpose_w`). The patch embedding uses it: its conv weight [D, Cin, p, p] is
already [D x Cin*p*p] row-major, so no layout change is needed.

N:M sparse weights (`pattern=(N, M)`, issue 5) are stored packed (layout "nm_pack:N:M",
`nm_packed_shape`): the kept values of W^T, [K*N/M x N_out], then their in-group indices,
packed down the columns P = 32/ceil(log2 M) to a word, [ceil(K*N/M / P) x N_out]. A W tile
of [tk x tn] dense weights is then two 2-D blocks, [tk*N/M x tn] values and
[ceil(tk*N/M / P) x tn] index words, multiplied by `spmatmul`; k tiles are multiples of
M*P/gcd(N, P) so every tile's index words start on a word row.
"""

from __future__ import annotations

from math import gcd

from nmc.isa.table import (
    Instr, Mem, VBinFn, VUnFn, nm_compressed_rows, nm_index_rows, nm_indices_per_word,
)
from nmc.isa.target import Target
from nmc.runtime.timing import dma_cycles, matmul_cycles, spmatmul_cycles, vector_cycles

from nmc.compiler.kernels.common import (
    TILINGS, TOLERANCE, Matrix2D, OnChipAllocator, TileError, _DoesNotFit, align,
    choose_best, load_block, size_candidates, store_block, tile_counts, tiles,
)


Pattern = tuple[int, int] | None


def sparse_pattern(pattern: Pattern) -> Pattern:
    """(N, M) of a sparse pattern, None for dense (absent or N = M)."""
    if pattern is None or pattern[0] == pattern[1]:
        return None
    return int(pattern[0]), int(pattern[1])


def nm_packed_shape(K: int, N: int, pattern: tuple[int, int]) -> tuple[int, int]:
    """[rows x N] of a packed N:M weight W^T [K x N]: value rows, then index-word rows."""
    kc = nm_compressed_rows(K, *pattern)
    return kc + nm_index_rows(kc, pattern[1]), N


def nm_k_step(pattern: tuple[int, int]) -> int:
    """k tiles of a sparse linear are multiples of this (but for one tile covering K)."""
    n, m = pattern
    p = nm_indices_per_word(m)
    return m * p // gcd(n, p)


def _w_tile_words(tk: int, tn: int, pattern: Pattern) -> tuple[int, int]:
    """(value words, index words) of one W tile buffer."""
    if pattern is None:
        return tk * tn, 0
    kc = nm_compressed_rows(tk, *pattern)
    return kc * tn, nm_index_rows(kc, pattern[1]) * tn


_ACTIVATION_FN = {"gelu": VUnFn.GELU, "gelu_tanh": VUnFn.GELU_TANH}


def emit_linear(M: int, K: int, N: int, tiling: dict, x: int, wt: int, bias: int | None,
                y: int, target: Target, w_layout: str = "kn",
                pattern: Pattern = None, activation: str | None = None) -> list[Instr]:
    tm, tn, tk = tiling["m"], tiling["n"], tiling["k"]
    pattern = sparse_pattern(pattern)
    nk = w_layout == "nk"
    assert not (nk and pattern), "N:M weights are stored packed along K of W^T"
    X, Y = Matrix2D(x, M, K), Matrix2D(y, M, N)
    if pattern is not None:
        W = Matrix2D(wt, nm_packed_shape(K, N, pattern)[0], N)
        kc_all = nm_compressed_rows(K, *pattern)
        per_word = nm_indices_per_word(pattern[1])
    else:
        W = Matrix2D(wt, N, K) if nk else Matrix2D(wt, K, N)
    a_slots, acc_slots = _slots(tiling, K)
    chip = OnChipAllocator(target)
    a_ring = chip.ring(Mem.SPAD, tm * tk, a_slots)
    w_words, idx_words = _w_tile_words(tk, tn, pattern)
    w_ring = chip.ring(Mem.SPAD, w_words)
    idx_ring = chip.ring(Mem.SPAD, idx_words) if pattern is not None else None
    o_ring = chip.ring(Mem.SPAD, tm * tn, acc_slots)
    acc_ring = chip.ring(Mem.ACC, tm * tn, acc_slots)
    bias_buf = chip.alloc(Mem.SPAD, N) if bias is not None else None
    single_k = tk >= K

    out: list[Instr] = []
    if bias is not None:
        out.append(load_block(Matrix2D(bias, 1, N), 0, 0, 1, N, Mem.SPAD, bias_buf))
    for m0, mr in tiles(M, tm):
        if single_k:
            a = a_ring.next()
            out.append(load_block(X, m0, 0, mr, K, Mem.SPAD, a))
        for n0, nr in tiles(N, tn):
            acc = acc_ring.next()
            for k0, kr in tiles(K, tk):
                if not single_k:
                    a = a_ring.next()
                    out.append(load_block(X, m0, k0, mr, kr, Mem.SPAD, a))
                w = w_ring.next()
                if pattern is not None:
                    kc0, kcr = nm_compressed_rows(k0, *pattern), nm_compressed_rows(kr, *pattern)
                    idx = idx_ring.next()
                    out.append(load_block(W, kc0, n0, kcr, nr, Mem.SPAD, w))
                    out.append(load_block(W, kc_all + kc0 // per_word, n0,
                                          nm_index_rows(kcr, pattern[1]), nr, Mem.SPAD, idx))
                    out.append(Instr.make("spmatmul", a=a, w=w, idx=idx, out=acc, m=mr, k=kr,
                                          n=nr, pat_n=pattern[0], pat_m=pattern[1],
                                          accumulate=int(k0 > 0)))
                    continue
                if nk:
                    out.append(load_block(W, n0, k0, nr, kr, Mem.SPAD, w))
                else:
                    out.append(load_block(W, k0, n0, kr, nr, Mem.SPAD, w))
                out.append(Instr.make("matmul", a=a, w=w, out=acc, m=mr, k=kr, n=nr,
                                      accumulate=int(k0 > 0), transpose_w=int(nk)))
            o = o_ring.next()
            if bias is not None:
                out.append(Instr.make("vbin", fn=VBinFn.ADD, dst_mem=Mem.SPAD, dst=o,
                                      a_mem=Mem.ACC, a=acc, b_mem=Mem.SPAD, b=bias_buf + n0,
                                      rows=mr, cols=nr, bcast=1))
            else:
                out.append(Instr.make("vun", fn=VUnFn.COPY, dst_mem=Mem.SPAD, dst=o,
                                      src_mem=Mem.ACC, src=acc, rows=mr, cols=nr))
            if activation is not None:  # fused (fuse-activations), in place in SPAD
                out.append(Instr.make("vun", fn=_ACTIVATION_FN[activation], dst_mem=Mem.SPAD,
                                      dst=o, src_mem=Mem.SPAD, src=o, rows=mr, cols=nr))
            out.append(store_block(Y, m0, n0, mr, nr, Mem.SPAD, o))
    return out


def _slots(tiling: dict, K: int) -> tuple[int, int]:
    """(A buffers, ACC/output buffers) of a tiling: 2 and 2 (double buffering) unless the
    tiling says `a = 1` (only with one k tile: the A rows of an m tile stay resident for
    all its n tiles, so a bigger m tile fits and W is re-read fewer times) or `acc = 1`
    (one output tile twice as big: A and W are re-read half as often). Single buffers cost
    stalls, which `_stall_cycles` charges."""
    a_slots, acc_slots = tiling.get("a", 2), tiling.get("acc", 2)
    assert a_slots in (1, 2) and acc_slots in (1, 2)
    assert a_slots == 2 or tiling["k"] >= K, "one A buffer only when A stays resident"
    return a_slots, acc_slots


def _mx_cycles(mr: int, kr: int, nr: int, target: Target, pattern: Pattern) -> int:
    if pattern is None:
        return matmul_cycles(mr, kr, nr, target)
    return spmatmul_cycles(mr, kr, nr, pattern[0], pattern[1], target)


def linear_matrix_cycles(M: int, K: int, N: int, tiling: dict, target: Target,
                         pattern: Pattern = None) -> int:
    """The matrix unit's busy cycles under `tiling`, in closed form: a lower bound of the
    kernel's estimated cycles, used to prune the tile search."""
    pattern = sparse_pattern(pattern)
    total = 0
    for mr, cm in tile_counts(M, tiling["m"]):
        for nr, cn in tile_counts(N, tiling["n"]):
            for kr, ck in tile_counts(K, tiling["k"]):
                total += cm * cn * ck * _mx_cycles(mr, kr, nr, target, pattern)
    return total


def linear_cost(M: int, K: int, N: int, tiling: dict, has_bias: bool, target: Target,
                w_layout: str = "kn", pattern: Pattern = None,
                activation: str | None = None) -> tuple[int, int]:
    """(estimate_cycles, instruction count) of `emit_linear` under `tiling`, in closed form
    (the tile search of a big layer would otherwise emit thousands of candidate kernels);
    raises _DoesNotFit like the emission. Mirrors `emit_linear` loop by loop; the kernel
    tests check that both agree."""
    tm, tn, tk = tiling["m"], tiling["n"], tiling["k"]
    pattern = sparse_pattern(pattern)
    spad, acc = linear_onchip_words(K, N, tiling, has_bias, pattern)
    if spad > target.spad_words or acc > target.acc_words:
        raise _DoesNotFit
    single_k = tk >= K
    nk = w_layout == "nk"
    busy = dict.fromkeys(("load", "store", "matrix", "vector"), 0)
    count = 0
    first_load = 0
    if has_bias:
        busy["load"] += dma_cycles(1, N, target)
        first_load = busy["load"]
        count += 1
    epilogue = "add" if has_bias else "copy"
    for mr, cm in tile_counts(M, tm):
        if single_k:
            busy["load"] += cm * dma_cycles(mr, K, target)
            count += cm
        for nr, cn in tile_counts(N, tn):
            for kr, ck in tile_counts(K, tk):
                c = cm * cn * ck
                if not single_k:
                    busy["load"] += c * dma_cycles(mr, kr, target)
                    count += c
                busy["load"] += c * _w_load_cycles(kr, nr, target, pattern, nk)
                if pattern is not None:
                    count += c
                busy["matrix"] += c * _mx_cycles(mr, kr, nr, target, pattern)
                count += 2 * c
            busy["vector"] += cm * cn * vector_cycles(epilogue, mr, nr, target)
            if activation is not None:
                busy["vector"] += cm * cn * vector_cycles(activation, mr, nr, target)
                count += cm * cn
            busy["store"] += cm * cn * dma_cycles(mr, nr, target)
            count += 2 * cm * cn
    if not first_load:
        first_load = dma_cycles(min(tm, M), K if single_k else min(tk, K), target)
    busy["matrix"] += _stall_cycles(M, K, N, tiling, target, pattern, has_bias, nk,
                                    activation)
    last_m, last_n = M - (M - 1) // tm * tm, N - (N - 1) // tn * tn
    return max(busy.values()) + first_load + dma_cycles(last_m, last_n, target), count


def linear_onchip_words(K: int, N: int, tiling: dict, has_bias: bool,
                        pattern: Pattern = None) -> tuple[int, int]:
    """(SPAD words, ACC words) that `emit_linear` allocates under `tiling`."""
    tm, tn, tk = tiling["m"], tiling["n"], tiling["k"]
    pattern = sparse_pattern(pattern)
    a_slots, acc_slots = _slots(tiling, K)
    w_words, idx_words = _w_tile_words(tk, tn, pattern)
    spad = a_slots * align(tm * tk) + 2 * align(w_words) + acc_slots * align(tm * tn)
    if pattern is not None:
        spad += 2 * align(idx_words)
    if has_bias:
        spad += align(N)
    return spad, acc_slots * align(tm * tn)


def _stall_cycles(M: int, K: int, N: int, tiling: dict, target: Target, pattern: Pattern,
                  has_bias: bool, nk: bool, activation: str | None = None) -> int:
    """The matrix unit's waits that single buffers add (0 when double-buffered), which
    `estimate_cycles` (busiest unit) cannot see. With one ACC buffer, the first matmul of
    an output tile waits for the previous tile's epilogue (vector) to read ACC; with one
    A buffer, the A load of an m tile waits for the previous m tile's last matmul, and
    the first W tile load queues behind it (for the first m tile too: linear_cost's
    `first_load` is then only the bias load). The tests compare the total with the
    emulator's timing rule (`simulate_cycles`)."""
    tm, tn, tk = tiling["m"], tiling["n"], tiling["k"]
    a_slots, acc_slots = _slots(tiling, K)
    stall = 0
    if acc_slots == 1:
        for mr, cm in tile_counts(M, tm):
            for nr, cn in tile_counts(N, tn):
                stall += cm * cn * vector_cycles("add" if has_bias else "copy", mr, nr,
                                                 target)
                if activation is not None:
                    # the single output buffer: the next epilogue writes it only after
                    # this tile's activation and store, which the next tile's matmuls
                    # may not cover
                    mx = sum(ck * _mx_cycles(mr, kr, nr, target, pattern)
                             for kr, ck in tile_counts(K, tk))
                    chain = vector_cycles(activation, mr, nr, target) + dma_cycles(mr, nr,
                                                                                   target)
                    stall += cm * cn * max(0, chain - mx)
    if a_slots == 1:
        # m tiles are then separated by a barrier: loads cannot run ahead into the next
        # m tile, so an m tile whose W loads outlast its matmuls (a short last one)
        # makes the matrix unit wait for the difference
        w_first = _w_load_cycles(min(tk, K), min(tn, N), target, pattern, nk)
        for mr, cm in tile_counts(M, tm):
            w_load = mx = 0
            for nr, cn in tile_counts(N, tn):
                w_load += cn * _w_load_cycles(K, nr, target, pattern, nk)
                mx += cn * _mx_cycles(mr, K, nr, target, pattern)
            stall += cm * (dma_cycles(mr, K, target) + w_first + max(0, w_load - mx))
        if not has_bias:  # the first A load is then the `first_load` linear_cost adds
            stall -= dma_cycles(min(tm, M), K, target)
    return stall


def _w_load_cycles(kr: int, nr: int, target: Target, pattern: Pattern, nk: bool) -> int:
    """DMA cycles of one W tile: [kr x nr], plus its index words when sparse; [nr x kr]
    in the nk layout (rows cost a burst setup each, so the orientation matters)."""
    if nk:
        return dma_cycles(nr, kr, target)
    if pattern is None:
        return dma_cycles(kr, nr, target)
    kcr = nm_compressed_rows(kr, *pattern)
    return dma_cycles(kcr, nr, target) + dma_cycles(nm_index_rows(kcr, pattern[1]), nr, target)


def linear_tiling_candidates(M: int, K: int, N: int, target: Target,
                             pattern: Pattern = None) -> list[dict]:
    """Tile sizes (multiples of the PE array; k of the N:M index-word step) and buffering:
    double-buffered everything, or one ACC/output buffer, or (one k tile) one A buffer."""
    k_granule = 16 if pattern is None else nm_k_step(pattern)
    out = []
    for tm in size_candidates(M, target.mx_rows, limit=512):
        for tn in size_candidates(N, target.mx_cols, limit=512):
            for tk in size_candidates(K, k_granule, limit=1024):
                base = {"m": tm, "n": tn, "k": tk}
                out += [base, {**base, "acc": 1}]
                if tk >= K:
                    out += [{**base, "a": 1}, {**base, "a": 1, "acc": 1}]
    return out


def _need_text(K: int, N: int, candidates: list[dict], has_bias: bool, target: Target,
               pattern: Pattern) -> str:
    """What the smallest candidate needs, for the error when none fits: its SPAD words
    among those whose ACC fits the target, else the least ACC any candidate needs."""
    words = [(linear_onchip_words(K, N, t, has_bias, pattern), t) for t in candidates]
    acc_ok = [(spad, t) for (spad, acc), t in words if acc <= target.acc_words]
    if acc_ok:
        need, t, mem = *min(acc_ok, key=lambda x: x[0]), "SPAD"
    else:
        (_, need), t = min(words, key=lambda x: x[0][1])
        mem = "ACC"
    single = [f"one {name} buffer" for key, name in (("a", "A"), ("acc", "ACC"))
              if t.get(key) == 1]
    return (f"at least {need} {mem} words for {t['m']}x{t['n']}x{t['k']} tiles"
            + (f" with {' and '.join(single)}" if single else ""))


def choose_linear_tiling(layer: str, M: int, K: int, N: int, has_bias: bool,
                         target: Target, w_layout: str = "kn", pattern: Pattern = None,
                         activation: str | None = None) -> dict:
    pattern = sparse_pattern(pattern)

    def cost(t):
        return linear_cost(M, K, N, t, has_bias, target, w_layout, pattern, activation)

    def best(candidates: list[dict]) -> dict:
        return choose_best(
            layer, candidates, None, target,
            need=lambda: _need_text(K, N, candidates, has_bias, target, pattern),
            lower_bound=lambda t: linear_matrix_cycles(M, K, N, t, target, pattern),
            cost=cost)

    def search() -> dict:
        candidates = linear_tiling_candidates(M, K, N, target, pattern)
        if activation is not None:
            # a resident A buffer separates m tiles by a barrier that a vector-bound
            # epilogue (a fused activation after a very sparse matmul) turns into stalls
            # the closed form does not model
            candidates = [t for t in candidates if "a" not in t]
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
        if cost(chosen)[0] < cost(fallback)[0] * (1 - TOLERANCE):
            return chosen
        return fallback

    key = ("linear", M, K, N, has_bias, w_layout, activation) + ((pattern,) if pattern else ())
    return TILINGS.get(key, target, search)

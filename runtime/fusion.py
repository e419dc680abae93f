"""Exact fusion: a layer's matrix tiles executed as one GEMM where the footprints prove it
equivalent (issue 17). The per-tile semantics (`nmc.runtime.semantics`) stay the
definition; `LoadedProgram(..., fuse=False)` runs them alone, and the tests run both.

The proof, from the decoded footprints (the ISA table's footprint formulas, as the fast
path evaluates them) in the fast path's execution order, never from knowledge of the
compiler:

- Provenance. Walking the instructions in execution order, each on-chip word remembers
  the instruction that last wrote it. A matrix instruction's operand (its A, W, and for
  N:M the index block) is *from DRAM* when every word of it was last written by one plain
  `load` and the operand's rows are rows of that load's block (same width, or one row):
  the operand then holds the DRAM view the load read, as it was when the load ran.
- Stability. A group computes its product once, at its first member (the anchor), reading
  the DRAM views directly. That equals what each member's loads read if no DRAM write
  (any instruction's write region, bounding ranges confirmed by `Region.overlaps`) lies
  between the anchor and the load, in either order.
- One GEMM. Members share the opcode, k, the N:M pattern and the transposition, and their
  A views are row blocks of one strided DRAM matrix (same row pitch, same column window).
  Then every member's A . W is a block of P = A_box . [W_1 | W_2 | ...]: A_box the rows
  the members span, the W_j the distinct W tiles side by side. A member runs as "its ACC
  block = (or +=) its block of P": the same ACC words, in its own place in the order.

Exactness. int8 tiles (imatmul, ispmatmul) are integer sums, exact in any grouping
(`torch._int_mm`, or float64 for an unpacked tile beyond int8, as the per-tile path).
fp32 is fused only where a probe finds the fused form bit-identical to the per-tile sgemm
on random operands of exactly these shapes (rounding order depends on shapes, not values;
the same rule as `nmc.runtime.batch`), and not slower; otherwise the group runs per
tile. Sums are
never regrouped over k: members of different k windows are different groups, and
accumulation into ACC happens per member, as before (measured: a sgemm fused over k rounds
differently, ARCHITECTURE.md).

Loads whose every word is read only by fused members' operands (before it is written
again) are not executed: nothing else can observe them (the machine's memories are reset
between runs, and only DRAM outputs are read). Timing, statistics and the race check are
the plan's, computed before fusion: fusion changes execution, never timing.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from dataclasses import dataclass, field
from functools import partial
from typing import Callable

import numpy as np

from nmc.common import nm_format
from nmc.isa.footprint import Region
from nmc.isa.table import Instr, Mem
from nmc.runtime.batch import best_time
from nmc.runtime.semantics import matmul_thunk

MATRIX = ("matmul", "imatmul", "spmatmul", "ispmatmul")
_INT8 = ("imatmul", "ispmatmul")
_SPARSE = ("spmatmul", "ispmatmul")
_ON_CHIP = (int(Mem.SPAD), int(Mem.ACC))
_PROBED: dict[tuple, bool] = {}  # fp32 shapes probed in this process (`_probe`)
MAX_WASTE = 2.0  # a group's GEMM may compute at most this many times its members' MACs
_INT8_EXACT_K = 1 << 17  # int32 sums of k products of int8 cannot overflow below this


@dataclass(frozen=True)
class DramView:
    """`rows` rows of `cols` words at `addr`, `stride` words apart, in DRAM."""

    addr: int
    rows: int
    cols: int
    stride: int

    def region(self) -> Region:
        return Region(Mem.DRAM, self.addr, self.cols, self.rows, self.stride)

    def of(self, dram: np.ndarray) -> np.ndarray:
        """The view on a DRAM of one row ([words]) or of B rows ([B x words])."""
        item = dram.itemsize
        shape, strides = (self.rows, self.cols), (self.stride * item, item)
        if dram.ndim == 2:
            shape, strides = (dram.shape[0], *shape), (dram.strides[0], *strides)
        return np.ndarray(shape, dram.dtype, dram, self.addr * item, strides)


@dataclass
class Member:
    """A matrix instruction whose operands come from DRAM (see the module docstring)."""

    pos: int  # position in execution order
    fields: dict
    a: DramView
    w: tuple[DramView, ...]  # the W tile; N:M: its values and index words
    loads: list[tuple[int, DramView]]  # (position of the load, the view it read)
    row: int = 0  # first row of its A block in the group's A_box
    col: int = 0  # first column of its W tile in the group's P


@dataclass
class Group:
    """Members computed by one GEMM at the first one's position (the anchor)."""

    mnemonic: str
    k: int
    transpose: bool
    pattern: tuple[int, int] | None
    a_base: int  # DRAM address of row 0 of the A matrix (the anchor's A)
    pitch: int
    a_cols: int
    members: list[Member] = field(default_factory=list)
    rows: tuple[int, int] = (0, 0)  # A_box rows, relative to a_base
    tiles: dict[tuple, int] = field(default_factory=dict)  # W tile -> its first column
    width: int = 0  # columns of P
    useful: int = 0  # the members' products (sum of m x n)
    static_w: bool = False  # every W tile is a constant: built once, kept across runs
    w_cat: np.ndarray | None = None  # static W, once built

    @property
    def anchor(self) -> int:
        return self.members[0].pos

    def waste(self, rows: tuple[int, int], width: int, extra: Member) -> float:
        """Products the GEMM would compute over the members' (with `extra`)."""
        useful = self.useful + extra.a.rows * extra.fields["n"]
        return (rows[1] - rows[0]) * width / max(useful, 1)

    # -- run time ---------------------------------------------------------------------

    def a_view(self) -> DramView:
        """A_box in DRAM: the rows the members' A blocks span."""
        return DramView(self.a_base + self.rows[0] * self.pitch, self.rows[1] - self.rows[0],
                        self.a_cols, self.pitch)

    def weights(self, dram: np.ndarray) -> np.ndarray:
        """[k x width] ([width x k] when transposed): the W tiles side by side, read from
        `dram` (one row's) now; int8 for imatmul, and for ispmatmul where the unpacked
        values fit (else float32, multiplied in float64: exact, as per tile), else float32."""
        if self.w_cat is not None:
            return self.w_cat
        shape = (self.width, self.k) if self.transpose else (self.k, self.width)
        cat = np.empty(shape, np.int8 if self.mnemonic == "imatmul" else np.float32)
        for views, col in self.tiles.items():
            tile = _w_tile(self, views, dram)
            if self.transpose:
                cat[col:col + tile.shape[0]] = tile
            else:
                cat[:, col:col + tile.shape[1]] = tile
        if self.mnemonic == "ispmatmul" and np.abs(cat).max(initial=0) <= 127:
            cat = cat.astype(np.int8)
        if self.static_w:
            self.w_cat = cat
        return cat


def _w_tile(g: Group, views: tuple[DramView, ...], dram: np.ndarray) -> np.ndarray:
    """One W tile as the per-tile semantics see it ([k x n], or [n x k] transposed): int8
    for imatmul, float32 otherwise (unpacked int8 values converted exactly)."""
    k, int8 = g.k, g.mnemonic in _INT8
    if g.pattern is not None:
        values, words = (v.of(dram) for v in views)
        values = values.view(np.int8).astype(np.float32) if int8 else values
        return nm_format.unpack_tile(np.ascontiguousarray(values),
                                     np.ascontiguousarray(words).view(np.uint32), k,
                                     *g.pattern)
    tile = views[0].of(dram)
    return tile.view(np.int8) if int8 else tile


def gemm_into(mnemonic: str, a: np.ndarray, w: np.ndarray, transpose: bool,
              out: np.ndarray) -> None:
    """out = a . w (w.T when transposed), all contiguous: int32 for the int8 opcodes
    (exact), else one sgemm."""
    import torch  # lazy, as in nmc.runtime.semantics

    ta, tw, to = torch.from_numpy(a), torch.from_numpy(w), torch.from_numpy(out)
    if mnemonic not in _INT8:
        torch.mm(ta, tw.T if transpose else tw, out=to)
    elif a.shape[1] == 0:
        out.fill(0)
    elif tw.dtype == torch.int8:
        torch._int_mm(ta, tw, out=to)
    else:
        wide = torch.mm(ta.to(torch.float64), tw.to(torch.float64))  # exact below 2^53
        to.copy_(wide.to(torch.int64).to(torch.int32))


class _GroupRun:
    """A group on one machine's memories: its A_box and P in buffers (`bind`), and the
    members' calls on fixed views of them. `dram` [words], or [B x words] for the B
    rows of a `BatchMachine`."""

    def __init__(self, g: Group, dram: np.ndarray, acc: np.ndarray):
        self.g, self.dram, self.acc = g, dram, acc
        int8 = g.mnemonic in _INT8
        view = g.a_view().of(dram)
        self.a_view = view.view(np.int8) if int8 else view
        self.p_shape = (*self.a_view.shape[:-1], g.width)
        self.p_dtype = np.dtype(np.int32 if int8 else np.float32)
        self.last = max(m.pos for m in g.members)  # P lives from the anchor to here

    def bind(self, a_flat: np.ndarray, p_flat: np.ndarray) -> dict[int, Callable]:
        """The members' calls, with A_box and P at the start of these buffers."""
        g = self.g
        self.a_buf = a_flat[:self.a_view.size].reshape(self.a_view.shape)
        self.p_buf = p_flat[:int(np.prod(self.p_shape))].reshape(self.p_shape)
        calls = {}
        for m in g.members:
            f = m.fields
            words = self.acc[..., f["out"]:f["out"] + m.a.rows * f["n"]]
            block = words.reshape(*self.acc.shape[:-1], m.a.rows, f["n"])
            block = block.view(self.p_dtype)
            r = m.row - g.rows[0]
            part = self.p_buf[..., r:r + m.a.rows, m.col:m.col + f["n"]]
            apply = (partial(np.add, block, part, out=block) if f["accumulate"]
                     else partial(np.copyto, block, part))
            calls[m.pos] = partial(self._anchor, apply) if m.pos == g.anchor else apply
        return calls

    def _anchor(self, apply: Callable) -> None:
        g = self.g
        np.copyto(self.a_buf, self.a_view)
        if self.dram.ndim == 1:
            gemm_into(g.mnemonic, self.a_buf, g.weights(self.dram), g.transpose, self.p_buf)
        elif g.mnemonic in _INT8 and g.static_w:  # one integer GEMM for all rows: exact
            b, h, k = self.a_buf.shape
            gemm_into(g.mnemonic, self.a_buf.reshape(b * h, k), g.weights(self.dram[0]),
                      False, self.p_buf.reshape(b * h, -1))
        else:  # row by row, each row exactly the one-input form
            for a, d, p in zip(self.a_buf, self.dram, self.p_buf):
                gemm_into(g.mnemonic, a, g.weights(d), g.transpose, p)
        apply()


def _bind(runs: list[_GroupRun]) -> dict[int, Callable]:
    """Buffers for the groups, shared where their lives do not meet: one A_box buffer per
    element type (used only during an anchor's call), and P buffers handed from group to
    group (first fit, in anchor order: a product lives from its anchor to its last
    member), so memory grows with the products alive at once, not with the layers."""
    a_size: dict[np.dtype, int] = {}
    pools: list[list] = []  # [dtype, position its last user ends, size, users]
    for run in sorted(runs, key=lambda r: r.g.anchor):
        a_size[run.a_view.dtype] = max(a_size.get(run.a_view.dtype, 0), run.a_view.size)
        pool = next((p for p in pools if p[0] == run.p_dtype and p[1] < run.g.anchor), None)
        if pool is None:
            pool = [run.p_dtype, 0, 0, []]
            pools.append(pool)
        pool[1] = run.last
        pool[2] = max(pool[2], int(np.prod(run.p_shape)))
        pool[3].append(run)
    a_flat = {dtype: np.empty(size, dtype) for dtype, size in a_size.items()}
    calls: dict[int, Callable] = {}
    for dtype, _, size, users in pools:
        p_flat = np.empty(size, dtype)
        for run in users:
            calls.update(run.bind(a_flat[run.a_view.dtype], p_flat))
    return calls


# --------------------------------------------------------------------------------------
# The analysis


def _from_load(src: Region, dst: Region, addr: int, rows: int, cols: int) -> DramView | None:
    """The DRAM view an operand block [rows x cols] at `addr` holds, when it lies in the
    block a load wrote (`dst`, from DRAM `src`, row by row): its rows are rows of the
    load's (same width), or it is one row."""
    off = addr - dst.start
    width = src.cols
    if rows == 1:
        r, c = divmod(off, width)
        if c + cols > width:
            return None
        return DramView(src.start + r * src.stride, 1, cols, src.stride or cols)
    if cols != width or off % width or src.stride <= 0:
        return None  # (a zero stride repeats one row: not rows of a matrix)
    return DramView(src.start + (off // width) * src.stride, rows, cols, src.stride)


def _operand_blocks(instr: Instr) -> list[tuple[int, int, int]]:
    """(SPAD address, rows, cols) of A, then W (values, and index words for N:M), in
    words, as the semantics read them."""
    f = instr.fields
    m, k, n = f["m"], f["k"], f["n"]
    q = 4 if instr.mnemonic in _INT8 else 1
    a = (f["a"], m, k // q)
    if instr.mnemonic in _SPARSE:
        kc = nm_format.compressed_rows(k, f["pat_n"], f["pat_m"])
        return [a, (f["w"], kc, n // q), (f["idx"], nm_format.index_rows(kc, f["pat_m"]), n)]
    if instr.mnemonic == "matmul" and f["transpose_w"]:
        return [a, (f["w"], n, k)]
    return [a, (f["w"], k, n // q)]


class _Walk:
    """In execution order: per on-chip word, the position of its last writer (-1: none
    yet); per load, who read its words (position, memory); every DRAM write (position,
    bounding range). `footprints`: the fast path's footprint slots (`fastpath.Plan`'s
    reads and writes: per slot, memory, start and end arrays indexed by pc; on-chip
    regions are dense, so these are exact there)."""

    def __init__(self, instructions, order, sizes, footprints):
        self.instrs = [instructions[pc] for pc in order]
        at = np.asarray(order, np.int64)
        self.reads, self.writes = ([tuple(a[at].tolist() for a in slot) for slot in side]
                                   for side in footprints)
        self.writer = {m: np.full(sizes[m], -1, np.int64) for m in _ON_CHIP}
        self.loaded = {m: np.zeros(sizes[m], bool) for m in _ON_CHIP}  # last writer a load
        self.readers: dict[int, list[tuple[int, int]]] = {}  # load pos -> [(pos, mem)]
        self.dram_writes: list[tuple[int, int, int]] = []
        self.candidates: list[Member] = []
        self._sources: dict[int, tuple[Region, Region]] = {}

    def run(self) -> None:
        instrs, writer = self.instrs, self.writer
        for pos, instr in enumerate(instrs):
            if instr.mnemonic in MATRIX and instr["m"] and instr["n"]:
                member = self._member(pos, instr)
                if member is not None:
                    self.candidates.append(member)
            for mems, starts, ends in self.reads:
                mem = mems[pos]
                if mem in writer and self.loaded[mem][starts[pos]:ends[pos]].any():
                    for q in self._writers(mem, starts[pos], ends[pos]):
                        if instrs[q].mnemonic == "load":
                            self.readers.setdefault(q, []).append((pos, mem))
            for mems, starts, ends in self.writes:
                mem = mems[pos]
                if mem in writer:
                    writer[mem][starts[pos]:ends[pos]] = pos
                    self.loaded[mem][starts[pos]:ends[pos]] = instr.mnemonic == "load"
                elif mem == Mem.DRAM:
                    self.dram_writes.append((pos, starts[pos], ends[pos]))

    def _writers(self, mem: int, start: int, end: int):
        span = self.writer[mem][start:end]
        lo, hi = int(span.min()), int(span.max())
        if lo == hi:
            return () if lo < 0 else (lo,)
        return [int(q) for q in np.unique(span) if q >= 0]

    def _member(self, pos: int, instr: Instr) -> Member | None:
        views, loads = [], []
        for addr, rows, cols in _operand_blocks(instr):
            span = self.writer[Mem.SPAD][addr:addr + rows * cols]
            q = int(span[0])
            if q < 0 or span.min() != q or span.max() != q:
                return None
            if self.instrs[q].mnemonic != "load":
                return None
            if q not in self._sources:
                (src,), (dst,) = self.instrs[q].footprint()
                self._sources[q] = src, dst
            view = _from_load(*self._sources[q], addr, rows, cols)
            if view is None:
                return None
            views.append(view)
            loads.append((q, view))
        return Member(pos, dict(instr.fields), views[0], tuple(views[1:]), loads)


class _Conflicts:
    """Whether a DRAM write lies strictly between two positions on a view (bounding
    ranges first, confirmed on the exact regions with `Region.overlaps`)."""

    def __init__(self, instrs: list[Instr], writes: list[tuple[int, int, int]]):
        self.instrs = instrs
        self.pos = [p for p, _, _ in writes]
        self.lo = np.array([lo for _, lo, _ in writes], np.int64)
        self.hi = np.array([hi for _, _, hi in writes], np.int64)

    def between(self, a: int, b: int, view: DramView) -> bool:
        lo, hi = sorted((a, b))
        i, j = bisect_right(self.pos, lo), bisect_left(self.pos, hi)
        if i == j:
            return False
        region = view.region()
        hit = np.flatnonzero((self.lo[i:j] < region.end) & (region.start < self.hi[i:j]))
        return any(w.overlaps(region) for h in hit
                   for w in self.instrs[self.pos[i + h]].footprint()[1] if w.mem == Mem.DRAM)


def _key(m: Member, mnemonic: str) -> tuple:
    f = m.fields
    pattern = (f["pat_n"], f["pat_m"]) if mnemonic in _SPARSE else None
    return (mnemonic, f["k"], bool(f.get("transpose_w", 0)), pattern, m.a.stride,
            m.a.addr % max(m.a.stride, 1), m.a.cols)


def _place(g: Group, m: Member) -> tuple[tuple[int, int], int, int] | None:
    """(A_box rows, P width, member's A row offset) after adding `m`, or None."""
    off = m.a.addr - g.a_base
    if m.a.rows > 1 and m.a.stride != g.pitch or off % max(g.pitch, 1):
        return None
    r = off // max(g.pitch, 1)
    rows = (min(g.rows[0], r), max(g.rows[1], r + m.a.rows)) if g.members else (r, r + m.a.rows)
    width = g.width + (0 if m.w in g.tiles else m.fields["n"])
    return rows, width, r


def group(walk: _Walk, varying_dram: np.ndarray) -> list[Group]:
    """Greedy, in execution order: a candidate joins the open group of its key when its
    loads are stable against that group's anchor and the GEMM stays within MAX_WASTE;
    otherwise it opens a new group. Groups of one member are dropped."""
    conflicts = _Conflicts(walk.instrs, walk.dram_writes)
    open_groups: dict[tuple, Group] = {}
    done: list[Group] = []
    for m in walk.candidates:
        mnemonic = walk.instrs[m.pos].mnemonic
        if mnemonic in _INT8 and m.fields["k"] >= _INT8_EXACT_K:
            continue
        key = _key(m, mnemonic)
        g = open_groups.get(key)
        placed = None
        if g is not None and not any(conflicts.between(q, g.anchor, v) for q, v in m.loads):
            placed = _place(g, m)
            if placed is not None and g.waste(placed[0], placed[1], m) > MAX_WASTE:
                placed = None
        if placed is None:
            if any(conflicts.between(q, m.pos, v) for q, v in m.loads):
                continue  # its source changed between its load and itself
            if g is not None:
                done.append(g)
            f = m.fields
            g = open_groups[key] = Group(
                mnemonic, f["k"], key[2], key[3], m.a.addr, m.a.stride, m.a.cols)
            placed = _place(g, m)
        g.rows, g.width, m.row = placed
        if m.w not in g.tiles:
            g.tiles[m.w] = g.width - m.fields["n"]
        m.col = g.tiles[m.w]
        g.members.append(m)
        g.useful += m.a.rows * m.fields["n"]
    done.extend(open_groups.values())
    groups = [g for g in done if len(g.members) > 1]
    for g in groups:
        g.static_w = not any(varying_dram[v.region().start:v.region().end].any()
                             for views in g.tiles for v in views)
    return groups


# --------------------------------------------------------------------------------------
# fp32: fuse only what a probe finds bit-identical


def _aligned(rng, shape, offset: int) -> np.ndarray:
    """Random float32 of `shape` starting `offset` words past a 64-byte boundary (as the
    operand sits in the scratchpad: the sgemm's path may depend on alignment)."""
    size = int(np.prod(shape))
    raw = np.empty(size + 32, np.float32)
    skip = (-raw.ctypes.data // 4) % 16 + offset % 16
    block = raw[skip:skip + size].reshape(shape)
    block[...] = rng.standard_normal(shape).astype(np.float32)
    return block


def _probe(g: Group, cache: dict) -> bool:
    """Whether an fp32 group runs fused: on random operands of exactly its shapes (and
    the scratchpad's alignments), every member's block of the fused product, copied to
    or added into its ACC block, equals the per-tile sgemm bit for bit; and the fused
    form (A_box copy, GEMM, the members' blocks) is not slower than the tiles with the
    copies of their distinct A and W tiles (what the loads it makes dead cost), unless
    its W is a constant N:M one (unpacked once, not per tile and run)."""
    shape_key = (g.mnemonic, g.k, g.transpose, g.static_w, g.rows[1] - g.rows[0], g.width,
                 tuple((m.row - g.rows[0], m.a.rows, m.col, m.fields["n"], m.fields["accumulate"],
         m.fields["a"] % 16, m.fields["w"] % 16, m.fields["out"] % 16) for m in g.members))
    found = cache.get(shape_key)
    if found is not None:
        return found
    rng = np.random.default_rng(0)
    k, height = g.k, g.rows[1] - g.rows[0]
    a_src = rng.standard_normal((height, k)).astype(np.float32)
    a_box = np.empty_like(a_src)
    w_cat = rng.standard_normal((g.width, k) if g.transpose else (k, g.width)).astype(
        np.float32)
    product = np.empty((height, g.width), np.float32)
    np.copyto(a_box, a_src)
    gemm_into(g.mnemonic, a_box, w_cat, g.transpose, product)
    tiles, fused, copies = [], [], []
    seen: set = set()
    for m in g.members:
        f = m.fields
        r = m.row - g.rows[0]
        rows, cols = slice(r, r + m.a.rows), slice(m.col, m.col + f["n"])
        a = _aligned(rng, (m.a.rows, k), f["a"])
        w_src = w_cat[cols] if g.transpose else w_cat[:, cols]
        w = _aligned(rng, w_src.shape, f["w"])
        for key, dst, src in ((("a", m.a), a, a_src[rows]), (("w", m.w), w, w_src)):
            dst[...] = src
            if key not in seen:
                seen.add(key)
                copies.append(partial(np.copyto, dst, src))
        out_tile = _aligned(rng, (m.a.rows, f["n"]), f["out"])
        out_fused = out_tile.copy()
        tiles.append(matmul_thunk(a, w.T if g.transpose else w, out_tile,
                                  bool(f["accumulate"])))
        fused.append(partial(np.add, out_fused, product[rows, cols], out=out_fused)
                     if f["accumulate"] else partial(np.copyto, out_fused, product[rows, cols]))
        tiles[-1]()
        fused[-1]()
        if not np.array_equal(out_tile.view(np.uint32), out_fused.view(np.uint32)):
            cache[shape_key] = False
            return False

    def per_tile():
        for call in copies + tiles:
            call()

    def one_gemm():
        np.copyto(a_box, a_src)
        gemm_into(g.mnemonic, a_box, w_cat, g.transpose, product)
        for call in fused:
            call()

    # a constant N:M W is unpacked once instead of on every run: that alone outweighs
    # any difference between the GEMMs
    found = (g.pattern is not None and g.static_w) or best_time(one_gemm) <= best_time(per_tile)
    cache[shape_key] = found
    return found


# --------------------------------------------------------------------------------------
# The plan


@dataclass
class Fusion:
    """What fusion changes in a run: the groups, their members (positions in execution
    order), and the loads (positions) nobody but fused members reads."""

    groups: list[Group]
    members: dict[int, tuple[Group, Member]]
    elided: set[int]

    @property
    def fused_instructions(self) -> int:
        return len(self.members)

    def thunks(self, mems) -> dict[int, Callable | None]:
        """Replacement calls (None: nothing to do), by position, on the memories of a
        `Machine` or, [B x words] each, of a `BatchMachine`."""
        out: dict[int, Callable | None] = {pos: None for pos in self.elided}
        out.update(_bind([_GroupRun(g, mems[Mem.DRAM], mems[Mem.ACC]) for g in self.groups]))
        return out


def plan(instructions: list[Instr], order: list[int], sizes: tuple[int, ...],
         varying_dram: np.ndarray, footprints: tuple[list, list]) -> Fusion:
    """The fusion of a program's execution order (`order`: pcs), proved from footprints
    (module docstring; `footprints`: the fast path's slots, `fastpath.Plan.reads` and
    `.writes`). `varying_dram[w]`: DRAM word w may differ between runs (an input or a
    word the program writes); W tiles read from none of those are built once."""
    walk = _Walk(instructions, order, sizes, footprints)
    walk.run()
    groups = [g for g in group(walk, varying_dram)
              if g.mnemonic in _INT8 or _probe(g, _PROBED)]
    members = {m.pos: (g, m) for g in groups for m in g.members}
    elided = {q for q, readers in walk.readers.items()
              if all(p in members and mem == Mem.SPAD for p, mem in readers)}
    return Fusion(groups, members, elided)

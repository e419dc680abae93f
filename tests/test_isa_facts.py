"""The per-instruction facts: every instruction of the ISA table has a footprint, MACs, DRAM
traffic (nmc.isa.table) and cycles (nmc.runtime.timing), each one formula that gives the same
answer for one instruction's ints and for arrays of many instructions' fields (how the
emulator's fast path evaluates them); and the one overlap test of footprints."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from emulator_helpers import TARGET
from isa_strategies import instrs_of
from nmc.isa.footprint import Region, bounding, first_overlap, hazard
from nmc.isa.table import GLOAD, OP_BY_OPCODE, OPS, Instr, Mem
from nmc.runtime.fastpath import footprint_slots, per_instruction
from nmc.runtime.timing import CYCLES, cycles_of


def test_every_instruction_has_a_cycles_formula():
    assert sorted(CYCLES) == sorted(OP_BY_OPCODE)


@pytest.mark.parametrize("spec", OPS, ids=lambda s: s.mnemonic)
def test_every_instruction_has_its_isa_facts(spec):
    for fact in (spec.footprint, spec.macs, spec.dram_traffic):
        assert callable(fact), (spec.mnemonic, fact)


def _scalar_facts(instr: Instr):
    reads, writes = instr.footprint()
    regions = [sorted((int(r.mem), r.start, r.end) for r in side) for side in (reads, writes)]
    read, written = instr.spec.dram_traffic(instr.fields)
    return (regions, int(instr.spec.macs(instr.fields)), (int(read), int(written)),
            int(cycles_of(instr.spec, instr.fields, TARGET)))


def _array_facts(spec, group: list[Instr]):
    """The facts of every instruction of `group`, evaluated once on arrays of its fields."""
    fields = {f.name: np.array([i[f.name] for i in group], np.int64) for f in spec.all_fields}
    g = len(group)
    reads, writes = footprint_slots(spec, fields)
    macs = per_instruction(spec.macs(fields), g)
    read, written = (per_instruction(x, g) for x in spec.dram_traffic(fields))
    cycles = per_instruction(cycles_of(spec, fields, TARGET), g)
    out = []
    for k in range(g):
        regions = [sorted((int(m[k]), int(s[k]), int(e[k])) for m, s, e in side if m[k] >= 0)
                   for side in (reads, writes)]
        out.append((regions, int(macs[k]), (int(read[k]), int(written[k])), int(cycles[k])))
    return out


@settings(max_examples=40, deadline=None)
@given(st.data())
@pytest.mark.parametrize("spec", OPS, ids=lambda s: s.mnemonic)
def test_array_form_of_every_fact_matches_the_scalar_form(spec, data):
    group = data.draw(st.lists(instrs_of(spec), min_size=1, max_size=4))
    assert _array_facts(spec, group) == [_scalar_facts(i) for i in group]


def test_work_of_the_matrix_and_dma_instructions():
    mm = Instr.make("matmul", m=3, k=5, n=7)
    assert mm.spec.macs(mm.fields) == 105
    sp = Instr.make("spmatmul", m=4, k=64, n=16, pat_n=2, pat_m=8)
    assert sp.spec.macs(sp.fields) == 4 * 16 * 16  # only the kept weights
    load = Instr.make("load", rows=3, cols=4, stride=10)
    assert load.spec.dram_traffic(load.fields) == (12, 0)
    gstore = Instr.make("gstore", count=2, block=5, limit=9, stride=5)
    assert gstore.spec.dram_traffic(gstore.fields) == (0, 10)  # the blocks moved, not the table
    assert Instr.make("vun").spec.macs({}) == 0


def test_nm_helpers_give_python_ints_for_ints():
    from nmc.common.nm_format import compressed_rows, index_bits, index_rows

    assert [type(x) for x in (index_bits(8), compressed_rows(64, 2, 8),
                              index_rows(9, 8))] == [int, int, int]
    assert (index_bits(8), compressed_rows(64, 2, 8), index_rows(9, 8)) == (3, 16, 1)


# ------------------------------------------------------------------------- the overlap test

def _words(r: Region) -> set[tuple[int, int]]:
    return {(int(r.mem), r.start + i * r.stride + j) for i in range(r.rows) for j in range(r.cols)}


regions = st.builds(
    lambda mem, start, cols, rows, stride: Region(mem, start, cols, rows, stride),
    st.sampled_from([Mem.DRAM, Mem.SPAD]), st.integers(0, 40), st.integers(0, 6),
    st.integers(0, 5), st.integers(0, 12))


@settings(max_examples=500, deadline=None)
@given(regions, regions)
def test_overlaps_is_exact(a, b):
    assert a.overlaps(b) == bool(_words(a) & _words(b)) == b.overlaps(a)
    # the bounding range covers the region: overlapping it is necessary, not sufficient
    assert _words(a) <= _words(a.bounds())
    assert not a.overlaps(b) or a.bounds().overlaps(b.bounds())


def test_interleaved_column_tiles_do_not_overlap_but_their_bounds_do():
    tile0 = Region(Mem.DRAM, 1000, 8, rows=8, stride=16)
    tile1 = Region(Mem.DRAM, 1008, 8, rows=8, stride=16)
    assert not tile0.overlaps(tile1)
    assert tile0.bounds().overlaps(tile1.bounds())
    store = ((Region(Mem.SPAD, 0, 64),), (tile1,))
    load = ((tile0,), (Region(Mem.SPAD, 512, 64),))
    assert not hazard(store, load)
    assert hazard(bounding(store), bounding(load))


def test_gathered_dma_touches_only_the_table_blocks():
    g = Instr.make("gload", mem=Mem.SPAD, local=0, dram=100, idx=500, count=2, block=4,
                   stride=10, limit=3)
    (table, idx), (packed,) = g.footprint()
    assert table == Region(Mem.DRAM, 100, 4, rows=3, stride=10) and table.end == 124
    gap = Region(Mem.DRAM, 104, 6)  # between blocks 0 and 1: no index can name it
    assert first_overlap((table,), (gap,)) is None
    assert first_overlap((table,), (Region(Mem.DRAM, 109, 2),)) == (table, Region(Mem.DRAM, 109, 2))
    assert g.spec is GLOAD


def test_footprints_leave_out_regions_without_words():
    mm = Instr.make("matmul", m=2, k=2, n=2, accumulate=0)
    assert [r.mem for r in mm.footprint()[0]] == [Mem.SPAD, Mem.SPAD]
    assert [r.mem for r in mm.with_fields(accumulate=1).footprint()[0]] == [
        Mem.SPAD, Mem.SPAD, Mem.ACC]
    assert Instr.make("load", rows=0, cols=5).footprint() == ((), ())

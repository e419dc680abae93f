"""insert-tokens: tokens derived from memory hazards between units."""

from nmc.isa.tokens import UNIT_BIT, assign_tokens
from nmc.isa.table import Instr, Mem, Unit, VUnFn

LOAD, STORE, MATRIX, VECTOR = (UNIT_BIT[u] for u in (Unit.LOAD, Unit.STORE, Unit.MATRIX,
                                                     Unit.VECTOR))


def load(local, dram=0, rows=1, cols=16, mem=Mem.SPAD):
    return Instr.make("load", mem=mem, local=local, dram=dram, rows=rows, cols=cols, stride=cols)


def store(local, dram, rows=1, cols=16):
    return Instr.make("store", mem=Mem.SPAD, local=local, dram=dram, rows=rows, cols=cols,
                      stride=cols)


def copy(dst, src, dst_mem=Mem.SPAD, src_mem=Mem.SPAD, cols=16):
    return Instr.make("vun", fn=VUnFn.COPY, dst_mem=dst_mem, dst=dst, src_mem=src_mem, src=src,
                      rows=1, cols=cols)


def masks(instrs):
    return [(i["wait"], i["signal"]) for i in instrs]


def test_read_after_write_chain():
    out = assign_tokens([load(0), copy(16, 0), store(16, 100), Instr.make("halt")])
    assert masks(out) == [(0, VECTOR), (LOAD, STORE), (VECTOR, 0), (0, 0)]


def test_independent_buffers_need_no_tokens():
    out = assign_tokens([load(0), load(32), copy(64, 64)])
    assert masks(out) == [(0, 0), (0, 0), (0, 0)]


def test_write_after_read_waits_for_the_reader():
    # the second load overwrites buffer 0 while the vector unit may still be reading it
    out = assign_tokens([load(0), copy(16, 0), load(0, dram=50)])
    assert masks(out)[2] == (VECTOR, 0)
    assert masks(out)[1] == (LOAD, LOAD)


def test_only_latest_producer_per_unit_is_awaited():
    # two loads into two buffers, one copy reading both: one token, from the later load
    out = assign_tokens([load(0), load(16), Instr.make(
        "vbin", fn=0, dst_mem=Mem.SPAD, dst=64, a_mem=Mem.SPAD, a=0, b_mem=Mem.SPAD, b=16,
        rows=1, cols=16)])
    assert masks(out) == [(0, 0), (0, VECTOR), (LOAD, 0)]


def test_knowledge_is_transitive():
    # store waits on vector, which waited on the load: a later store-vs-load hazard on the
    # same words needs no extra token because the store already knows the load finished
    out = assign_tokens([load(0, dram=200), copy(16, 0), store(16, 300), store(0, 400)])
    assert masks(out)[3] == (0, 0)


def test_signals_and_waits_match_in_fifo_order():
    instrs = []
    for t in range(6):  # double-buffered stream: load -> copy -> store
        buf = (t % 2) * 16
        instrs += [load(buf, dram=t * 16), copy(64 + buf, buf), store(64 + buf, 1000 + t * 16)]
    out = assign_tokens(instrs)
    for producer in (LOAD, STORE, MATRIX, VECTOR):
        for consumer in (LOAD, STORE, MATRIX, VECTOR):
            pushed = sum(1 for i in out
                         if UNIT_BIT.get(i.unit) == producer and i["signal"] & consumer)
            popped = sum(1 for i in out
                         if UNIT_BIT.get(i.unit) == consumer and i["wait"] & producer)
            assert pushed == popped, (producer, consumer)


def test_an_implied_older_conflict_gets_no_token():
    # load -> in-place vector op -> store of the same buffer: the store conflicts with both
    # the load and the vector op, but waiting for the vector op implies the load is done
    out = assign_tokens([load(0), copy(0, 0), store(0, 100)])
    assert masks(out) == [(0, VECTOR), (LOAD, STORE), (VECTOR, 0)]


def test_interleaved_column_tiles_are_still_ordered():
    # the store writes column tile 1 of a [8 x 16] matrix, the load reads column tile 0: no
    # word in common (the race check accepts them unordered), but insert-tokens orders
    # accesses on bounding ranges, as the programs it makes always have
    tile1 = Instr.make("store", mem=Mem.SPAD, local=0, dram=1008, rows=8, cols=8, stride=16)
    tile0 = Instr.make("load", mem=Mem.SPAD, local=512, dram=1000, rows=8, cols=8, stride=16)
    assert masks(assign_tokens([tile1, tile0])) == [(0, LOAD), (STORE, 0)]

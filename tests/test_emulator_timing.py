"""The timing simulation on small programs whose cycle counts are worked out by hand.

Reference target sta_ref: dma latency 64, row overhead 1, 32 bytes/cycle; matrix 16x16,
latency 8; vector 16 lanes, latency 4, cost add 1, gelu 6. The formulas of
nmc.runtime.timing, written out:
    load/store [rows x cols]: 64 + rows*1 + ceil(rows*cols*4 / 32)
    matmul m,k,n:             8 + ceil(m/16) * ceil(n/16) * k
    vector fn [rows x cols]:  4 + rows * ceil(cols/16) * cost[fn]
"""

from __future__ import annotations

import time
from math import ceil

import numpy as np
import pytest

from emulator_helpers import ACC, LOAD, MATRIX, SPAD, STORE, TARGET, VECTOR, I, program, serialize
from nmc.isa.table import VBinFn, VUnFn
from nmc.runtime.emulator import EmulatorError, run_program
from nmc.runtime.report import format_report
from nmc.runtime.timing import instruction_cycles


def dma(rows, cols):
    return 64 + rows * 1 + ceil(rows * cols * 4 / 32)


def mm(m, k, n):
    return 8 + ceil(m / 16) * ceil(n / 16) * k


def vec(rows, cols, cost):
    return 4 + rows * ceil(cols / 16) * cost


def test_hand_formulas_agree_with_timing_module():
    assert dma(16, 32) == 144 == instruction_cycles(I("load", rows=16, cols=32, stride=32), TARGET)
    assert dma(32, 16) == 160
    assert dma(16, 16) == 112 == instruction_cycles(I("store", rows=16, cols=16), TARGET)
    assert mm(16, 32, 16) == 40 == instruction_cycles(I("matmul", m=16, k=32, n=16), TARGET)
    assert vec(16, 32, 6) == 196 == instruction_cycles(I("vun", fn=VUnFn.GELU, rows=16, cols=32), TARGET)


# A [16 x 32] at DRAM 0, W [32 x 16] at 512, A2 at 1024; OUT at 2048 and 2304.
M, K, N = 16, 32, 16
INPUTS = [("a", (M, K), 0), ("w", (K, N), 512), ("a2", (M, K), 1024)]
OUTPUTS = [("y", (M, N), 2048), ("y2", (M, N), 2304)]


def data():
    rng = np.random.default_rng(1)
    return {n: rng.standard_normal(s).astype(np.float32) for n, s, _ in INPUTS}


def ref(d):
    return d["a"].astype(np.float64) @ d["w"], d["a2"].astype(np.float64) @ d["w"]


def load_a(signal=0, wait=0, local=0, dram=0):
    return I("load", mem=SPAD, local=local, dram=dram, rows=M, cols=K, stride=K, signal=signal, wait=wait)


def load_w(signal=0):
    return I("load", mem=SPAD, local=4096, dram=512, rows=K, cols=N, stride=N, signal=signal)


def matmul(a=0, out=0, wait=0, signal=0):
    return I("matmul", a=a, w=4096, out=out, m=M, k=K, n=N, wait=wait, signal=signal)


def store(out=0, dram=2048, wait=0, signal=0):
    return I("store", mem=ACC, local=out, dram=dram, rows=M, cols=N, stride=N, wait=wait, signal=signal)


def test_serial_load_matmul_store():
    # load A 0..144, load W 144..304 (signals matrix), matmul 304..344, store 344..456
    prog = program(
        [load_a(), load_w(signal=MATRIX), matmul(wait=LOAD, signal=STORE), store(wait=MATRIX)],
        inputs=INPUTS, outputs=OUTPUTS[:1],
    )
    d = data()
    r = run_program(prog, d, TARGET, trace=True)
    assert r.total_cycles == dma(16, 32) + dma(32, 16) + mm(16, 32, 16) + dma(16, 16) == 456
    assert r.trace == [(0, "load", 0, 144), (1, "load", 144, 304), (2, "matrix", 304, 344),
                       (3, "store", 344, 456)]
    assert r.busy_cycles == {"load": 304, "store": 112, "matrix": 40, "vector": 0}
    assert r.stall_cycles == {"load": 0, "store": 344, "matrix": 304, "vector": 0}
    assert r.idle_cycles == {"load": 152, "store": 0, "matrix": 112, "vector": 456}
    assert r.instruction_counts == {"load": 2, "store": 1, "matrix": 1, "vector": 0}
    assert r.matrix_macs == 16 * 32 * 16
    assert r.matrix_utilization == pytest.approx(16 * 32 * 16 / (40 * 16 * 16))
    assert r.dram_bytes_read == (16 * 32 + 32 * 16) * 4
    assert r.dram_bytes_written == 16 * 16 * 4
    assert r.leftover_tokens == {}
    np.testing.assert_allclose(r.outputs["y"], ref(d)[0], rtol=1e-5, atol=1e-5)


def test_double_buffering_overlaps_units():
    # W 0..160; A0 (SPAD 0) 160..304 -> matrix; A2 (SPAD 1024) 304..448 -> matrix
    # M0 304..344 -> store; M1 (ACC 512) 448..488 -> store
    # S0 344..456; S1 max(456, 488)=488..600
    prog = program(
        [
            load_w(),
            load_a(signal=MATRIX, local=0, dram=0),
            load_a(signal=MATRIX, local=1024, dram=1024),
            matmul(a=0, out=0, wait=LOAD, signal=STORE),
            matmul(a=1024, out=512, wait=LOAD, signal=STORE),
            store(out=0, dram=2048, wait=MATRIX),
            store(out=512, dram=2304, wait=MATRIX),
        ],
        inputs=INPUTS, outputs=OUTPUTS,
        debug=[("w", "load", 0, 1), ("tile0", "linear", 1, 6), ("tile1", "linear", 2, 7)],
    )
    d = data()
    r = run_program(prog, d, TARGET, trace=True)
    t_w, t_a, t_m, t_s = dma(32, 16), dma(16, 32), mm(16, 32, 16), dma(16, 16)
    serial = t_w + 2 * (t_a + t_m + t_s)
    assert serial == 752
    assert r.total_cycles == 600 < serial
    assert sorted(r.trace) == [(0, "load", 0, 160), (1, "load", 160, 304), (2, "load", 304, 448),
                               (3, "matrix", 304, 344), (4, "matrix", 448, 488),
                               (5, "store", 344, 456), (6, "store", 488, 600)]
    assert r.stall_cycles == {"load": 0, "store": 344 + (488 - 456), "matrix": 304 + (448 - 344),
                              "vector": 0}
    y0, y1 = ref(d)
    np.testing.assert_allclose(r.outputs["y"], y0, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(r.outputs["y2"], y1, rtol=1e-5, atol=1e-5)

    # per-layer statistics from the debug ranges
    w, tile0, tile1 = r.layers
    assert (w.start, w.end, w.span, w.instructions) == (0, 160, 160, 1)
    assert w.busy == {"load": 160, "store": 0, "matrix": 0, "vector": 0}
    # tile0 = pcs 1..5: loads A0, A2, matmuls M0, M1, store S0
    assert tile0.busy == {"load": 288, "store": 112, "matrix": 80, "vector": 0}
    assert (tile0.start, tile0.end) == (160, 488)
    assert (tile1.start, tile1.end) == (304, 600)

    text = format_report(r, prog)
    for needle in ("tile0", "tile1", "600 cycles", "matrix utilisation", "DRAM traffic", "stalled"):
        assert needle in text


def test_ties_go_to_the_lowest_pc_and_tokens_carry_timestamps():
    # vector gelu 0..196 on its own; load 0..144 in parallel signals vector; a second
    # vector op waits for that token (already there at 144) so starts at 196 when gelu ends
    prog = program(
        [
            I("vun", fn=VUnFn.GELU, dst_mem=SPAD, dst=8192, src_mem=SPAD, src=8192 + 512, rows=16, cols=32),
            load_a(signal=VECTOR),
            I("vbin", fn=VBinFn.ADD, dst_mem=SPAD, dst=0, a_mem=SPAD, a=0, b_mem=SPAD, b=0,
              rows=16, cols=32, wait=LOAD),
        ],
    )
    r = run_program(prog, {}, TARGET, trace=True)
    assert r.trace == [(0, "vector", 0, 196), (1, "load", 0, 144), (2, "vector", 196, 196 + vec(16, 32, 1))]
    assert r.stall_cycles["vector"] == 0
    assert r.total_cycles == 196 + 36


def test_missing_token_makes_the_result_wrong():
    # Correct: matmul signals store. Buggy: it does not, so the store runs at cycle 0,
    # before the matmul (which only starts at 304) has produced anything.
    def prog(matmul_signal, store_wait):
        return program(
            [load_a(), load_w(signal=MATRIX), matmul(wait=LOAD, signal=matmul_signal),
             store(wait=store_wait)],
            inputs=INPUTS, outputs=OUTPUTS[:1],
        )

    d = data()
    good = run_program(prog(STORE, MATRIX), d, TARGET)
    np.testing.assert_allclose(good.outputs["y"], ref(d)[0], rtol=1e-5, atol=1e-5)
    bad = run_program(prog(0, 0), d, TARGET, trace=True)
    assert (3, "store", 0, 112) in bad.trace
    assert not np.allclose(bad.outputs["y"], ref(d)[0])
    np.testing.assert_array_equal(bad.outputs["y"], 0.0)


def test_missing_token_with_overlapping_execution():
    # load W does not signal the matrix unit, and the matmul waits for nothing: it starts at
    # cycle 0 while load A (0..144) is writing the A it reads.
    prog = program(
        [load_a(), load_w(), matmul(signal=STORE), store(wait=MATRIX)],
        inputs=INPUTS, outputs=OUTPUTS[:1],
    )
    d = data()
    with pytest.raises(EmulatorError, match=r"unordered access to SPAD \[0, 512\): pc 2 \(matrix, cycles 0..40\) reads it "
                                            r"while pc 0 \(load, cycles 0..144\) writes it"):
        run_program(prog, d, TARGET)
    # Without the check, the matmul executes at cycle 0, before load W (144..304): W is 0.
    r = run_program(prog, d, TARGET, check_races=False)
    np.testing.assert_array_equal(r.outputs["y"], 0.0)


def test_interleaved_strided_dma_is_not_a_race():
    # Two stores of different column tiles of one matrix (bounding ranges overlap, words do
    # not) run on different units' timelines: a load reads tile 0 while a store writes tile 1.
    prog = program(
        [
            I("store", mem=SPAD, local=0, dram=1000 + 8, rows=8, cols=8, stride=16),
            I("load", mem=SPAD, local=512, dram=1000, rows=8, cols=8, stride=16),
        ],
    )
    r = run_program(prog, {}, TARGET, trace=True)
    assert r.trace[0][2] == r.trace[1][2] == 0  # both start at cycle 0, no error


def test_leftover_tokens_are_counted():
    prog = program([load_a(signal=MATRIX | VECTOR), load_w(signal=MATRIX)], inputs=INPUTS[:2])
    r = run_program(prog, {k: v for k, v in data().items() if k != "a2"}, TARGET)
    assert r.leftover_tokens == {"load->matrix": 2, "load->vector": 1}


def test_hundred_thousand_instructions_are_fast():
    n = 50_000
    instrs = []
    for i in range(n // 2):
        instrs.append(I("load", mem=SPAD, local=(i % 2) * 16, dram=0, rows=1, cols=16, stride=16,
                        signal=VECTOR, wait=VECTOR if i >= 2 else 0))
        instrs.append(I("vun", fn=VUnFn.RELU, dst_mem=ACC, dst=(i % 2) * 16, src_mem=SPAD,
                        src=(i % 2) * 16, rows=1, cols=16, wait=LOAD, signal=LOAD))
    prog = program(instrs, inputs=[("x", (16,), 0)])
    t0 = time.perf_counter()
    r = run_program(prog, {"x": np.ones(16, np.float32)}, TARGET)
    elapsed = time.perf_counter() - t0
    assert r.instructions_executed == n
    assert r.leftover_tokens == {"vector->load": 2}
    assert elapsed < 5.0, f"{n} instructions took {elapsed:.2f} s"

"""The int8 instructions (vun quant, vrow rescale, imatmul, ispmatmul) and the packed int8
N:M format, against numpy references written here from docs/INT8.md."""

from __future__ import annotations

import numpy as np
import pytest

from emulator_helpers import ACC, SPAD, I, f32bits, program, serialize
from nmc.common import nm_format
from nmc.isa.table import VRowFn, VUnFn
from nmc.isa.target import TargetError, load_target, parse_target
from nmc.runtime.emulator import run_program

TARGET = load_target("sta_int8")
RNG = np.random.default_rng(3)


def words_of(q: np.ndarray) -> np.ndarray:
    """int8 [r, c] -> the float32 words holding them (element i of a word in byte i)."""
    return np.ascontiguousarray(q, np.int8).view(np.float32)


def test_sta_int8_is_sta_ref_with_an_int8_matrix_unit():
    ref, i8 = load_target("sta_ref"), TARGET
    assert (i8.matrix_operands, i8.accumulator, i8.vector_type) == ("i8", "i32", "f32")
    assert (ref.matrix_operands, ref.accumulator) == ("f32", "f32") and not ref.int8
    same = ("spad_words", "acc_words", "dram_words", "mx_rows", "mx_cols", "vec_lanes",
            "dma_bytes_per_cycle", "dma_latency", "sparse_patterns")
    assert all(getattr(ref, f) == getattr(i8, f) for f in same)
    assert i8.spad_bytes == 4 * i8.spad_words == 256 * 1024


@pytest.mark.parametrize("datapath,message", [
    ({"matrix_operands": "i4", "accumulator": "i32", "vector": "f32"}, "matrix_operands"),
    ({"matrix_operands": "i8", "accumulator": "f32", "vector": "f32"}, "accumulate in i32"),
    ({"matrix_operands": "f32", "accumulator": "f32", "vector": "i8"}, "computes in f32"),
])
def test_bad_datapath_is_reported_by_field(datapath, message):
    import tomllib

    from nmc.isa.target import TARGETS_DIR

    table = tomllib.loads((TARGETS_DIR / "sta_int8.toml").read_text())
    table["datapath"] = datapath
    with pytest.raises(TargetError, match=message):
        parse_target(table)


def test_vun_quant_rounds_half_to_even_and_clamps():
    rows, cols = 3, 8
    x = np.array([[0.5, 1.5, 2.5, -0.5, -1.5, 126.5, 127.5, 1e9],
                  [-128.5, -129.0, -1e9, np.nan, 3.49, -3.51, 0.0, -0.0],
                  [10.25, -10.75, 64.5, 65.5, 0.1, 0.9, 100.0, -100.0]], np.float32)
    inv = 1.0  # then scaled by 2: the product is rounded in fp32 first
    for scale in (inv, 2.0):
        prog = program(serialize([
            I("load", mem=SPAD, local=0, dram=0, rows=rows, cols=cols, stride=cols),
            I("vun", fn=VUnFn.QUANT, dst_mem=SPAD, dst=64, src_mem=SPAD, src=0, rows=rows,
              cols=cols, imm=f32bits(scale)),
            I("store", mem=SPAD, local=64, dram=100, rows=rows, cols=cols // 4, stride=cols // 4),
        ]), inputs=[("x", (rows, cols), 0)], outputs=[("y", (rows, cols // 4), 100)],
            target=TARGET)
        y = run_program(prog, {"x": x}, TARGET).outputs["y"]
        got = np.ascontiguousarray(y).view(np.int8).reshape(rows, cols)
        with np.errstate(invalid="ignore"):
            want = np.nan_to_num(np.clip(np.rint(x * np.float32(scale)), -128, 127), nan=0)
        np.testing.assert_array_equal(got, want.astype(np.int8))
    assert list(got[0, :5]) == [1, 3, 5, -1, -3]  # x2: 1.0, 3.0, 5.0, ... exact


def test_vrow_rescale_adds_int32_bias_then_scales_in_fp32():
    rows, cols = 4, 6
    acc = RNG.integers(-2**24 - 5, 2**24 + 5, (rows, cols)).astype(np.int32)
    bias = RNG.integers(-1000, 1000, cols).astype(np.int32)
    scale = RNG.uniform(1e-5, 1e-3, cols).astype(np.float32)
    param = np.empty((cols, 2), np.float32)
    param[:, 0] = bias.view(np.float32)
    param[:, 1] = scale
    prog = program(serialize([
        I("load", mem=ACC, local=0, dram=0, rows=rows, cols=cols, stride=cols),
        I("load", mem=SPAD, local=256, dram=500, rows=1, cols=2 * cols, stride=2 * cols),
        I("vrow", fn=VRowFn.RESCALE, dst_mem=SPAD, dst=0, src_mem=ACC, src=0, param=256,
          rows=rows, cols=cols),
        I("store", mem=SPAD, local=0, dram=1000, rows=rows, cols=cols, stride=cols),
    ]), inputs=[("a", (rows, cols), 0), ("p", (2 * cols,), 500)],
        outputs=[("y", (rows, cols), 1000)], target=TARGET)
    y = run_program(prog, {"a": acc.view(np.float32), "p": param.ravel()}, TARGET).outputs["y"]
    want = (acc.astype(np.int64) + bias).astype(np.float32) * scale  # exact sum, RNE twice
    np.testing.assert_array_equal(y, want)


def _int_matmul_program(m, k, n, a_q, w_words, extra=(), accumulate_twice=False, sparse=None):
    """A [m x k] int8 and W words at 4096; OUT int32 -> y."""
    a_words = words_of(a_q)
    instrs = [I("load", mem=SPAD, local=0, dram=0, rows=m, cols=k // 4, stride=k // 4),
              I("load", mem=SPAD, local=16384, dram=4096, rows=1, cols=w_words.size,
                stride=w_words.size)]
    if sparse is None:
        mm = dict(a=0, w=16384, out=0, m=m, k=k, n=n)
        instrs.append(I("imatmul", **mm))
        if accumulate_twice:
            instrs.append(I("imatmul", **mm, accumulate=1))
    else:
        pn, pm, idx = sparse
        instrs.append(I("ispmatmul", a=0, w=16384, idx=16384 + idx, out=0, m=m, k=k, n=n,
                        pat_n=pn, pat_m=pm))
    instrs.append(I("store", mem=ACC, local=0, dram=20000, rows=m, cols=n, stride=n))
    prog = program(serialize(instrs), inputs=[("a", a_words.shape, 0),
                                              ("w", (w_words.size,), 4096)],
                   outputs=[("y", (m, n), 20000)], target=TARGET)
    y = run_program(prog, {"a": a_words, "w": w_words.ravel()}, TARGET).outputs["y"]
    return np.ascontiguousarray(y).view(np.int32)


def test_i8_matmul_is_exact_int32_and_accumulates():
    m, k, n = 5, 3072, 8  # the largest reduction of DeiT-base: sums beyond 2^24
    a = np.full((m, k), -128, np.int8)
    a[1:] = RNG.integers(-128, 128, (m - 1, k))
    w = np.full((k, n), -127, np.int8)
    w[:, 1:] = RNG.integers(-127, 128, (k, n - 1))
    want = a.astype(np.int64) @ w.astype(np.int64)
    assert np.abs(want).max() > 2 ** 24
    np.testing.assert_array_equal(_int_matmul_program(m, k, n, a, words_of(w)), want)
    np.testing.assert_array_equal(
        _int_matmul_program(m, k, n, a, words_of(w), accumulate_twice=True), 2 * want)


@pytest.mark.parametrize("pattern", [(2, 4), (1, 8)])
def test_i8_spmatmul_equals_the_masked_integer_product(pattern):
    n_p, m_p = pattern
    m, k, n = 3, 128, 12
    w_f = RNG.standard_normal((n, k)).astype(np.float32)  # W [out, K]
    q = RNG.integers(-127, 128, (n, k)).astype(np.int8)
    packed = nm_format.pack_int8(w_f, q, pattern)
    assert packed.size == nm_format.packed_words_int8(k, n, pattern)
    kc = nm_format.compressed_rows(k, *pattern)
    a = RNG.integers(-128, 128, (m, k)).astype(np.int8)
    got = _int_matmul_program(m, k, n, a, packed, sparse=(n_p, m_p, kc * n // 4))
    masked = q.astype(np.int64) * nm_format.nm_mask(w_f, *pattern)  # mask of the fp32 weight
    np.testing.assert_array_equal(got, a.astype(np.int64) @ masked.T)


def test_stored_bytes_per_dense_byte():
    assert nm_format.stored_bytes_per_dense_byte((2, 4), "i8") == 0.625
    assert nm_format.stored_bytes_per_dense_byte((2, 4), "f32") == 0.53125
    assert nm_format.stored_bytes_per_dense_byte((1, 8), "i8") == pytest.approx((1 + 4 / 10) / 8)  # 10 3-bit indices a word
    assert nm_format.stored_bytes_per_dense_byte(None, "i8") == 1.0

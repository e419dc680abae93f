"""nmc.common.nm_format: the N:M packed weight format in one torch-free module (issue 13).
The compiled programs that use it are tested in test_nm_sparse.py."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from nmc.common import nm_format as f


def test_the_module_imports_without_torch():
    code = ("import sys; import nmc.common.nm_format, nmc.isa.table, nmc.runtime.semantics; "
            "print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert out.strip() == "False"


@pytest.mark.parametrize("pattern, sparse", [
    (None, None), ((4, 4), None), ((1, 1), None), ((2, 4), (2, 4)), ((1, 8), (1, 8))])
def test_n_equal_m_is_dense(pattern, sparse):
    assert f.sparse_pattern(pattern) == sparse
    assert f.is_dense(pattern) == (sparse is None)
    assert f.pattern_text(pattern) == ("dense" if sparse is None else f"{sparse[0]}:{sparse[1]}")
    assert f.density(pattern) == (1.0 if sparse is None else sparse[0] / sparse[1])


def test_dense_is_decided_the_same_everywhere():
    """The IR accessor, the kernel, the cost model and the target all ask nm_format."""
    from nmc.compiler.kernels.linear import LinearProblem
    from nmc.compiler.sparsity.cost import linear_cycles, linear_macs
    from nmc.compiler.sparsity.spec import parse_pattern
    from nmc.isa.target import load_target

    target = load_target()
    dims = LinearProblem(16, 64, 32, True)
    assert LinearProblem(16, 64, 32, True, (4, 4)).pattern is None
    assert parse_pattern("4:4", "x", target) is None
    assert linear_macs(dims, (4, 4)) == linear_macs(dims, None) == dims.macs
    assert linear_cycles(dims, (8, 8), target) == linear_cycles(dims, None, target)
    assert target.supports_pattern(3, 3) and not target.supports_pattern(3, 4)


def test_layout_name_round_trip_and_malformed_layouts():
    assert f.layout_name((2, 4)) == "nm_pack:2:4"
    assert f.parse_layout("nm_pack:2:4") == (2, 4)
    for other in ("identity", "transpose", "nm_pack:4:4", "nm_pack:0:4", "nm_pack:5:4",
                  "nm_pack:2", "nm_pack:2:4:1", "nm_pack:a:4", "nm_pack:-1:4", "pack:2:4"):
        assert f.parse_layout(other) is None, other


def test_sizes_and_k_step():
    assert (f.index_bits(4), f.indices_per_word(4)) == (2, 16)
    assert (f.index_bits(8), f.indices_per_word(8)) == (3, 10)
    assert (f.index_bits(5), f.index_bits(2)) == (3, 1)
    # 2:4 of W^T [64 x 48]: 32 value rows, then 2 rows of 16 indices per word
    assert f.packed_shape(64, 48, (2, 4)) == (34, 48)
    for n, m in [(1, 4), (2, 4), (1, 8), (2, 8), (4, 8), (3, 8)]:
        step = f.k_step((n, m))
        assert step % m == 0 and f.compressed_rows(step, n, m) % f.indices_per_word(m) == 0


def test_mask_rule_largest_magnitude_ties_to_the_lower_index():
    w = np.array([[1.0, -3.0, 3.0, 0.5, 2.0, 2.0, -2.0, 2.0]], np.float32)
    assert f.nm_mask(w, 2, 4).tolist() == [[False, True, True, False, True, True, False, False]]
    assert f.kept_indices(w, 2, 4).tolist() == [[[1, 2], [0, 1]]]
    assert f.nm_mask(w, 1, 8).tolist() == [[False, True] + [False] * 6]
    zeros = np.array([[0.0, -0.0, 0.0, 0.0]], np.float32)
    assert f.nm_mask(zeros, 2, 4).tolist() == [[True, True, False, False]]
    with pytest.raises(ValueError, match="not a multiple of M = 8"):
        f.nm_mask(np.ones((4, 12), np.float32), 2, 8)
    with pytest.raises(ValueError, match="needs 0 < N <= M"):
        f.nm_mask(np.ones((4, 8), np.float32), 5, 4)


def test_nm_masks_share_one_sort_and_agree_with_nm_mask():
    w = np.random.default_rng(0).integers(-3, 4, (24, 64)).astype(np.float32)  # ties
    pats = [(1, 4), (2, 4), (1, 8), (2, 8), (4, 8), (8, 8)]
    for p, mask in zip(pats, f.nm_masks(w, pats)):
        np.testing.assert_array_equal(mask, f.nm_mask(w, *p))
        assert (mask.reshape(24, -1, p[1]).sum(-1) == p[0]).all()


@pytest.mark.parametrize("pattern", [(1, 4), (2, 4), (1, 8), (2, 8), (4, 8), (3, 8), (2, 5)])
def test_pack_unpack_round_trip(pattern):
    n, m = pattern
    rng = np.random.default_rng(n * 10 + m)
    w = rng.standard_normal((7, 12 * m)).astype(np.float32)
    masked = w * f.nm_mask(w, n, m)
    values, indices = f.pack_values(w, n, m)
    assert values.shape == indices.shape == (7, 12 * n)
    np.testing.assert_array_equal(f.unpack_values(values, indices, n, m), masked)
    words = f.pack_index_words(indices.T, m)
    assert words.dtype == np.uint32 and words.shape == (f.index_rows(12 * n, m), 7)
    np.testing.assert_array_equal(f.unpack_index_words(words, 12 * n, m), indices.T)
    packed = f.pack(w, n, m)
    assert packed.dtype == np.float32 and packed.shape == f.packed_shape(12 * m, 7, pattern)
    np.testing.assert_array_equal(f.unpack(packed, 12 * m, n, m), masked)


def test_index_words_bit_layout():
    """Index i of a word at bits i*b, word row r holding compressed rows r*P..r*P+P-1."""
    idx = np.array([[1], [2], [3], [0], [1]], np.int64)  # 5 compressed rows, M = 4: b = 2
    (word,) = f.pack_index_words(idx, 4)[:, 0]
    assert word == 1 | 2 << 2 | 3 << 4 | 0 << 6 | 1 << 8


def test_unpack_tile_sums_repeated_positions_and_clamps_indices():
    """What spmatmul does with a malformed index stream: indices >= M read as M - 1,
    values that name the same position add up."""
    values = np.array([[1.0], [2.0]], np.float32)  # one group of 2:5, one column
    words = f.pack_index_words(np.array([[7], [4]]), 5)  # 7 does not fit M = 5
    np.testing.assert_array_equal(f.unpack_tile(values, words, 5, 2, 5)[:, 0],
                                  [0, 0, 0, 0, 3.0])

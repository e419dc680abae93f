"""The N:M sparse weight format: the one home of everything that knows it.

A weight W [N_out, K] with pattern N:M keeps, in every group of M consecutive weights
along K (the input dimension), N of them (`nm_mask`); the accelerator stores the kept
values and their in-group indices (`pack`), the `spmatmul` instruction expands them again
(`unpack_tile`). The packer (compiler/emit.py), the emulator (runtime/semantics.py), the
address planner and kernels (sizes, `k_step`), the ISA (footprints, `index_rows`) and the
PyTorch reference (models/nm_sparsity.py) all call this module, so they cannot disagree.
numpy only: the ISA and the emulator import it without torch.

Patterns. `Pattern` is (N, M) with 0 < N <= M, or None for dense. N = M keeps every
weight, so it is dense too: `sparse_pattern` is the one place that decides it, and
everything else asks it (or `is_dense`).

The stored layout `nm_pack:N:M` (`layout_name` / `parse_layout`) of W is one float32
array [rows x N_out] holding W^T compressed along K:

    rows 0 .. kc-1        the kept values of W^T, kc = K*N/M (`compressed_rows`): row
                          g*N + s holds the s-th kept weight (in index order) of group g
    rows kc .. rows-1     the in-group indices of those values, b = ceil(log2 M) bits each
                          (`index_bits`), P = 32 // b to a 32-bit word (`indices_per_word`),
                          packed down the columns: word row r holds compressed rows
                          r*P .. r*P+P-1, index i of a word at bits i*b; the words' bit
                          patterns are stored as f32 (`index_rows` rows; padding is 0)

A k tile of a sparse linear starts at a multiple of `k_step`, so that every tile's index
words start on a word row of their own.
"""

from __future__ import annotations

from math import gcd

import numpy as np

Pattern = tuple[int, int] | None
"""(N, M): keep N of every M weights along K; None is dense."""

LAYOUT_PREFIX = "nm_pack"
"""The stored layout of a packed weight is named `nm_pack:N:M`."""

WORD_BITS = 32


# --------------------------------------------------------------------------- patterns


def sparse_pattern(pattern: Pattern) -> Pattern:
    """(N, M) of a sparse pattern as ints; None for dense: absent, or N = M (every weight
    kept). The one place that decides what counts as dense."""
    if pattern is None or pattern[0] == pattern[1]:
        return None
    return int(pattern[0]), int(pattern[1])


def is_dense(pattern: Pattern) -> bool:
    return sparse_pattern(pattern) is None


def density(pattern: Pattern) -> float:
    """The fraction of weights a pattern keeps: N/M (1.0 for dense)."""
    pattern = sparse_pattern(pattern)
    return 1.0 if pattern is None else pattern[0] / pattern[1]


def pattern_text(pattern: Pattern) -> str:
    """'N:M', or 'dense' (also for M:M)."""
    pattern = sparse_pattern(pattern)
    return "dense" if pattern is None else f"{pattern[0]}:{pattern[1]}"


def check_pattern(n: int, m: int) -> None:
    """ValueError unless 0 < N <= M."""
    if not 0 < n <= m:
        raise ValueError(f"N:M pattern {n}:{m} needs 0 < N <= M")


# --------------------------------------------------------------------------- layout name


def layout_name(pattern: tuple[int, int]) -> str:
    """The layout string of a packed weight: `nm_pack:N:M`."""
    n, m = sparse_pattern(pattern)
    return f"{LAYOUT_PREFIX}:{n}:{m}"


def parse_layout(layout: str) -> Pattern:
    """(N, M) of an `nm_pack:N:M` layout (decimal N, M with 0 < N < M); None for every
    other string, including malformed `nm_pack:` ones."""
    parts = layout.split(":")
    if len(parts) != 3 or parts[0] != LAYOUT_PREFIX:
        return None
    n, m = parts[1], parts[2]
    if not (n.isdecimal() and m.isdecimal() and 0 < int(n) < int(m)):
        return None
    return int(n), int(m)


# --------------------------------------------------------------------------- sizes


# The sizes are formulas over instruction fields too (the spmatmul footprint and MACs), so
# they also work elementwise on numpy int arrays: the emulator's fast path evaluates them on
# the fields of many instructions at once.


def _maximum(a, b):
    return np.maximum(a, b) if isinstance(a, np.ndarray) else max(a, b)


def index_bits(m: int) -> int:
    """Bits of one in-group index: ceil(log2(M)), at least 1."""
    if isinstance(m, np.ndarray):
        return np.ceil(np.log2(np.maximum(m, 2))).astype(np.int64)
    return max(1, (max(int(m), 2) - 1).bit_length())


def indices_per_word(m: int) -> int:
    """In-group indices packed into one 32-bit word (index i of a word at bits i*b)."""
    return WORD_BITS // index_bits(m)


def compressed_rows(k: int, n: int, m: int) -> int:
    """Kept values per column of k rows of W^T: k * N / M (k is a multiple of M)."""
    return (k * n) // _maximum(m, 1)


def index_rows(kc: int, m: int) -> int:
    """Rows of index words covering `kc` compressed rows (word row r holds compressed
    rows r*P .. r*P+P-1, P = `indices_per_word`)."""
    return -(-kc // indices_per_word(m))


def packed_shape(k: int, n_out: int, pattern: tuple[int, int]) -> tuple[int, int]:
    """[rows x N_out] of a packed W^T [K x N_out]: value rows, then index-word rows."""
    kc = compressed_rows(k, *pattern)
    return kc + index_rows(kc, pattern[1]), n_out


def k_step(pattern: tuple[int, int]) -> int:
    """k tiles of a sparse linear start at multiples of this: whole groups (M) whose
    compressed rows fill whole index words (the tile's words start on a word row)."""
    n, m = pattern
    p = indices_per_word(m)
    return m * p // gcd(n, p)


# --------------------------------------------------------------------------- the mask rule


def _check_weight(shape: tuple[int, ...], n: int, m: int) -> None:
    check_pattern(n, m)
    if len(shape) != 2:
        raise ValueError(f"an N:M weight must be 2-D [out, in], got shape {list(shape)}")
    if shape[1] % m:
        raise ValueError(f"input dimension {shape[1]} is not a multiple of M = {m}")


def _descending_order(weight: np.ndarray, m: int) -> np.ndarray:
    """Per group of M along the last axis, the in-group positions by descending
    magnitude, ties in ascending position: [out, K/M, M] int64. NaN counts as the
    largest magnitude (as torch.sort orders it)."""
    out, k = weight.shape
    mags = np.abs(weight).reshape(out, k // m, m)
    # lexsort is stable, its last key primary: NaNs first, then larger |w| first
    return np.lexsort((-mags, ~np.isnan(mags)), axis=-1)


def kept_indices(weight: np.ndarray, n: int, m: int) -> np.ndarray:
    """The in-group positions of the weights N:M keeps, ascending: [out, K/M, N] int64.

    The rule: per group of M consecutive weights along K (the last axis), the N of
    largest magnitude |w|; among equal magnitudes the lower index wins."""
    weight = np.asarray(weight)
    _check_weight(weight.shape, n, m)
    return np.sort(_descending_order(weight, m)[..., :n], axis=-1)


def nm_masks(weight: np.ndarray, patterns: list[tuple[int, int]]) -> list[np.ndarray]:
    """`nm_mask` of each pattern, with one sort per M (the N kept of a group are the
    first N of one descending order, whatever N is)."""
    weight = np.asarray(weight)
    out, k = weight.shape if weight.ndim == 2 else (0, 0)
    orders: dict[int, np.ndarray] = {}
    masks = []
    for n, m in patterns:
        _check_weight(weight.shape, n, m)
        if m not in orders:
            orders[m] = _descending_order(weight, m)
        mask = np.zeros((out, k // m, m), bool)
        np.put_along_axis(mask, orders[m][..., :n], True, axis=-1)
        masks.append(mask.reshape(out, k))
    return masks


def nm_mask(weight: np.ndarray, n: int, m: int) -> np.ndarray:
    """The bool mask [out, K] of the weights N:M keeps (the rule of `kept_indices`)."""
    return nm_masks(weight, [(n, m)])[0]


# --------------------------------------------------------------------------- values


def pack_values(weight: np.ndarray, n: int, m: int) -> tuple[np.ndarray, np.ndarray]:
    """(values [out, K*N/M] float32, indices [out, K*N/M] int64 in 0..M-1): per group of
    M along K, the N kept weights in index order and their positions in the group."""
    w = np.asarray(weight, np.float32)
    idx = kept_indices(w, n, m)  # [out, K/M, N]
    out, k = w.shape
    values = np.take_along_axis(w.reshape(out, k // m, m), idx, axis=-1)
    return values.reshape(out, -1), idx.reshape(out, -1)


def unpack_values(values: np.ndarray, indices: np.ndarray, n: int, m: int,
                  axis: int = -1) -> np.ndarray:
    """The dense float32 weight of packed values and indices, compressed along `axis`
    (-1: [out, kc] -> [out, K], K = kc*M/N; 0: [kc, cols] -> [K, cols]). Positions no
    kept value names hold 0; values naming the same position (only a malformed index
    stream does that) are summed. Indices must be < M."""
    values = np.asarray(values, np.float32)
    shape = list(values.shape)
    kc = shape[axis]
    shape[axis] = kc * m // n
    dense = np.zeros(shape, np.float32)
    # work on views with the compressed axis last; `dense` is written through its view
    d, v = np.moveaxis(dense, axis, -1), np.moveaxis(values, axis, -1)
    idx = np.moveaxis(np.asarray(indices, np.int64), axis, -1)
    cols = (np.arange(kc, dtype=np.int64) // n * m) + idx  # [..., kc] position along K
    rows = np.arange(d.shape[0])[:, None]
    # the s-th kept values of all groups name distinct positions: one scatter per slot
    for s in range(n):
        d[rows, cols[:, s::n]] += v[:, s::n]
    return dense


# --------------------------------------------------------------------------- index words


def pack_index_words(indices: np.ndarray, m: int) -> np.ndarray:
    """In-group indices [kc, cols] (0..M-1) -> uint32 words [index_rows(kc, M), cols],
    packed down the columns (module docstring)."""
    indices = np.asarray(indices).astype(np.uint32)
    kc, cols = indices.shape
    bits, per, rows = index_bits(m), indices_per_word(m), index_rows(kc, m)
    padded = np.zeros((rows * per, cols), np.uint32)
    padded[:kc] = indices
    shifts = (np.arange(per, dtype=np.uint32) * np.uint32(bits))[None, :, None]
    return np.bitwise_or.reduce(padded.reshape(rows, per, cols) << shifts, axis=1) \
        .astype(np.uint32)


def unpack_index_words(words: np.ndarray, kc: int, m: int) -> np.ndarray:
    """uint32 words [rows, cols] -> the first `kc` in-group indices [kc, cols] int64, as
    stored (a malformed stream may hold values >= M when M is not a power of 2)."""
    words = np.asarray(words, np.uint32)
    rows, cols = words.shape
    bits, per = index_bits(m), indices_per_word(m)
    shifts = (np.arange(per, dtype=np.uint32) * np.uint32(bits))[None, :, None]
    idx = (words[:, None, :] >> shifts) & np.uint32((1 << bits) - 1)  # [rows, per, cols]
    return idx.reshape(rows * per, cols)[:kc].astype(np.int64)


# --------------------------------------------------------------------------- the layout


def pack(weight: np.ndarray, n: int, m: int) -> np.ndarray:
    """The `nm_pack:N:M` layout of W [N_out, K]: one float32 array
    `packed_shape(K, N_out, (N, M))` (module docstring)."""
    values, indices = pack_values(weight, n, m)  # [N_out, kc]
    words = pack_index_words(indices.T, m)
    return np.concatenate([np.ascontiguousarray(values.T), words.view(np.float32)])


def unpack_tile(values: np.ndarray, words: np.ndarray, k: int, n: int, m: int) -> np.ndarray:
    """The dense W^T block [k x cols] of a packed tile: `values` [k*N/M x cols] and their
    index `words` [index rows x cols] (uint32), as `spmatmul` reads them. An index >= M
    (malformed) is read as M-1."""
    kc = compressed_rows(k, n, m)
    indices = np.minimum(unpack_index_words(words, kc, m), m - 1)
    return unpack_values(values, indices, n, m, axis=0)


def unpack(packed: np.ndarray, k: int, n: int, m: int) -> np.ndarray:
    """The masked dense W [N_out, K] of a packed one (the inverse of `pack` on the
    kept weights)."""
    packed = np.asarray(packed, np.float32)
    kc = compressed_rows(k, n, m)
    return unpack_tile(packed[:kc], packed[kc:].view(np.uint32), k, n, m).T


# --------------------------------------------------------------------------- int8 (sta_int8)
#
# An int8 weight (docs/INT8.md) is stored like the f32 one but with int8 elements packed
# four to a 32-bit word along the output dimension (element i of a word in byte i):
#
#     dense   W^T [K x N_out] int8        -> K rows of N_out/4 words
#     nm_pack kept values [kc x N_out] int8 -> kc rows of N_out/4 words, then the same
#             index words as the f32 layout ([index_rows x N_out] words, one column per
#             output channel)
#
# so a 2:4 int8 weight takes 0.5 + 0.125 = 0.625 bytes per dense int8 byte and an f32
# one 0.53 bytes per dense f32 byte (`stored_bytes_per_dense_byte`).

ELEMENT_BYTES = {"f32": 4, "i8": 1}
INT8_SUFFIX = ":i8"
"""A stored layout of int8 elements is named like the f32 one plus this suffix
(`transpose:i8`, `nm_pack:2:4:i8`); its words are followed by the layer's rescale table
(docs/INT8.md)."""


def split_element(layout: str) -> tuple[str, str]:
    """(layout without the element suffix, element type "f32" or "i8")."""
    if layout.endswith(INT8_SUFFIX):
        return layout[: -len(INT8_SUFFIX)], "i8"
    return layout, "f32"


def pack_int8_words(q: np.ndarray) -> np.ndarray:
    """int8 [rows, cols] (cols a multiple of 4) -> its words [rows, cols/4] as float32
    bit patterns (element i of a word in byte i)."""
    q = np.ascontiguousarray(q, np.int8)
    if q.shape[-1] % 4:
        raise ValueError(f"int8 rows pack 4 to a word: {q.shape[-1]} columns")
    return q.view(np.float32)


def packed_words_int8(k: int, n_out: int, pattern: Pattern) -> int:
    """DRAM words of an int8 W^T [K x N_out] in its layout (dense or `nm_pack:N:M`)."""
    pattern = sparse_pattern(pattern)
    if pattern is None:
        return k * n_out // 4
    kc = compressed_rows(k, *pattern)
    return kc * n_out // 4 + index_rows(kc, pattern[1]) * n_out


def pack_int8(weight: np.ndarray, q: np.ndarray, pattern: Pattern) -> np.ndarray:
    """The stored int8 layout (above) of W [N_out, K]: `q` its int8 values, `weight` the
    float weight whose magnitudes choose the kept N of each group (the mask rule is the
    float one: quantisation may tie values the float weights order). One float32 array
    of `packed_words_int8` words."""
    pattern = sparse_pattern(pattern)
    q = np.asarray(q, np.int8)
    if pattern is None:
        return pack_int8_words(q.T).ravel()
    n, m = pattern
    idx = kept_indices(np.asarray(weight, np.float32), n, m)  # [out, K/M, N]
    out, k = q.shape
    values = np.take_along_axis(q.reshape(out, k // m, m), idx, axis=-1).reshape(out, -1)
    words = pack_index_words(idx.reshape(out, -1).T, m)
    return np.concatenate([pack_int8_words(values.T).ravel(), words.view(np.float32).ravel()])


def stored_bytes_per_dense_byte(pattern: Pattern, element: str = "f32") -> float:
    """Bytes of the stored layout per byte of the dense weight (index words included)."""
    pattern = sparse_pattern(pattern)
    if pattern is None:
        return 1.0
    n, m = pattern
    size = ELEMENT_BYTES[element]
    index_bytes = WORD_BITS // 8 / indices_per_word(m)  # per kept value
    return n / m * (size + index_bytes) / size

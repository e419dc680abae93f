"""The window-pruning instructions (`vred`, `topk`, `gload`, `gstore`) against PyTorch and
numpy, alone and chained as SparseViT uses them (score windows, keep the top k, gather
them, compute, scatter them back), on both emulator paths."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from emulator_helpers import SPAD, TARGET, I, f32bits, program, serialize
from nmc.isa.table import VRedFn, VUnFn
from nmc.models.window_prune import rank_windows, scatter_windows, token_magnitude
from nmc.runtime.emulator import EmulatorError, run_program
from nmc.runtime.timing import dma_cycles, instruction_cycles


def _run(body, inputs, outputs, dram_words=1 << 14, **kw):
    prog = program(serialize(body), inputs=inputs, outputs=outputs, dram_words=dram_words)
    fast = run_program(prog, {k: v for k, v in kw.items()}, TARGET)
    ref = run_program(prog, {k: v for k, v in kw.items()}, TARGET, fast=False)
    for name in fast.outputs:
        np.testing.assert_array_equal(fast.outputs[name], ref.outputs[name])
    assert fast.total_cycles == ref.total_cycles
    return fast


def _load(local, dram, rows, cols):
    return I("load", mem=SPAD, local=local, dram=dram, rows=rows, cols=cols, stride=cols)


def _store(local, dram, rows, cols):
    return I("store", mem=SPAD, local=local, dram=dram, rows=rows, cols=cols, stride=cols)


@pytest.mark.parametrize("fn", [VRedFn.MEAN_ABS, VRedFn.L2])
def test_vred_against_float64_numpy(fn):
    x = np.random.default_rng(0).standard_normal((7, 37)).astype(np.float32)
    body = [_load(0, 0, 7, 37),
            I("vred", fn=fn, dst_mem=SPAD, dst=1000, src_mem=SPAD, src=0, rows=7, cols=37),
            _store(1000, 512, 1, 7)]
    got = _run(body, [("x", (7, 37), 0)], [("y", (7,), 512)], x=x).outputs["y"]
    x64 = x.astype(np.float64)
    want = np.abs(x64).mean(1) if fn == VRedFn.MEAN_ABS else np.sqrt((x64 * x64).sum(1))
    np.testing.assert_array_equal(got, want.astype(np.float32))


@pytest.mark.parametrize("k", [1, 5, 16])
def test_topk_is_torch_stable_descending_sort(k):
    s = np.array([3, 1, 3, 7, -np.inf, 0, -0.0, np.nan, 7, 2, np.inf, 1, 5, 3, 0, 4],
                 np.float32)
    body = [_load(0, 0, 1, 16),
            I("topk", dst_mem=SPAD, dst=100, src_mem=SPAD, src=0, n=16, k=k),
            _store(100, 64, 1, k)]
    got = _run(body, [("s", (16,), 0)], [("y", (k,), 64)], s=s).outputs["y"]
    want = torch.sort(torch.from_numpy(s), descending=True, stable=True).indices[:k]
    np.testing.assert_array_equal(got, want.numpy().astype(np.float32))


def test_topk_more_than_n_is_refused():
    prog = program([I("topk", dst_mem=SPAD, dst=0, src_mem=SPAD, src=8, n=4, k=5)])
    with pytest.raises(EmulatorError, match=r"k = 5 is more than n = 4 scores .*pc 0"):
        run_program(prog, {}, TARGET)


def _gather_body(idx, count, block, limit, stride, table=0):
    return [
        _load(0, 4000, 1, count),  # the indices
        I("gload", mem=SPAD, local=64, dram=table, idx=0, count=count, block=block,
          stride=stride, limit=limit),
        _store(64, 2000, count, block),
    ]


def test_gload_gathers_blocks_in_index_order():
    table = np.arange(10 * 12, dtype=np.float32).reshape(10, 12)  # 10 blocks, stride 12
    idx = np.array([7, 0, 7, 3], np.float32)
    body = _gather_body(idx, 4, 8, 10, 12)
    result = _run(body, [("t", (10, 12), 0), ("i", (4,), 4000)], [("y", (4, 8), 2000)],
                  t=table, i=idx)
    np.testing.assert_array_equal(result.outputs["y"], table[[7, 0, 7, 3], :8])
    # DRAM traffic: the 4 indices and the 4 gathered blocks of 8 words in, 4 blocks out
    assert result.dram_bytes_read == 4 * (4 + 4 * 8)
    assert result.dram_bytes_written == 4 * 4 * 8


def test_gstore_scatters_and_leaves_other_blocks():
    base = np.arange(6 * 5, dtype=np.float32).reshape(6, 5)
    vals = -np.arange(2 * 5, dtype=np.float32).reshape(2, 5) - 1
    idx = np.array([4, 1], np.float32)
    body = [_load(0, 4000, 1, 2), _load(64, 3000, 2, 5),
            I("gstore", mem=SPAD, local=64, dram=0, idx=0, count=2, block=5, stride=5,
              limit=6)]
    got = _run(body, [("t", (6, 5), 0), ("i", (2,), 4000), ("v", (2, 5), 3000)],
               [("y", (6, 5), 0)], t=base, i=idx, v=vals).outputs["y"]
    want = base.copy()
    want[[4, 1]] = vals
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("bad", [10.0, -1.0, 2.5, np.nan])
@pytest.mark.parametrize("fast", [True, False])
def test_bad_gather_index_is_a_clear_error(bad, fast):
    idx = np.array([1, bad], np.float32)
    prog = program(serialize(_gather_body(idx, 2, 4, 10, 4)),
                   inputs=[("t", (40,), 0), ("i", (2,), 4000)], outputs=[], dram_words=1 << 14)
    with pytest.raises(EmulatorError, match=r"gload: block index .* is not an integer in "
                                            r"\[0, 10\) .*pc 1"):
        run_program(prog, {"t": np.zeros(40, np.float32), "i": idx}, TARGET, fast=fast)


def test_gathered_dma_costs_a_row_per_block():
    g = I("gload", mem=SPAD, local=0, dram=0, idx=0, count=9, block=4704, stride=4704,
          limit=64)
    assert instruction_cycles(g, TARGET) == dma_cycles(9, 4704, TARGET)


def test_sparsevit_chain_matches_the_pytorch_reference():
    """Score 16 windows of 4 tokens x 8 channels, keep the best 6, double them, put them
    back: the windows picked and the result are those of models/window_prune.py."""
    nw, n, c, k = 16, 4, 8, 6
    rng = np.random.default_rng(3)
    x = (rng.standard_normal((nw, n, c)) * rng.uniform(0.1, 3, (nw, 1, 1))).astype(np.float32)
    words = nw * n * c
    body = [
        _load(0, 0, nw * n, c),                                              # x -> SPAD 0
        I("vred", fn=VRedFn.MEAN_ABS, dst_mem=SPAD, dst=words, src_mem=SPAD, src=0,
          rows=nw * n, cols=c),                                             # token magnitude
        I("vred", fn=VRedFn.L2, dst_mem=SPAD, dst=words + nw * n, src_mem=SPAD,
          src=words, rows=nw, cols=n),                                      # window scores
        I("topk", dst_mem=SPAD, dst=words + nw * n + nw, src_mem=SPAD, src=words + nw * n,
          n=nw, k=k),
        _store(0, words, nw * n, c),                                        # copy of x
        I("gload", mem=SPAD, local=0, dram=0, idx=words + nw * n + nw, count=k,
          block=n * c, stride=n * c, limit=nw),                             # kept windows
        I("vun", fn=VUnFn.SCALE, dst_mem=SPAD, dst=0, src_mem=SPAD, src=0, rows=k,
          cols=n * c, imm=f32bits(2.0)),
        I("gstore", mem=SPAD, local=0, dram=words, idx=words + nw * n + nw, count=k,
          block=n * c, stride=n * c, limit=nw),
    ]
    got = _run(body, [("x", (nw, n, c), 0)], [("y", (nw, n, c), words)], x=x).outputs["y"]
    xt = torch.from_numpy(x)[None]                                       # [1, nW, N, C]
    kept = rank_windows(token_magnitude(xt))[:, :k]
    want = scatter_windows(xt, kept, 2 * torch.gather(
        xt, 1, kept[:, :, None, None].expand(-1, -1, n, c)))[0]
    np.testing.assert_array_equal(got, want.numpy())

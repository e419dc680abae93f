"""`LoadedProgram.run_batch` (many inputs in one walk of the instruction stream, issue 17):
each input's result must be, bit for bit, what `run` gives for it alone: fp32 and int8
programs, dense and N:M, and window-pruned programs where the inputs keep different
windows (their gathers and top-k are per input)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from nmc.compiler.driver import compile_model
from nmc.isa.target import load_target
from nmc.models.registry import build_model, export_to_file
from nmc.runtime import batch as batch_module
from nmc.runtime.emulator import LoadedProgram

DEIT = {"img_size": 32, "patch": 8, "dim": 64, "depth": 2, "heads": 2, "num_classes": 12,
        "fused_attn": 0}


def _compile(tmp_path, name, params, target="sta_ref", sparsity=None, window=None,
             int8=False):
    module, example = build_model(name, params, seed=0)
    export_to_file(module, example, tmp_path / "m.pt")
    quant = None
    if int8:
        calib = torch.randn((3, *example.shape), generator=torch.Generator().manual_seed(5))
        np.save(tmp_path / "calib.npy", calib.numpy())
        quant = {"calib": str(tmp_path / "calib.npy"), "out": str(tmp_path / "q.json")}
    spec = None if sparsity is None else {"spec": sparsity, "calib": "",
                                          "out": str(tmp_path / "sp.json"), "report": False}
    program = compile_model(tmp_path / "m.pt", target, sparsity=spec, window=window,
                            quant=quant)
    (name_in,) = [s.name for s in program.symbols if s.kind == "input"]
    return program, name_in, tuple(example.shape)


def _bright_windows(shape, seed):
    """Images whose bright 16x16-pixel regions differ per seed, so window pruning keeps
    different windows for each."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(shape).astype(np.float32) * 0.1
    for _ in range(3):
        i, j = rng.integers(0, shape[-2] // 16), rng.integers(0, shape[-1] // 16)
        x[..., 16 * i:16 * i + 16, 16 * j:16 * j + 16] += 5.0
    return x


def _assert_batch_equals_one_by_one(program, target, name, xs):
    loaded = LoadedProgram(program, target, fill=float("nan"))
    want = [loaded.run({name: x}) for x in xs]
    for _ in range(2):  # the second walk reuses the machine: nothing may leak between
        got = loaded.run_batch([{name: x} for x in xs])
        assert len(got) == len(xs)
        for g, w in zip(got, want):
            (gy,), (wy,) = g.outputs.values(), w.outputs.values()
            np.testing.assert_array_equal(gy, wy)
            assert g.total_cycles == w.total_cycles and g.layers == w.layers
    return want


CASES = [
    pytest.param("sta_ref", None, False, id="fp32-dense"),
    pytest.param("sta_ref", "2:4", False, id="fp32-2:4"),
    pytest.param("sta_int8", None, True, id="int8-dense"),
    pytest.param("sta_int8", "2:4", True, id="int8-2:4"),
]


@pytest.mark.parametrize("target, sparsity, int8", CASES)
def test_deit_batch_equals_one_by_one(tmp_path, target, sparsity, int8):
    program, name, shape = _compile(tmp_path, "deit_tiny", DEIT, target, sparsity, int8=int8)
    rng = np.random.default_rng(3)
    xs = [rng.standard_normal(shape).astype(np.float32) for _ in range(5)]
    want = _assert_batch_equals_one_by_one(program, load_target(target), name, xs)
    assert not np.array_equal(*(list(w.outputs.values())[0] for w in want[:2]))


def test_window_pruned_inputs_keep_their_own_windows(tmp_path):
    program, name, shape = _compile(tmp_path, "swin_micro", {}, window={"keep": "0.5"})
    xs = [_bright_windows(shape, seed) for seed in (1, 2, 3)]
    _assert_batch_equals_one_by_one(program, load_target("sta_ref"), name, xs)


def test_a_batched_form_that_rounds_differently_is_not_used(tmp_path, monkeypatch):
    """The verification can fail: a batched matmul made to round differently (its result
    nudged by one ulp) is rejected by the probe, and the rows run one by one."""
    original = batch_module._mm_batched_thunk

    def nudged_thunk(a, w, out, accumulate, transpose):
        multiply = original(a, w, out, accumulate, transpose)
        return lambda: (multiply(), np.copyto(out, np.nextafter(out, np.float32(np.inf))))

    def nudged(a, w, out, accumulate, transpose):
        nudged_thunk(a, w, out, accumulate, transpose)()

    monkeypatch.setattr(batch_module, "_mm_batched_thunk", nudged_thunk)
    program, name, shape = _compile(tmp_path, "deit_tiny", DEIT)
    rng = np.random.default_rng(4)
    xs = [rng.standard_normal(shape).astype(np.float32) for _ in range(3)]
    _assert_batch_equals_one_by_one(program, load_target("sta_ref"), name, xs)
    verifier = batch_module.Verifier(3)
    shapes = [(4, 8), (8, 4), (4, 4)]
    assert not verifier.ok(("m",), shapes, lambda a, w, o: nudged(a, w, o, False, False),
                           lambda a, w, o: batch_module._mm_single(a, w, o, False, False))

    # a batched form that rounds as the rows do passes (the form itself, one sgemm, may
    # or may not round as the rows do: that depends on the machine's BLAS kernels)
    def rows_in_turn(a, w, o):
        for b in range(len(a)):
            batch_module._mm_single(a[b], w[b], o[b], False, False)

    assert batch_module.Verifier(3).ok(
        ("m",), shapes, rows_in_turn,
        lambda a, w, o: batch_module._mm_single(a, w, o, False, False))

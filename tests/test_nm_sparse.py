"""N:M sparsity (issue 5): the reference masks, the packed layout, spmatmul's semantics
and timing, and compiled sparse models against PyTorch's masked forward."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from nmc.common import nm_format
from nmc.compiler.dialects.nm import LinearOp
from nmc.compiler.dialects.nm_attrs import set_tiling
from nmc.isa.container import program_from_bytes, program_to_bytes
from nmc.common.errors import NmcError
from nmc.isa.table import Instr, Mem
from nmc.isa.target import load_target
from nmc.models.nm_sparsity import apply_nm, nm_mask, pack_nm, unpack_nm
from nmc.models.registry import build_model, export_to_file
from nmc.runtime.emulator import run_program
from nmc.runtime.timing import instruction_cycles, matmul_cycles

TARGET = load_target()


def rel_err(got, want):
    return float(np.abs(got - want).max() / np.abs(want).max())


def compile_sparse(path, config: dict[str, tuple[int, int]], target: str = "sta_ref",
                   tilings: dict[str, dict] | None = None):
    """import -> raise -> `sparsity` set on the named nm.linear ops -> the rest of the
    default pipeline -> Program (what `--sparsity` will do through assign-sparsity).
    `tilings` {layer: tiling} replaces schedule-tiles' choice (to test a schedule)."""
    from nmc.compiler.dialects.nm import sparsity_attr
    from nmc.compiler.emit import module_to_program
    from nmc.compiler.frontend import import_model
    from nmc.compiler.pipeline import default_pipeline_spec, make_context, run_pipeline
    from nmc.compiler.transforms.target_option import cached_target

    cached_target.cache_clear()
    ctx = make_context()
    module = import_model(path, ctx)
    spec = default_pipeline_spec(target).split(",")
    assert spec[0] == "raise-torch-to-nm"
    run_pipeline(module, spec[0], ctx)
    seen = set()
    for op in module.walk():
        if isinstance(op, LinearOp) and op.layer_name in config:
            op.properties["sparsity"] = sparsity_attr(*config[op.layer_name])
            seen.add(op.layer_name)
    assert seen == set(config), f"no nm.linear named {set(config) - seen}"
    at = spec.index(next(p for p in spec if p.startswith("schedule-tiles"))) + 1
    run_pipeline(module, ",".join(spec[1:at]), ctx)
    for op in module.walk():
        if isinstance(op, LinearOp) and op.layer_name in (tilings or {}):
            set_tiling(op, tilings[op.layer_name])
    run_pipeline(module, ",".join(spec[at:]), ctx)
    return module_to_program(module, {"model": str(path)})


def run_sparse(tmp_path, name, params, config, seed=0, tilings=None):
    module, example = build_model(name, params, seed=seed)
    path = tmp_path / "model.pt"
    export_to_file(module, example, path)
    program = program_from_bytes(program_to_bytes(compile_sparse(path, config,
                                                                 tilings=tilings)))
    x = torch.randn(example.shape, generator=torch.Generator().manual_seed(seed + 1))
    (name_in,) = [s.name for s in program.symbols if s.kind == "input"]
    result = run_program(program, {name_in: x.numpy()}, TARGET, fill=float("nan"))
    with torch.no_grad():
        want = apply_nm(module, config)(x).numpy()
        dense = module(x).numpy()
    (got,) = result.outputs.values()
    return program, result, got, want, dense


# ---------------------------------------------------------------------------- reference


def test_mask_keeps_n_largest_per_group_ties_to_lower_index():
    w = torch.tensor([[1.0, -3.0, 3.0, 0.5, 2.0, 2.0, 2.0, 2.0]])
    assert nm_mask(w, 2, 4).tolist() == [[False, True, True, False, True, True, False, False]]
    assert nm_mask(w, 1, 8).tolist() == [[False, True, False, False, False, False, False, False]]
    w = torch.randn(12, 32, generator=torch.Generator().manual_seed(0))
    for n, m in [(1, 4), (2, 4), (1, 8), (2, 8), (4, 8)]:
        mask = nm_mask(w, n, m)
        assert (mask.reshape(12, -1, m).sum(-1) == n).all()
        inf = torch.tensor(float("inf"))
        kept = torch.where(mask, w.abs(), inf).reshape(12, -1, m).min(-1).values
        dropped = torch.where(mask, -inf, w.abs()).reshape(12, -1, m).max(-1).values
        assert (kept >= dropped).all()
        values, indices = pack_nm(w, n, m)
        assert values.shape == indices.shape == (12, 32 * n // m)
        np.testing.assert_array_equal(unpack_nm(values, indices, n, m), (w * mask).numpy())


def test_mask_rejects_k_not_multiple_of_m():
    with pytest.raises(ValueError, match="not a multiple of M = 8"):
        nm_mask(torch.ones(4, 12), 2, 8)


def test_apply_nm_masks_only_the_listed_layers():
    module, _ = build_model("mlp_block", {"dim": 16, "hidden": 32, "tokens": 3})
    masked = apply_nm(module, {"fc1": (2, 4)})
    assert (masked.fc1.weight == 0).float().mean() == 0.5
    assert torch.equal(masked.fc2.weight, module.fc2.weight)
    assert not (module.fc1.weight == 0).any()  # the original is untouched


# ---------------------------------------------------------------------------- packing


def test_packed_2_4_weight_is_at_most_5_8_of_dense():
    w = np.random.default_rng(0).standard_normal((96, 128)).astype(np.float32)
    for (n, m), bound in [((2, 4), 5 / 8), ((1, 8), 1 / 8 + 3 / 32 + 1 / 64)]:
        packed = nm_format.pack(w, n, m)
        assert packed.shape == nm_format.packed_shape(128, 96, (n, m))
        assert packed.nbytes <= bound * w.nbytes, (n, m, packed.nbytes / w.nbytes)
        # the index words hold exact bit patterns: decode them back
        kc = 128 * n // m
        words = packed[kc:].view(np.uint32)
        bits = 2 if m == 4 else 3
        per = 32 // bits
        idx = ((words[:, None, :] >> (np.arange(per, dtype=np.uint32) * bits)[None, :, None])
               & ((1 << bits) - 1)).reshape(-1, 96)[:kc]
        values, indices = pack_nm(w, n, m)
        np.testing.assert_array_equal(idx, indices.T)
        np.testing.assert_array_equal(packed[:kc], values.T)


# ---------------------------------------------------------------------------- ISA


def test_spmatmul_timing_charges_k_times_n_over_m():
    i = Instr.make("spmatmul", a=0, w=0, idx=0, out=0, m=32, k=64, n=48, pat_n=2, pat_m=4)
    # ceil(32/16) * ceil(48/16) = 6 passes of 64*2/4 = 32 k-steps, + 8 latency
    assert instruction_cycles(i, TARGET) == 8 + 6 * 32 == 200
    assert instruction_cycles(i, TARGET) == matmul_cycles(32, 32, 48, TARGET)
    i = Instr.make("spmatmul", a=0, w=0, idx=0, out=0, m=16, k=24, n=16, pat_n=1, pat_m=8)
    assert instruction_cycles(i, TARGET) == 8 + 1 * 3


def test_spmatmul_footprint_covers_index_words():
    i = Instr.make("spmatmul", a=0, w=1000, idx=2000, out=64, m=4, k=64, n=16, pat_n=1,
                   pat_m=8, accumulate=1)
    reads, writes = i.footprint()
    # 8 compressed rows; 3-bit indices, 10 to a word: 1 word row of 16 words
    assert [(r.mem, r.start, r.length) for r in reads] == [
        (Mem.SPAD, 0, 256), (Mem.SPAD, 1000, 128), (Mem.SPAD, 2000, 16), (Mem.ACC, 64, 64)]
    assert [(r.mem, r.start, r.length) for r in writes] == [(Mem.ACC, 64, 64)]


@pytest.mark.parametrize("pattern", [(2, 4), (1, 8), (4, 8), (1, 4)])
def test_spmatmul_semantics_match_dense_masked_product(pattern):
    from nmc.runtime.semantics import SEMANTICS

    n, m = pattern
    rng = np.random.default_rng(1)
    M, K, N = 5, 8 * m, 7
    a = rng.standard_normal((M, K)).astype(np.float32)
    w = rng.standard_normal((N, K)).astype(np.float32)  # [N_out, K]
    packed = nm_format.pack(w, n, m)
    spad = np.zeros(4096, np.float32)
    acc = np.full(256, 1.0, np.float32)
    spad[: a.size] = a.ravel()
    spad[1024: 1024 + packed.size] = packed.ravel()
    kc = K * n // m
    f = dict(a=0, w=1024, idx=1024 + kc * N, out=0, m=M, k=K, n=N, pat_n=n, pat_m=m,
             accumulate=1)
    SEMANTICS["spmatmul"]({Mem.DRAM: np.zeros(1, np.float32), Mem.SPAD: spad, Mem.ACC: acc}, f)
    want = 1.0 + a @ (w * nm_mask(torch.from_numpy(w), n, m).numpy()).T
    np.testing.assert_allclose(acc[: M * N].reshape(M, N), want, rtol=1e-5, atol=1e-5)


# ---------------------------------------------------------------------------- compiled


MLP = {"dim": 64, "hidden": 128, "tokens": 37}
DEIT = {"img_size": 32, "patch": 8, "dim": 64, "depth": 2, "heads": 2, "num_classes": 10}


@pytest.mark.parametrize("config", [
    {"fc1": (2, 4), "fc2": (2, 4)},
    {"fc1": (1, 8), "fc2": (1, 8)},
    {"fc1": (4, 8), "fc2": (1, 4)},
], ids=["2:4", "1:8", "mixed"])
def test_sparse_mlp_block_matches_masked_pytorch(tmp_path, config):
    program, result, got, want, dense = run_sparse(tmp_path, "mlp_block", MLP, config)
    assert rel_err(got, want) < 1e-4
    assert rel_err(got, dense) > 1e-3  # the pruning is real
    mnemonics = {i.mnemonic for i in program.instructions}
    assert "spmatmul" in mnemonics and "matmul" not in mnemonics
    layers = program.meta["layers"]
    for name, (n, m) in config.items():
        assert layers[name]["pattern"] == f"{n}:{m}"
        assert layers[name]["weight_bytes"] < layers[name]["dense_bytes"]


def _deit_config(pattern_of) -> dict:
    config = {}
    for b in range(2):
        for name in ("attn.qkv", "attn.proj", "mlp.fc1", "mlp.fc2"):
            p = pattern_of(b, name)
            if p is not None:
                config[f"blocks.{b}.{name}"] = p
    return config


@pytest.mark.parametrize("config", [
    _deit_config(lambda b, name: (2, 4)),
    _deit_config(lambda b, name: (1, 8)),
    {**_deit_config(lambda b, name: (2, 8) if "mlp" in name else None), "head": (2, 4)},
], ids=["2:4", "1:8", "mixed"])
def test_sparse_deit_matches_masked_pytorch(tmp_path, config):
    program, result, got, want, dense = run_sparse(tmp_path, "deit_tiny", DEIT, config)
    assert got.shape == want.shape
    assert rel_err(got, want) < 1e-4


def test_sparse_layers_take_fewer_matrix_cycles(tmp_path):
    module, example = build_model("mlp_block", MLP)
    path = tmp_path / "model.pt"
    export_to_file(module, example, path)
    x = {"x": np.zeros(example.shape, np.float32)}
    busy, macs = {}, {}
    for label, config in [("dense", {}), ("2:4", {"fc1": (2, 4), "fc2": (2, 4)})]:
        result = run_program(compile_sparse(path, config), x, TARGET)
        busy[label] = result.busy_cycles
        macs[label] = result.matrix_macs
    assert macs["2:4"] * 2 == macs["dense"]  # MACs of the kept weights
    matrix = [k for k in busy["dense"] if "matrix" in str(k).lower()][0]
    assert busy["2:4"][matrix] < 0.7 * busy["dense"][matrix]


@pytest.mark.parametrize("buffers", [{"acc": 1}, {"a": 1}, {"a": 1, "acc": 1}])
def test_single_buffered_schedules_match_pytorch(tmp_path, buffers):
    """The tilings with one A buffer (A resident over n) or one ACC/output buffer, which
    the tile search picks for big sparse layers: same numerics, several m/n tiles."""
    tilings = {"fc1": {"m": 16, "n": 32, "k": 64, **buffers},
               "fc2": {"m": 32, "n": 16, "k": 96, **buffers}}
    _, _, got, want, dense = run_sparse(tmp_path, "mlp_block",
                                        {"dim": 64, "hidden": 96, "tokens": 37},
                                        {"fc1": (2, 4), "fc2": (1, 8)}, tilings=tilings)
    assert rel_err(got, want) < 1e-4
    assert rel_err(dense, want) > 1e-3


@pytest.mark.parametrize("activation", [None, "gelu"])
@pytest.mark.parametrize("pattern", [None, (2, 4), (1, 8)])
def test_closed_form_cost_of_single_buffers_follows_the_emulator_timing(pattern, activation):
    """`LINEAR.cost` charges the waits of single buffers (which `estimate_cycles` cannot
    see); it must stay close to the emulator's timing rule on the emitted kernel, or the
    tile search would pick schedules that stall."""
    from nmc.compiler.kernels.common import _DoesNotFit, simulate_cycles
    from nmc.compiler.kernels.kernel import Buffers
    from nmc.compiler.kernels.linear import LINEAR, LinearProblem

    checked = 0
    for M, K, N, t in [(197, 768, 384, {"m": 64, "n": 32, "k": 768, "a": 1}),
                       (197, 384, 1152, {"m": 48, "n": 64, "k": 384, "a": 1}),
                       (197, 384, 384, {"m": 32, "n": 64, "k": 384, "a": 1}),
                       (197, 768, 768, {"m": 80, "n": 192, "k": 128, "acc": 1}),
                       (197, 1536, 384, {"m": 112, "n": 128, "k": 64, "acc": 1}),
                       (197, 384, 384, {"m": 64, "n": 32, "k": 384, "a": 1}),
                       (197, 768, 768, {"m": 128, "n": 64, "k": 64, "acc": 1}),
                       (197, 384, 1536, {"m": 80, "n": 192, "k": 128, "acc": 1}),
                       (197, 768, 3072, {"m": 80, "n": 192, "k": 128, "acc": 1}),
                       (197, 384, 1536, {"m": 112, "n": 128, "k": 64, "acc": 1})]:
        if activation is not None and "a" in t:
            continue  # not a candidate with an activation (LinearKernel.candidates)
        problem = LinearProblem(M, K, N, True, pattern, activation)
        try:
            closed = LINEAR.cost(problem, t, TARGET).cycles
        except _DoesNotFit:
            continue
        buffers = Buffers({"input": 0, "weight": 10**6, "bias": 2 * 10**6,
                           "result": 3 * 10**6})
        instrs = LINEAR.emit(problem, t, buffers, TARGET)
        assert closed == pytest.approx(simulate_cycles(instrs, TARGET), rel=0.05), \
            (t, pattern, activation)
        checked += 1
    assert checked >= 3


# ---------------------------------------------------------------------------- errors


def test_unsupported_pattern_names_layer_and_supported_ones(tmp_path):
    module, example = build_model("mlp_block", {"dim": 16, "hidden": 32, "tokens": 3})
    export_to_file(module, example, tmp_path / "m.pt")
    with pytest.raises(NmcError) as e:
        compile_sparse(tmp_path / "m.pt", {"fc2": (3, 4)})
    assert str(e.value) == ("layer 'fc2': target 'sta_ref' does not support N:M pattern 3:4; "
                            "supported: 1:4, 2:4, 1:8, 2:8, 4:8 (and dense, written 'dense' "
                            "or M:M)")


def test_k_not_multiple_of_m_names_layer(tmp_path):
    module, example = build_model("mlp_block", {"dim": 12, "hidden": 32, "tokens": 3})
    export_to_file(module, example, tmp_path / "m.pt")
    with pytest.raises(NmcError, match=r"layer 'fc1': input dimension K = 12 is not a "
                                       r"multiple of M = 8"):
        compile_sparse(tmp_path / "m.pt", {"fc1": (1, 8)})


def test_dense_model_is_unchanged_by_prune_and_pack(tmp_path):
    from nmc.compiler.driver import compile_model

    module, example = build_model("mlp_block", {"dim": 16, "hidden": 32, "tokens": 3})
    export_to_file(module, example, tmp_path / "m.pt")
    a = compile_model(tmp_path / "m.pt")
    b = compile_sparse(tmp_path / "m.pt", {})
    assert a.instructions == b.instructions
    assert all(l["pattern"] == "dense" for l in a.meta["layers"].values())

"""SparseViT window pruning end to end (issue 6): `nmc compile --window-keep` on a Swin,
run on the emulator, against the PyTorch reference of the pruned model
(models/window_prune.py through `SwinTransformer.set_window_keep`), on inputs where
different windows win; alone, per block from JSON, with N:M sparsity, and searched."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from nmc.compiler.driver import compile_model
from nmc.compiler.sparsity import sparsevit
from nmc.compiler.sparsity.window_rewrite import swin_blocks
from nmc.compiler.transforms.window_prune import WindowPruneError
from nmc.isa.target import load_target
from nmc.models.nm_sparsity import apply_nm
from nmc.models.registry import build_model, export_to_file
from nmc.models.swin import swin
from nmc.models.window_prune import rank_windows, token_magnitude
from nmc.runtime.emulator import LoadedProgram
from robust_helpers import expect_process_error, run_nmc

TARGET = load_target()


@pytest.fixture(scope="module")
def micro(tmp_path_factory):
    module, example = build_model("swin_micro", {}, seed=0)
    path = tmp_path_factory.mktemp("swin") / "m.pt"
    export_to_file(module, example, path)
    return module, example.shape, path


def _inputs(shape, seed):
    """Images where some 16x16-pixel regions (one 4x4-token window of stage 0) are much
    brighter than others, differently per seed, so the kept windows differ clearly."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(shape, generator=gen) * 0.1
    gain = torch.rand((shape[0], 1, shape[2] // 16, shape[3] // 16), generator=gen) * 8
    return x * (1 + torch.repeat_interleave(torch.repeat_interleave(gain, 16, 2), 16, 3))


def _reference(module, x, keep, sparsity=None):
    model = apply_nm(module, sparsity) if sparsity else module
    model.set_window_keep(keep)
    try:
        with torch.no_grad():
            return model(x).numpy()
    finally:
        model.set_window_keep(None)


def _check(program, module, shape, keep, sparsity=None, seeds=(1, 2)):
    loaded = LoadedProgram(program, TARGET, fill=float("nan"))
    (name,) = [s.name for s in program.symbols if s.kind == "input"]
    kept_sets = []
    for seed in seeds:
        x = _inputs(shape, seed)
        (got,) = loaded.run({name: x.numpy()}).outputs.values()
        want = _reference(module, x, keep, sparsity)
        assert np.abs(got - want).max() / np.abs(want).max() < 1e-4
        kept_sets.append(rank_windows(_stage0_magnitudes(module, x))[0, :8].tolist())
    return kept_sets


def _stage0_magnitudes(module, x):
    """Token magnitudes per window of the first stage's plain grid, as the model sees them."""
    with torch.no_grad():
        t = module.patch_embed(x)  # [B, H, W, C]
    B, H, W, _ = t.shape
    w = module.window_size if hasattr(module, "window_size") else 4
    mag = token_magnitude(t).reshape(B, H // w, w, W // w, w).permute(0, 1, 3, 2, 4)
    return mag.reshape(B, -1, w * w)


def test_half_the_windows_match_pytorch_where_different_windows_win(micro):
    module, shape, path = micro
    program = compile_model(path, window={"keep": "0.5"})
    kept = _check(program, module, shape, 0.5)
    assert kept[0] != kept[1]  # the two inputs keep different windows
    assert program.meta["window_keep"] == {b: 0.5 for stage in module.block_names()
                                           for b in stage}
    mnemonics = {i.mnemonic for i in program.instructions}
    assert {"vred", "topk", "gload", "gstore"} <= mnemonics


def test_batch_of_two_images_ranks_windows_per_image(tmp_path):
    module, example = build_model("swin_micro", {"batch": 2}, seed=0)
    export_to_file(module, example, tmp_path / "m.pt")
    program = compile_model(tmp_path / "m.pt", window={"keep": "0.25"})
    kept = _check(program, module, example.shape, 0.25, seeds=(4,))
    x = _inputs(example.shape, 4)
    ranks = rank_windows(_stage0_magnitudes(module, x))[:, :4]
    assert ranks[0].tolist() != ranks[1].tolist()  # the two images keep different windows
    assert kept


def test_keep_one_is_the_dense_program(micro):
    _, _, path = micro
    dense = compile_model(path)
    kept = compile_model(path, window={"keep": "1.0"})
    assert kept.instructions == dense.instructions


def test_per_block_ratios_from_json(micro, tmp_path):
    module, shape, path = micro
    ratios = {"layers.0.blocks.0": 0.5, "layers.0.blocks.1": 0.25, "layers.1.blocks.1": 0.5}
    spec = tmp_path / "keep.json"
    spec.write_text(json.dumps(ratios))
    out = tmp_path / "out.json"
    program = compile_model(path, window={"keep": str(spec), "out": str(out)})
    _check(program, module, shape, ratios)
    assert json.loads(out.read_text()) == {**{b: 1.0 for stage in module.block_names()
                                              for b in stage}, **ratios}


def _compile_keep(path, ratios, tmp_path):
    spec = tmp_path / "keep.json"
    spec.write_text(json.dumps(ratios))
    return compile_model(path, window={"keep": str(spec)})


def _layers_with_code(program) -> set[str]:
    return {r.name for r in program.debug if r.end_pc > r.start_pc}


def test_sparsevits_floor_keeps_4_of_16_windows_at_0_3(micro):
    """SparseViT keeps int(nW * (1 - p)): 0.3 keeps 4 of stage 0's 16 windows (not 5) and
    1 of stage 1's 4."""
    module, shape, path = micro
    program = compile_model(path, window={"keep": "0.3"})
    _check(program, module, shape, 0.3)
    try:
        module.set_window_keep(0.3)
        assert [b.num_kept for stage in module.layers for b in stage.blocks] == [4, 4, 1, 1]
    finally:
        module.set_window_keep(None)


def test_sparsevits_own_0_9_0_8_prunes_one_of_four_windows(micro, tmp_path):
    """SparseViT's configuration 0.9 / 0.8 on a stage of 4 windows keeps int(3.6) = 3 and
    int(3.2) = 3 (the old ceil rule kept all 4: it pruned nothing)."""
    module, shape, path = micro
    ratios = {"layers.1.blocks.0": 0.9, "layers.1.blocks.1": 0.8}
    program = _compile_keep(path, ratios, tmp_path)
    _check(program, module, shape, ratios, seeds=(1, 2, 5))
    assert {"layers.1.blocks.0.window_gather", "layers.1.blocks.1.window_gather"} \
        <= _layers_with_code(program)


def test_a_block_keeping_no_window_is_removed(micro, tmp_path):
    """0.2 of 4 windows keeps none: the block is removed, no instruction runs for it; the
    stage is still scored (at the skipped block's input, which is the next one's) for
    the shifted block that keeps 2."""
    module, shape, path = micro
    ratios = {"layers.1.blocks.0": 0.2, "layers.1.blocks.1": 0.5}
    program = _compile_keep(path, ratios, tmp_path)
    _check(program, module, shape, ratios, seeds=(1, 2))
    layers = _layers_with_code(program)
    assert not {n for n in layers if n.startswith("layers.1.blocks.0.")} - {
        "layers.1.blocks.0.window_magnitude"}
    assert "layers.1.blocks.1.attn" in layers
    dense = compile_model(path)
    assert len(program.instructions) < len(dense.instructions)


def test_window_pruning_composes_with_2_4_sparsity(micro):
    module, shape, path = micro
    program = compile_model(path, window={"keep": "0.5"}, sparsity={"spec": "2:4"})
    # --sparsity 2:4 prunes the blocks' linears; patch merging's reduction stays dense
    linears = [n for n, m in module.named_modules()
               if isinstance(m, torch.nn.Linear) and ".blocks." in n]
    config = {n: (2, 4) for n in linears}
    _check(program, module, shape, 0.5, sparsity=config)


def test_pruning_saves_cycles(micro):
    _, shape, path = micro
    x = {"x": _inputs(shape, 1).numpy()}
    cycles = {keep: LoadedProgram(compile_model(path, window={"keep": keep}), TARGET)
              .run(x).total_cycles for keep in ("1.0", "0.5", "0.25")}
    assert cycles["1.0"] > cycles["0.5"] > cycles["0.25"]


@pytest.mark.parametrize("keep, message", [
    ("1.5", "a keep ratio must be in (0, 1]"),
    ("0", "a keep ratio must be in (0, 1]"),
    ("nope.json", "not a ratio in (0, 1] and no such file"),
    ("sparsevit:latency=2", "expected sparsevit:latency=L with L in (0, 1]"),
    ("sparsevit:speed=2", "expected sparsevit:latency=L"),
])
def test_bad_keep_values_are_clear_errors(micro, keep, message):
    with pytest.raises(WindowPruneError, match=re_escape(message)):
        compile_model(micro[2], window={"keep": keep})


def re_escape(text):
    import re

    return re.escape(text)


@pytest.fixture(scope="module")
def deep(tmp_path_factory):
    """swin_micro with four blocks in its first stage: two of each grid parity."""
    torch.manual_seed(0)
    module = swin("swin_micro", depths=(4, 2)).eval()
    path = tmp_path_factory.mktemp("swin") / "deep.pt"
    export_to_file(module, torch.zeros(module.input_shape()), path)
    return module, module.input_shape(), path


@pytest.mark.parametrize("ratios", [
    {"layers.0.blocks.0": 0.5, "layers.0.blocks.2": 0.75},  # plain grid
    {"layers.0.blocks.1": 0.25, "layers.0.blocks.3": 0.5},  # shifted grid
])
def test_ratios_may_not_grow_within_a_grid_parity(deep, tmp_path, ratios):
    spec = tmp_path / "k.json"
    spec.write_text(json.dumps(ratios))
    with pytest.raises(WindowPruneError, match="must not increase"):
        compile_model(deep[2], window={"keep": str(spec)})


def test_ratios_may_rise_across_grid_parities(deep, tmp_path):
    """0.75/0.5/0.75/0.5 runs in SparseViT (each grid's kept sets are prefixes of its own
    ranking): the compiled program matches the reference, which checks the same prefixes."""
    module, shape, path = deep
    ratios = {"layers.0.blocks.0": 0.75, "layers.0.blocks.1": 0.5,
              "layers.0.blocks.2": 0.75, "layers.0.blocks.3": 0.5}
    program = _compile_keep(path, ratios, tmp_path)
    _check(program, module, shape, ratios)
    ranks = [r.name for r in program.debug if r.name.endswith(".window_rank")]
    assert ranks == ["layers.0.blocks.0.window_rank", "layers.0.blocks.1.window_rank"]


@pytest.fixture(scope="module")
def one_window(tmp_path_factory):
    """swin_micro on 32x32 images: its last stage is a single 4x4 window (no shift), as
    Swin-T's stage 4 at 224."""
    module, example = build_model("swin_micro", {"img_size": 32}, seed=0)
    path = tmp_path_factory.mktemp("swin") / "one.pt"
    export_to_file(module, example, path)
    return module, example.shape, path


def test_one_window_blocks_can_be_named_and_keep_0_or_1_window(one_window, tmp_path):
    """A keep below 1 keeps int(1 * keep) = 0 windows of a one-window stage: the block is
    removed; 1.0 is the dense block."""
    module, shape, path = one_window
    ratios = {"layers.1.blocks.0": 1.0, "layers.1.blocks.1": 0.9}
    program = _compile_keep(path, ratios, tmp_path)
    _check(program, module, shape, ratios)
    layers = _layers_with_code(program)
    assert "layers.1.blocks.0.attn" in layers
    assert not any(n.startswith("layers.1.blocks.1.") for n in layers)
    uniform = compile_model(path, window={"keep": "0.5"})
    _check(uniform, module, shape, 0.5)
    assert not any(n.startswith("layers.1.blocks.") for n in _layers_with_code(uniform))


def test_unknown_block_names_list_the_known_ones(micro, tmp_path):
    spec = tmp_path / "k.json"
    spec.write_text(json.dumps({"layers.3.blocks.0": 0.5}))
    with pytest.raises(WindowPruneError, match=r"unknown blocks layers\.3\.blocks\.0 "
                                               r"\(blocks: layers\.0\.blocks\.0 \.\.\. "):
        compile_model(micro[2], window={"keep": str(spec)})


def test_cli_errors_are_one_line_without_a_file_left(micro, tmp_path):
    out = tmp_path / "p.bin"
    for argv, fragment in (
            (["--window-keep", "1.5"], "--window-keep 1.5: a keep ratio must be in (0, 1]"),
            (["--window-keep-out", str(tmp_path / "k.json")],
             "--window-keep-out needs --window-keep"),
            (["--calib", str(tmp_path / "c.npy")], "--calib needs --sparsity elsa:... or "
                                                  "--window-keep sparsevit:...")):
        proc = run_nmc("compile", micro[2], "-o", out, *argv)
        expect_process_error(proc, fragment)
        assert not out.exists()


def test_a_model_without_swin_blocks_is_refused(tmp_path):
    module, example = build_model("deit_tiny", {"img_size": 32, "patch": 8, "dim": 64,
                                                "depth": 1, "heads": 2, "num_classes": 10})
    export_to_file(module, example, tmp_path / "d.pt")
    with pytest.raises(WindowPruneError, match="has no Swin blocks"):
        compile_model(tmp_path / "d.pt", window={"keep": "0.5"})


# ------------------------------------------------------------------------ the search


def test_search_meets_its_budget_with_valid_nested_ratios(micro, tmp_path, capsys,
                                                         monkeypatch):
    monkeypatch.setattr(sparsevit, "GENERATIONS", 3)  # the budget and ratios, not optimality
    monkeypatch.setattr(sparsevit, "POPULATION", 8)
    module, shape, path = micro
    out = tmp_path / "keep.json"
    program = compile_model(path, window={"keep": "sparsevit:latency=0.8", "out": str(out)})
    table = capsys.readouterr().err
    assert "latency" in table and "of dense, budget 0.80" in table
    ratios = json.loads(out.read_text())
    assert set(ratios.values()) <= set(sparsevit.RATIOS)
    for stage in module.block_names():
        for parity in (stage[0::2], stage[1::2]):
            values = [ratios[b] for b in parity]
            assert values == sorted(values, reverse=True)
    fraction = float(table.split("(")[1].split(" of dense")[0])
    assert fraction <= 0.80
    assert min(ratios.values()) < 1.0
    _check(program, module, shape, ratios, seeds=(3,))


def _toy_problem():
    """A stage of four equally fast blocks (two per grid parity); pruning block b to r costs
    harm[b] * (1 - r)."""
    blocks = [f"s.blocks.{i}" for i in range(4)]
    harm = dict(zip(blocks, (5.0, 4.0, 1.0, 0.5)))
    model = sparsevit.LatencyModel(blocks, {b: "s" for b in blocks},
                                   {b: ("s", i % 2) for i, b in enumerate(blocks)},
                                   {b: {r: 100 * r for r in sparsevit.RATIOS} for b in blocks},
                                   {b: 16 for b in blocks})

    def errors(configs):
        return [sum(harm[b] * (1 - c[b]) for b in blocks) for c in configs]

    return blocks, model, errors


def test_search_is_deterministic():
    blocks, model, error = _toy_problem()
    runs = [sparsevit.search(model, [blocks], 300, error) for _ in range(2)]
    assert runs[0].config == runs[1].config and runs[0].evaluated == runs[1].evaluated


def test_an_unreachable_budget_is_a_clear_error(micro):
    with pytest.raises(WindowPruneError, match="no configuration meets the budget"):
        compile_model(micro[2], window={"keep": "sparsevit:latency=0.05"})


def test_search_prefers_the_least_harmful_configuration():
    """The budget allows pruning two of the four toy blocks to 0.2: the search finds the
    two least harmful ones (the later block of each grid parity, so ratios stay nested)."""
    blocks, model, error = _toy_problem()
    result = sparsevit.search(model, [blocks], 400 - 2 * 80, error)
    assert result is not None and result.cycles <= 240
    assert result.config == {"s.blocks.0": 1.0, "s.blocks.1": 1.0, "s.blocks.2": 0.2,
                             "s.blocks.3": 0.2}


def test_search_nests_ratios_per_grid_parity():
    """A candidate's ratios are sorted within the even blocks of a stage and within the
    odd ones; a rise across parities stays."""
    stage = [f"s.blocks.{i}" for i in range(4)]
    config = dict(zip(stage, (0.5, 0.75, 0.75, 1.0)))
    assert list(sparsevit.nested(config, [stage]).values()) == [0.75, 1.0, 0.5, 0.75]
    rising = dict(zip(stage, (0.75, 0.5, 0.75, 0.5)))
    assert sparsevit.nested(rising, [stage]) == rising


def test_latency_model_counts_nothing_for_a_removed_block(micro):
    """On the 4-window stage, 0.2 keeps no window: the block is removed, so it costs 0 and
    needs no scoring; the stage's scoring is still measured (at 0.3, which keeps 1)."""
    from nmc.compiler.driver import import_nm
    from nmc.compiler.sparsity.window_search import latency_model

    module = import_nm(micro[2])
    blocks = swin_blocks(module)
    model = latency_model(module, blocks, TARGET)
    assert model.windows == {"layers.0.blocks.0": 16, "layers.0.blocks.1": 16,
                             "layers.1.blocks.0": 4, "layers.1.blocks.1": 4}
    assert model.cost["layers.1.blocks.0"][0.2] == model.cost["layers.1.blocks.1"][0.2] == 0
    assert 0 < model.cost["layers.1.blocks.0"][0.3] < model.cost["layers.1.blocks.0"][1.0]
    assert set(model.stage_overhead) == {"layers.0", "layers.1"}
    assert len(model.grid_overhead) == 4
    dense = {b.name: 1.0 for b in blocks}
    skipped = {**dense, "layers.1.blocks.0": 0.2, "layers.1.blocks.1": 0.2}
    assert model.cycles(skipped) == model.dense() - sum(
        model.cost[b][1.0] for b in ("layers.1.blocks.0", "layers.1.blocks.1"))


@pytest.mark.slow
def test_swin_tiny_half_the_windows(tmp_path):
    module, example = build_model("swin_tiny", {}, seed=0)
    export_to_file(module, example, tmp_path / "t.pt")
    program = compile_model(tmp_path / "t.pt", window={"keep": "0.5"})
    _check(program, module, example.shape, 0.5, seeds=(1,))


def test_scatter_writes_into_its_table_when_the_table_is_dead(micro):
    """plan-memory gives win.scatter's result the table's DRAM space (the block input in
    windows is not used after the scatter), so the kernel copies nothing but the kept
    windows."""
    from nmc.compiler.dialects.win import ScatterOp
    from nmc.compiler.dialects.nm_attrs import dram_addr_of_op

    seen = []

    def after(name, module):
        if name == "plan-memory":
            for op in module.walk():
                if isinstance(op, ScatterOp):
                    seen.append((dram_addr_of_op(op), dram_addr_of_op(op.table.owner)))

    compile_model(micro[2], after_pass=after, window={"keep": "0.5"})
    assert len(seen) == 4 and all(result == table for result, table in seen)

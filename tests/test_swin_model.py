"""Swin Transformer reference (models/swin.py) and SparseViT window pruning
(models/window_prune.py): timm's state_dict layout, the shift mask, the blocks against a naive
per-window loop written here from the papers' description, window selection on crafted
inputs, keep 1.0 == dense bit for bit, torch.export, and the registry entries."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from nmc.models import window_prune as wp
from nmc.models.registry import ModelError, build_model, load_state_dict_file
from nmc.models.swin import (
    SWIN_CONFIGS,
    shift_attention_mask,
    swin,
    window_partition,
)

# ----------------------------------------------------------------------------- helpers


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """These tests run many tiny ops, where a second intra-op thread only adds contention
    (8 ms per op instead of microseconds on a busy 2-core machine); restored afterwards."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def timm_swin_shapes(embed: int, depths, heads, *, img: int = 224, patch: int = 4,
                     window: int = 7, classes: int = 1000) -> dict[str, tuple[int, ...]]:
    """Keys and shapes of timm's (>= 0.9) SwinTransformer state_dict, written from timm's
    module structure: PatchEmbed(proj, norm), SwinTransformerStage(downsample=PatchMerging
    for stages 1.., blocks), norm, ClassifierHead(fc). relative_position_index and attn_mask
    are non-persistent buffers there, so they are not in it."""
    shapes: dict[str, tuple[int, ...]] = {
        "patch_embed.proj.weight": (embed, 3, patch, patch),
        "patch_embed.proj.bias": (embed,),
        "patch_embed.norm.weight": (embed,),
        "patch_embed.norm.bias": (embed,),
    }
    res = img // patch
    for i, (depth, h) in enumerate(zip(depths, heads)):
        d = embed * 2**i
        if i > 0:
            res //= 2
            shapes[f"layers.{i}.downsample.norm.weight"] = (2 * d,)
            shapes[f"layers.{i}.downsample.norm.bias"] = (2 * d,)
            shapes[f"layers.{i}.downsample.reduction.weight"] = (d, 2 * d)
        w = min(window, res)  # timm shrinks the window to the resolution
        for j in range(depth):
            b = f"layers.{i}.blocks.{j}"
            shapes.update({
                f"{b}.norm1.weight": (d,), f"{b}.norm1.bias": (d,),
                f"{b}.attn.relative_position_bias_table": ((2 * w - 1) ** 2, h),
                f"{b}.attn.qkv.weight": (3 * d, d), f"{b}.attn.qkv.bias": (3 * d,),
                f"{b}.attn.proj.weight": (d, d), f"{b}.attn.proj.bias": (d,),
                f"{b}.norm2.weight": (d,), f"{b}.norm2.bias": (d,),
                f"{b}.mlp.fc1.weight": (4 * d, d), f"{b}.mlp.fc1.bias": (4 * d,),
                f"{b}.mlp.fc2.weight": (d, 4 * d), f"{b}.mlp.fc2.bias": (d,),
            })
    d = embed * 2 ** (len(depths) - 1)
    shapes.update({"norm.weight": (d,), "norm.bias": (d,),
                   "head.fc.weight": (classes, d), "head.fc.bias": (classes,)})
    return shapes


def micro(**kw) -> torch.nn.Module:  # noqa: ANN003
    torch.manual_seed(0)
    m = swin("swin_micro", **kw).eval()
    with torch.no_grad():  # non-trivial norms and biases, so that every parameter matters
        for name, p in m.named_parameters():
            if name.endswith("bias") or "norm" in name:
                p.add_(0.1 * torch.randn_like(p))
    return m


def naive_block(blk, x: torch.Tensor, kept=None) -> torch.Tensor:  # noqa: ANN001
    """One Swin block computed window by window with explicit coordinates. `kept[b]` lists
    the windows (index into the block's, possibly shifted, window grid, row-major) that run
    in image b; the other tokens keep their input. kept=None: every window (dense block)."""
    B, H, W, C = x.shape
    ws, s, nh = blk.window_size, blk.shift_size, blk.attn.num_heads
    a = blk.attn
    table = a.relative_position_bias_table
    out = x.clone()
    for b in range(B):
        windows = range((H // ws) * (W // ws)) if kept is None else kept[b]
        for win in windows:
            wy, wx = divmod(int(win), W // ws)
            local = [(ty, tx) for ty in range(ws) for tx in range(ws)]
            grid = [(wy * ws + ty, wx * ws + tx) for ty, tx in local]  # on the rolled map
            orig = [((gy + s) % H, (gx + s) % W) for gy, gx in grid]  # torch.roll(-s) undone
            t = torch.stack([x[b, py, px] for py, px in orig])  # [N, C]
            h = F.layer_norm(t, (C,), blk.norm1.weight, blk.norm1.bias, blk.norm1.eps)
            q, k, v = F.linear(h, a.qkv.weight, a.qkv.bias).chunk(3, dim=-1)
            n, hd = len(local), C // nh
            # relative position (row of the bias table) and shift mask of every token pair
            rel = torch.tensor([[(li[0] - lj[0] + ws - 1) * (2 * ws - 1) + (li[1] - lj[1] + ws - 1)
                                 for lj in local] for li in local])
            # tokens brought together only by the roll may not attend
            side = [(gy >= H - s, gx >= W - s) for gy, gx in grid]
            mask = torch.tensor([[-100.0 if s and si != sj else 0.0 for sj in side] for si in side])
            heads_out = []
            for head in range(nh):
                sl = slice(head * hd, (head + 1) * hd)
                logits = q[:, sl] @ k[:, sl].T * hd**-0.5 + table[rel, head] + mask
                heads_out.append(logits.softmax(-1) @ v[:, sl])
            t = t + F.linear(torch.cat(heads_out, -1), a.proj.weight, a.proj.bias)
            h = F.layer_norm(t, (C,), blk.norm2.weight, blk.norm2.bias, blk.norm2.eps)
            t = t + blk.mlp.fc2(F.gelu(blk.mlp.fc1(h)))
            for (py, px), row in zip(orig, t):
                out[b, py, px] = row
    return out


def naive_ranking(mag: torch.Tensor, ws: int, s: int) -> list[list[int]]:
    """Per image, window indices by descending L2 norm of the token magnitudes in the window
    (on the grid rolled by -s), equal scores in index order."""
    B, H, W = mag.shape
    out = []
    for b in range(B):
        scores = []
        for win in range((H // ws) * (W // ws)):
            wy, wx = divmod(win, W // ws)
            vals = [mag[b, (wy * ws + ty + s) % H, (wx * ws + tx + s) % W]
                    for ty in range(ws) for tx in range(ws)]
            scores.append(math.sqrt(sum(float(v) ** 2 for v in vals)))
        out.append(sorted(range(len(scores)), key=lambda w: (-scores[w], w)))
    return out


def stage0_input(m, B: int = 1) -> torch.Tensor:  # noqa: ANN001
    r = m.geometry[0].resolution
    return torch.randn(B, r, r, m.layers[0].blocks[0].norm1.normalized_shape[0])


# ----------------------------------------------------------------------------- state_dict


def test_micro_state_dict_matches_timm_layout():
    m = micro()
    sd = m.state_dict()
    # two stages of two blocks, one patch merging, 13 tensors per block
    assert len(sd) == 4 + 2 * 2 * 13 + 3 + 2 + 2
    expected = timm_swin_shapes(32, (2, 2), (2, 4), img=64, window=4, classes=10)
    assert {k: tuple(v.shape) for k, v in sd.items()} == expected
    for key in ("layers.1.downsample.reduction.weight", "layers.0.blocks.1.attn.qkv.bias",
                "layers.1.blocks.1.attn.relative_position_bias_table", "head.fc.weight"):
        assert key in sd
    assert "layers.0.downsample.norm.weight" not in sd  # stage 0 has no merging
    assert "layers.1.downsample.reduction.bias" not in sd  # reduction has no bias
    # the buffers exist (computed in __init__) but are non-persistent, as in timm
    buffers = dict(m.named_buffers())
    assert "layers.0.blocks.1.attn_mask" in buffers
    assert "layers.0.blocks.0.attn.relative_position_index" in buffers
    assert not any("attn_mask" in k or "relative_position_index" in k for k in sd)


@pytest.mark.parametrize("name", ["swin_tiny", "swin_base"])
def test_full_size_shapes_match_timm(name):
    embed, depths, heads = SWIN_CONFIGS[name]
    m = swin(name)
    assert {k: tuple(v.shape) for k, v in m.state_dict().items()} == \
        timm_swin_shapes(embed, depths, heads)
    # the last stage of Swin-T/B at 224 is 7x7 = one window: no shift, no mask
    last = m.layers[-1].blocks[1]
    assert (last.window_size, last.shift_size, last.attn_mask) == (7, 0, None)
    assert m.layers[2].blocks[1].shift_size == 3


def test_swin_tiny_parameter_count():
    # timm's swin_tiny_patch4_window7_224 has 28,288,354 parameters
    assert sum(p.numel() for p in swin("swin_tiny").parameters()) == 28_288_354


def test_timm_style_state_dict_loads_strictly(tmp_path):
    shapes = timm_swin_shapes(32, (2, 2), (2, 4), img=64, window=4, classes=10)
    g = torch.Generator().manual_seed(1)
    sd = {k: torch.randn(s, generator=g) for k, s in shapes.items()}
    path = tmp_path / "w.pt"
    torch.save(sd, path)
    m, _ = build_model("swin_micro", {}, weights=path)
    assert all(torch.equal(m.state_dict()[k], v) for k, v in sd.items())
    sd["layers.0.blocks.0.attn_mask"] = torch.zeros(16, 16, 16)  # persistent in old timm
    torch.save(sd, path)
    with pytest.raises(ModelError, match="unexpected keys: layers.0.blocks.0.attn_mask"):
        load_state_dict_file(m, path)


# ----------------------------------------------------------------------------- geometry


def test_shift_mask_matches_a_naive_region_rule():
    """A token pair of a shifted window may attend iff both come from the same side of the
    roll's wrap-around in each axis (they were neighbours in the original map)."""
    for res, ws, s in ((16, 4, 2), (8, 4, 2), (14, 7, 3)):
        mask = shift_attention_mask(res, ws, s)
        nwx = res // ws
        assert mask.shape == (nwx * nwx, ws * ws, ws * ws)
        for win in range(nwx * nwx):
            wy, wx = divmod(win, nwx)
            pos = [(wy * ws + ty, wx * ws + tx) for ty in range(ws) for tx in range(ws)]
            side = [(y >= res - s, x >= res - s) for y, x in pos]
            naive = torch.tensor([[0.0 if a == b else -100.0 for b in side] for a in side])
            assert torch.equal(mask[win], naive), (res, ws, s, win)


def test_window_shrinks_to_the_resolution_as_in_timm():
    m = swin("swin_micro", img_size=32)  # stage 1 is 4x4 = the window: one window, no shift
    stage1 = m.layers[1].blocks[1]
    assert (stage1.window_size, stage1.shift_size, stage1.num_windows) == (4, 0, 1)
    assert stage1.attn_mask is None
    m = swin("swin_micro", img_size=16, window_size=7)  # 4x4 < 7: the window becomes 4
    blk = m.layers[0].blocks[1]
    assert (blk.window_size, blk.shift_size) == (4, 0)
    assert blk.attn.relative_position_bias_table.shape == (49, 2)
    x = torch.randn(1, 3, 16, 16)
    assert m.eval()(x).shape == (1, 10)


@pytest.mark.parametrize("kw, match", [
    ({"window_size": 5}, "resolution 16 is not a multiple of the window 5"),
    ({"img_size": 66}, "not divisible by patch 4"),
    ({"img_size": 36, "window_size": 9}, "odd 9x9 grid"),
    ({"embed_dim": 33}, "not divisible by 2 heads"),
    ({"depths": (2, 2, 2)}, "3 stage depths but 2 head counts"),
])
def test_bad_configurations_raise_model_error(kw, match):
    with pytest.raises(ModelError, match=match):
        swin("swin_micro", **kw)


# ----------------------------------------------------------------------------- blocks


def test_dense_blocks_match_the_naive_window_loop():
    m = micro()
    x = stage0_input(m, B=2)
    with torch.no_grad():
        for blk in m.layers[0].blocks:  # plain and shifted
            assert torch.allclose(blk(x), naive_block(blk, x), atol=1e-5)


def test_keep_one_is_bit_identical_to_dense():
    x = torch.randn(2, 3, 64, 64)
    dense = micro()
    kept_all = micro(window_keep=1.0)
    with torch.no_grad():
        assert torch.equal(dense(x), kept_all(x))
        assert torch.equal(dense(x), dense.set_window_keep([1.0] * 4)(x))


def _crafted(m, B: int = 1) -> tuple[torch.Tensor, list[int]]:  # noqa: ANN001
    """Stage-0 input whose plain 4x4 windows have distinct magnitudes (a permutation), most
    of them zero, so the ranking is known; returns it and the expected top-8 windows."""
    x = torch.zeros(B, 16, 16, 32)
    levels = {5: 9.0, 0: 8.0, 15: 7.0, 10: 6.0, 3: 5.0, 12: 4.0, 6: 3.0, 9: 2.0}
    for win, level in levels.items():
        wy, wx = divmod(win, 4)
        x[:, wy * 4:wy * 4 + 4, wx * 4:wx * 4 + 4] = level * torch.randn(B, 4, 4, 32).sign()
    return x, sorted(levels, key=lambda w: -levels[w])


def test_pruned_block_keeps_the_expected_windows_and_passes_the_others_through():
    m = micro(window_keep=[0.5, 0.5, 1.0, 1.0])
    blk = m.layers[0].blocks[0]
    assert blk.num_kept == 8  # floor(0.5 * 16)
    x, top8 = _crafted(m)
    x = x + 0.01 * torch.randn_like(x)  # the zero windows get small, distinct magnitudes
    ranking = wp.rank_windows(blk.window_magnitudes(wp.token_magnitude(x)))
    assert ranking[0, :8].tolist() == top8
    assert ranking.tolist() == naive_ranking(wp.token_magnitude(x), 4, 0)
    kept = ranking[:, :8]
    with torch.no_grad():
        out = blk(x, kept)
        assert torch.allclose(out, naive_block(blk, x, kept.tolist()), atol=1e-5)
        dense = blk(x)
    changed = (out != x).any(-1)[0]  # [16, 16] tokens the block touched
    for win in range(16):
        wy, wx = divmod(win, 4)
        region = (slice(wy * 4, wy * 4 + 4), slice(wx * 4, wx * 4 + 4))
        if win in top8:  # kept windows: what the dense block computes there
            assert changed[region].all()
            assert torch.allclose(out[0][region], dense[0][region], atol=1e-5)
        else:
            assert torch.equal(out[0][region], x[0][region])


def test_shifted_block_ranks_windows_of_the_rolled_map():
    m = micro(window_keep={"layers.0.blocks.1": 0.25})
    blk = m.layers[0].blocks[1]
    assert (blk.shift_size, blk.num_kept) == (2, 4)
    x, _ = _crafted(m, B=2)
    x[1] = x[1].flip(0)  # the second image ranks differently
    mag = wp.token_magnitude(x)
    ranking = wp.rank_windows(blk.window_magnitudes(mag))
    assert ranking.tolist() == naive_ranking(mag, 4, 2)
    assert ranking[0].tolist() != ranking[1].tolist()
    kept = ranking[:, :4]
    with torch.no_grad():
        assert torch.allclose(blk(x, kept), naive_block(blk, x, kept.tolist()), atol=1e-5)


def test_stage_scores_once_and_later_blocks_keep_a_prefix():
    """Blocks 0 (plain) and 1 (shifted) of stage 0 at 0.5 and 0.25: both rankings come from
    the magnitudes of the stage input (block 0's input), not from block 1's input."""
    m = micro(window_keep={"layers.0.blocks.0": 0.5, "layers.0.blocks.1": 0.25})
    stage = m.layers[0]
    x, _ = _crafted(m, B=2)
    x[1] = x[1].roll(5, dims=1)
    x = x + 0.01 * torch.randn_like(x)
    mag = wp.token_magnitude(x)
    plain, shifted = naive_ranking(mag, 4, 0), naive_ranking(mag, 4, 2)
    with torch.no_grad():
        x1 = naive_block(stage.blocks[0], x, [r[:8] for r in plain])
        x2 = naive_block(stage.blocks[1], x1, [r[:4] for r in shifted])
        assert torch.allclose(stage(x), x2, atol=1e-5)


def test_nested_prefix_within_a_grid():
    """Four blocks in a stage: block 2 reuses block 0's plain ranking and block 3 block 1's
    shifted one, each cut to a shorter prefix."""
    m = swin("swin_micro", depths=(4, 2), window_keep=[0.75, 0.5, 0.5, 0.25, 0.25, 0.25])
    stage = m.layers[0]
    x = torch.randn(1, 16, 16, 32)
    calls = []
    for blk in stage.blocks:
        blk.register_forward_pre_hook(lambda mod, args: calls.append(args[1][0].tolist()))
    with torch.no_grad():
        stage(x)
    mag = wp.token_magnitude(x)
    plain, shifted = naive_ranking(mag, 4, 0), naive_ranking(mag, 4, 2)
    assert calls == [plain[0][:12], shifted[0][:8], plain[0][:8], shifted[0][:4]]


def test_equal_scores_keep_the_lower_window_index():
    m = micro(window_keep=0.5)
    blk = m.layers[0].blocks[0]
    ranking = wp.rank_windows(blk.window_magnitudes(torch.zeros(1, 16, 16)))
    assert ranking[0, :8].tolist() == list(range(8))


# ----------------------------------------------------------------------------- keep ratios


def test_num_kept_is_sparsevits_floor():
    """SparseViT keeps int(nW * (1 - p)) windows, p = 1 - keep."""
    assert wp.num_kept(0.5, 49) == 24
    assert wp.num_kept(0.3, 16) == 4
    assert wp.num_kept(0.9, 4) == wp.num_kept(0.8, 4) == 3
    assert wp.num_kept(0.29, 100) == 29  # 0.29 * 100 is 28.999999999999996 in floating point
    assert wp.num_kept(0.01, 16) == 0  # the block is skipped
    assert wp.num_kept(0.5, 1) == 0
    assert wp.num_kept(1.0, 16) == 16
    for windows in (1, 4, 16, 49, 100):
        for percent in range(1, 101):  # every keep ratio of two decimals: the exact floor
            assert wp.num_kept(percent / 100, windows) == windows * percent // 100


def test_a_block_keeping_no_window_is_skipped():
    """0.2 of 4 windows keeps none: the block's output is its input (SparseViT's residual
    identity); the other parity's block still runs, on the magnitudes of the stage input."""
    m = micro(window_keep=[1.0, 1.0, 0.2, 0.5])
    stage = m.layers[1]
    assert [blk.num_kept for blk in stage.blocks] == [0, 2]
    x = torch.randn(2, 16, 16, 32)
    with torch.no_grad():
        merged = stage.downsample(x)  # the input of the stage's blocks: [2, 8, 8, 64]
        ranking = naive_ranking(wp.token_magnitude(merged), 4, 2)
        want = naive_block(stage.blocks[1], merged, [r[:2] for r in ranking])
        assert torch.allclose(stage(x), want, atol=1e-5)
        m.set_window_keep([1.0, 1.0, 0.2, 0.2])
        assert torch.equal(stage(x), merged)

@pytest.mark.parametrize("ratios, match", [
    (0.0, r"keep ratio 0.0 must be a number in \(0, 1\]"),
    (1.5, "must be a number in"),
    (True, "must be a number in"),
    ({"layers.0.blocks.9": 0.5}, "unknown blocks layers.0.blocks.9"),
    ([0.5, 0.5], "2 window keep ratios for 6 blocks"),
    ([0.5, 1.0, 0.75, 1.0, 1.0, 1.0], "must not increase among the plain-window"),
    ([1.0, 0.5, 1.0, 0.75, 1.0, 1.0], "must not increase"),
])
def test_bad_keep_ratios_raise_model_error(ratios, match):
    with pytest.raises(ModelError, match=match):
        swin("swin_micro", depths=(4, 2)).set_window_keep(ratios)


def test_ratios_may_rise_across_grid_parities():
    """SparseViT nests kept sets per grid (plain, shifted), not across them: 0.75/0.5/0.75/
    0.5 is valid, each block keeping a prefix of its own grid's ranking of the stage input."""
    m = swin("swin_micro", depths=(4, 2), window_keep=[0.75, 0.5, 0.75, 0.5, 1.0, 1.0])
    calls = []
    for blk in m.layers[0].blocks:
        blk.register_forward_pre_hook(lambda mod, args: calls.append(args[1][0].tolist()))
    x = torch.randn(1, 16, 16, 32)
    with torch.no_grad():
        m.layers[0](x)
    mag = wp.token_magnitude(x)
    plain, shifted = naive_ranking(mag, 4, 0), naive_ranking(mag, 4, 2)
    assert calls == [plain[0][:12], shifted[0][:8], plain[0][:12], shifted[0][:8]]


def test_window_keep_round_trip():
    m = micro().set_window_keep({"layers.1.blocks.0": 0.5, "layers.1.blocks.1": 0.5})
    assert m.window_keep == {"layers.0.blocks.0": 1.0, "layers.0.blocks.1": 1.0,
                             "layers.1.blocks.0": 0.5, "layers.1.blocks.1": 0.5}
    assert m.layers[1].blocks[0].num_kept == 2  # floor(0.5 * 4)
    assert m.set_window_keep(None).layers[1].blocks[0].num_kept is None


# ----------------------------------------------------------------------------- export / registry


@pytest.mark.parametrize("keep", [None, [0.5, 0.5, 0.5, 0.25], [0.5, 0.5, 0.2, 0.5]])
def test_torch_export_dense_and_pruned(keep):
    m = micro(window_keep=keep)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        ep = torch.export.export(m, (x,))
        assert torch.equal(ep.module()(x), m(x))
    ops = {str(n.target) for n in ep.graph.nodes if n.op == "call_function"}
    assert ("aten.scatter.src" in ops) == (keep is not None)


def test_registry_builds_and_overrides_swin():
    m, x = build_model("swin_micro", {"batch": 2, "num_classes": 7})
    assert x.shape == (2, 3, 64, 64)
    assert m(x).shape == (2, 7)
    with pytest.raises(ModelError, match="swin_tiny: stage 1 resolution 28 is not a multiple of"):
        build_model("swin_tiny", {"window": 8})
    with pytest.raises(ModelError, match="swin_micro has no parameter depth"):
        build_model("swin_micro", {"depth": 3})

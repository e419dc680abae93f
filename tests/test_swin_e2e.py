"""Swin end to end (dense): build_model -> torch.export -> nmc compile -> emulator, against
the PyTorch forward (relative max error < 1e-4); and the pieces on their own: the folding
of the relative position bias and the shift mask into one additive term, the row
permutations (cyclic shift + window partition / reverse, patch merging), nm.attention
with a bias and nm.mean, each against PyTorch.

swin_micro (64x64, two stages, both with shifted windows) compiles in a few seconds;
swin_tiny at 224 (~1-2 min to compile) is `slow`.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from nmc.compiler.dialects.nm import AttentionOp, MeanOp, PermuteRowsOp
from nmc.compiler.driver import import_nm
from nmc.compiler.errors import UnsupportedOpsError
from nmc.compiler.frontend import load_exported_program
from nmc.models.registry import build_model, export_to_file
from nmc.models.swin import window_partition, window_reverse

from test_deit_e2e import compile_and_run
from test_kernels_deit import compile_nm, rand, rel_err, run, small_target


# ------------------------------------------------------------------------ end to end


@pytest.mark.parametrize("params", [{}, {"batch": 2, "num_classes": 7}], ids=["b1", "b2"])
def test_swin_micro_matches_pytorch(tmp_path, params):
    _, result, got, want = compile_and_run(tmp_path, "swin_micro", params)
    assert got.shape == want.shape
    assert rel_err(got, want) < 1e-4
    kinds = {layer.kind for layer in result.layers}
    assert {"patch_embed", "permute_rows", "attention", "linear", "layer_norm",
            "add", "mean"} <= kinds


@pytest.mark.slow
def test_swin_tiny_224(tmp_path):
    _, _, got, want = compile_and_run(tmp_path, "swin_tiny", {})
    assert got.shape == (1, 1000)
    assert rel_err(got, want) < 1e-4


# ------------------------------------------------------------------------ frontend


@pytest.fixture(scope="module")
def micro(tmp_path_factory):
    module, example = build_model("swin_micro", {}, seed=0)
    path = tmp_path_factory.mktemp("swin") / "m.pt"
    export_to_file(module, example, path)
    return module, path


def test_bias_and_shift_mask_fold_into_one_term(micro):
    """The int64 gather of the bias table and the mask are folded at load time: one f32
    constant per block, [1, heads, N, N] (plain windows) or [windows, heads, N, N] =
    bias + mask (shifted windows)."""
    module, path = micro
    ep = load_exported_program(path)
    for i, stage in enumerate(module.layers):
        for j, blk in enumerate(stage.blocks):
            prefix = f"layers.{i}.blocks.{j}.attn.folded_"
            (key,) = [k for k in ep.constants if k.startswith(prefix)]
            with torch.no_grad():
                want = blk.attn._rel_pos_bias()
                if blk.attn_mask is not None:
                    want = want + blk.attn_mask.unsqueeze(1)
            got = ep.constants[key]
            assert got.dtype == torch.float32 and got.shape == want.shape
            torch.testing.assert_close(got, want, rtol=0, atol=1e-6)


def test_raised_swin_uses_permutations_attention_bias_and_mean(micro):
    module, path = micro
    nm_module = import_nm(path)
    perms = [op for op in nm_module.walk() if isinstance(op, PermuteRowsOp)]
    attns = [op for op in nm_module.walk() if isinstance(op, AttentionOp)]
    assert len(attns) == 4 and all(a.bias is not None for a in attns)
    assert len([op for op in nm_module.walk() if isinstance(op, MeanOp)]) == 1
    # per block a partition (with the shift) and a reverse, plus the patch merging
    assert len(perms) == 2 * 4 + 1
    # block layers.0.blocks.1: roll by -2, then 4x4 windows of the 16x16 map
    ids = torch.arange(16 * 16).view(1, 16, 16, 1)
    want = window_partition(torch.roll(ids, (-2, -2), (1, 2)), 4).reshape(-1)
    shifted = [p for p in perms if p.layer_name.startswith("layers.0.blocks.1")]
    assert shifted[0].row_indices == want.tolist()
    # and back: reverse then roll by +2 undoes it
    back = torch.tensor(shifted[1].row_indices)
    assert torch.equal(want[back], torch.arange(256))


def test_unsupported_movement_is_reported(tmp_path):
    class RollLast(torch.nn.Module):
        def forward(self, x):
            return torch.roll(x, 1, dims=-1) + x

    path = tmp_path / "roll.pt"
    export_to_file(RollLast(), torch.randn(1, 4, 8), path)
    with pytest.raises(UnsupportedOpsError, match="roll along the last dim"):
        import_nm(path)


# ------------------------------------------------------------------------ kernels


def _permute_program(shape, rows, out_shape, target="sta_ref"):
    def body(v, ops):
        op = PermuteRowsOp(v["x"], rows, out_shape, "perm")
        ops.append(op)
        return [op.result]

    return compile_nm({"x": shape}, {}, body, target)


@pytest.mark.parametrize("tiny", [False, True], ids=["sta_ref", "tiny"])
def test_permute_rows_shift_partition_and_reverse(tmp_path, tiny):
    target = small_target(tmp_path, spad=512, acc=256) if tiny else "sta_ref"
    b, h, w, c, win, shift = 2, 12, 12, 24, 4, 2
    ids = torch.arange(b * h * w).view(b, h, w, 1)
    part = window_partition(torch.roll(ids, (-shift, -shift), (1, 2)), win).reshape(-1)
    rev = torch.roll(window_reverse(ids.view(b, -1, win * win, 1), win, h, w),
                     (shift, shift), (1, 2)).reshape(-1)
    x = rand(b, h, w, c)
    want_part = window_partition(torch.roll(x, (-shift, -shift), (1, 2)), win)
    want_part = want_part.reshape(-1, win * win, c)
    _, (got,) = run(_permute_program((b, h, w, c), part.tolist(), want_part.shape, target),
                    {"x": x.numpy()}, target)
    np.testing.assert_array_equal(got, want_part.numpy())
    _, (got,) = run(_permute_program(tuple(want_part.shape), rev.tolist(), (b, h, w, c),
                                     target), {"x": want_part.numpy()}, target)
    np.testing.assert_array_equal(got, x.numpy())


def test_permute_rows_patch_merging_gather():
    from nmc.models.swin import PatchMerging

    b, h, w, c = 1, 6, 8, 16
    ids = torch.arange(b * h * w).view(b, h, w, 1)
    rows = ids.reshape(b, h // 2, 2, w // 2, 2, 1).permute(0, 1, 3, 4, 2, 5).reshape(-1)
    x = rand(b, h, w, c)
    want = x.reshape(b, h // 2, 2, w // 2, 2, c).permute(0, 1, 3, 4, 2, 5).flatten(3)
    _, (got,) = run(_permute_program((b, h, w, c), rows.tolist(), want.shape), {"x": x.numpy()})
    np.testing.assert_array_equal(got, want.numpy())
    # the same order as the reference model's PatchMerging (identity norm and reduction)
    merge = PatchMerging(c, 4 * c)
    with torch.no_grad():
        merge.reduction.weight.copy_(torch.eye(4 * c))
        ref = merge(x)
        ln = torch.nn.functional.layer_norm(want, (4 * c,), merge.norm.weight, merge.norm.bias)
    torch.testing.assert_close(ref, ln)


def attention_bias_reference(qkv, heads, scale, bias):
    B, N, C3 = qkv.shape
    C = C3 // 3
    q, k, v = qkv.reshape(B, N, 3, heads, C // heads).permute(2, 0, 3, 1, 4).unbind(0)
    s = (q * scale) @ k.transpose(-2, -1)
    s = (s.view(-1, bias.shape[0], heads, N, N) + bias.unsqueeze(0)).view(B, heads, N, N)
    return (s.softmax(-1) @ v).transpose(1, 2).reshape(B, N, C)


@pytest.mark.parametrize("B,G,N,C,heads,tiny", [
    (4, 4, 16, 32, 2, False),   # one bias per window (shifted windows)
    (6, 1, 49, 48, 3, False),   # one bias for all windows, 7x7 windows
    (4, 2, 49, 48, 3, True),    # groups repeat over the batch; tiny SPAD splits the tiles
])
def test_attention_with_bias_matches_pytorch(tmp_path, B, G, N, C, heads, tiny):
    target = small_target(tmp_path, spad=8192, acc=2048) if tiny else "sta_ref"
    scale = (C // heads) ** -0.5
    qkv = rand(B, N, 3 * C)
    bias = rand(G, heads, N, N, seed=3)
    bias[:, :, :, : N // 3] -= 100.0  # a shift mask's -100 entries

    def body(v, ops):
        op = AttentionOp(v["qkv"], heads, scale, "attn", v["bias"])
        ops.append(op)
        return [op.result]

    program = compile_nm({"qkv": (B, N, 3 * C), "bias": (G, heads, N, N)}, {}, body, target)
    _, (got,) = run(program, {"qkv": qkv.numpy(), "bias": bias.numpy()}, target)
    want = attention_bias_reference(qkv, heads, scale, bias)
    assert rel_err(got, want.numpy()) < 1e-5


@pytest.mark.parametrize("shape,tiny", [
    ((1, 7, 7, 768), False),   # Swin-T's pooling
    ((2, 8, 8, 64), False),
    ((3, 13, 40), True),       # odd token count; a tiny SPAD splits rows and columns
])
def test_mean_pooling_matches_pytorch(tmp_path, shape, tiny):
    target = small_target(tmp_path, spad=512, acc=256) if tiny else "sta_ref"

    def body(v, ops):
        op = MeanOp(v["x"], "pool")
        ops.append(op)
        return [op.result]

    x = rand(*shape)
    _, (got,) = run(compile_nm({"x": shape}, {}, body, target), {"x": x.numpy()}, target)
    want = x.mean(dim=tuple(range(1, len(shape) - 1)))
    assert rel_err(got, want.numpy()) < 1e-6


def test_fast_and_reference_emulation_agree_on_swin(micro):
    """The emulator's fast path and its reference simulation agree on a compiled Swin
    (vbin reading ACC, strided window copies, the halving sums of the mean)."""
    from nmc.compiler.driver import compile_model
    from nmc.isa.target import load_target
    from nmc.runtime.emulator import run_program

    module, path = micro
    program = compile_model(path)
    (name_in,) = [s.name for s in program.symbols if s.kind == "input"]
    x = {name_in: rand(*module.input_shape()).numpy()}
    fast = run_program(program, x, load_target(), trace=True)
    ref = run_program(program, x, load_target(), trace=True, fast=False)
    for k in fast.outputs:
        np.testing.assert_array_equal(fast.outputs[k], ref.outputs[k])
    assert fast.total_cycles == ref.total_cycles and fast.trace == ref.trace

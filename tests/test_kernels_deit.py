"""The DeiT kernels (attention, patch embedding, concat, select, broadcast add) on nm IR
built by hand, through schedule-tiles .. insert-tokens and the emulator, against PyTorch.

Shapes are chosen so that nothing divides the 16x16 PE array or the tiles; a tiny target
(small SPAD/ACC) forces the kernels to split their work further.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from xdsl.dialects.builtin import FunctionType, ModuleOp
from xdsl.dialects.func import FuncOp, ReturnOp
from xdsl.ir import Block, Region

from nmc.compiler.dialects.nm import (
    AddOp, AttentionOp, ConcatOp, LinearOp, ParamOp, PatchEmbedOp, SelectOp, f32_tensor,
)
from nmc.compiler.dialects.nm_attrs import has_tiling, set_io_names, set_model_path, set_tiling
from nmc.compiler.emit import module_to_program
from nmc.compiler.frontend.weights import WeightStore, attach_weights
from nmc.compiler.pipeline import make_context, run_pipeline
from nmc.isa.table import Instr, Mem
from nmc.isa.target import TARGETS_DIR, load_target
from nmc.runtime.emulator import run_program

TARGET = load_target()
BACKEND = "schedule-tiles{target=%s},plan-memory,lower-nm-to-isa{target=%s},insert-tokens"


def small_target(tmp_path, spad=4096, acc=2048):
    path = tmp_path / "tiny.toml"
    path.write_text((TARGETS_DIR / "sta_ref.toml").read_text()
                    .replace("spad_words = 65536", f"spad_words = {spad}")
                    .replace("acc_words = 16384", f"acc_words = {acc}"))
    return str(path)


def compile_nm(inputs: dict[str, tuple[int, ...]], params: dict[str, np.ndarray], body,
               target: str = "sta_ref", tiling: dict | None = None):
    """Build func @main(inputs) with nm.param ops for `params`; `body(values, ops)` appends
    the compute ops to `ops` and returns the output values. Returns the Program.
    `tiling` replaces the tile choice of every compute op (to test a given schedule)."""
    block = Block(arg_types=[f32_tensor(s) for s in inputs.values()])
    values = dict(zip(inputs, block.args))
    ops = []
    for name, array in params.items():
        op = ParamOp(name, array.shape)
        ops.append(op)
        values[name] = op.result
    results = body(values, ops)
    ops.append(ReturnOp(*results))
    block.add_ops(ops)
    func = FuncOp("main", FunctionType.from_lists([a.type for a in block.args],
                                                  [r.type for r in results]), Region(block))
    set_io_names(func, inputs, [f"out{i}" for i in range(len(results))])
    module = ModuleOp([func])
    set_model_path(module, "<hand-built>")
    module.verify()
    spec = BACKEND % (f'"{target}"', f'"{target}"')
    if tiling is not None:
        first, rest = spec.split(",", 1)
        run_pipeline(module, first, make_context())
        for op in module.walk():
            if has_tiling(op):
                set_tiling(op, tiling)
        spec = rest
    run_pipeline(module, spec, make_context())
    attach_weights(module, WeightStore.from_arrays(params))  # no model file
    return module_to_program(module)


def run(program, inputs, target="sta_ref"):
    result = run_program(program, inputs, load_target(target), fill=float("nan"))
    return result, [result.outputs[f"out{i}"] for i in range(len(result.outputs))]


def rel_err(got, want):
    want = np.asarray(want)
    return float(np.abs(got - want).max() / np.abs(want).max())


def rand(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


# ------------------------------------------------------------------------ ISA: transpose_w


def test_matmul_transpose_w_semantics():
    from emulator_helpers import I, program, serialize

    m, k, n = 5, 7, 3
    a, w = rand(m, k).numpy(), rand(n, k, seed=1).numpy()
    prog = program(serialize([
        I("load", mem=Mem.SPAD, local=0, dram=0, rows=m, cols=k, stride=k),
        I("load", mem=Mem.SPAD, local=64, dram=64, rows=n, cols=k, stride=k),
        I("matmul", a=0, w=64, out=0, m=m, k=k, n=n, transpose_w=1),
        I("store", mem=Mem.ACC, local=0, dram=128, rows=m, cols=n, stride=n),
    ]), inputs=[("a", (m, k), 0), ("w", (n, k), 64)], outputs=[("y", (m, n), 128)])
    y = run_program(prog, {"a": a, "w": w}, TARGET).outputs["y"]
    np.testing.assert_allclose(y, a @ w.T, rtol=1e-6, atol=1e-6)
    # same footprint size and timing as the plain form
    plain = Instr.make("matmul", m=m, k=k, n=n)
    assert Instr.make("matmul", m=m, k=k, n=n, transpose_w=1).footprint() == plain.footprint()


# ------------------------------------------------------------------------ attention


def attention_reference(qkv: torch.Tensor, heads: int, scale: float) -> torch.Tensor:
    B, N, C3 = qkv.shape
    C = C3 // 3
    q, k, v = qkv.reshape(B, N, 3, heads, C // heads).permute(2, 0, 3, 1, 4).unbind(0)
    out = F.scaled_dot_product_attention(q, k, v, scale=scale)
    return out.transpose(1, 2).reshape(B, N, C)


def _attention_program(B, N, C, heads, scale, target="sta_ref", tiling=None):
    def body(v, ops):
        op = AttentionOp(v["qkv"], heads, scale, "attn")
        ops.append(op)
        return [op.result]

    return compile_nm({"qkv": (B, N, 3 * C)}, {}, body, target, tiling)


@pytest.mark.parametrize("B,N,C,heads", [
    (1, 197, 192, 3),   # DeiT-tiny
    (2, 37, 48, 3),     # nothing divides: N, head dim 16, batch 2
    (1, 5, 12, 4),      # tiny head dim 3
    (3, 50, 40, 2),     # head dim 20
])
def test_attention_matches_sdpa(B, N, C, heads):
    scale = (C // heads) ** -0.5
    program = _attention_program(B, N, C, heads, scale)
    qkv = rand(B, N, 3 * C, seed=N) * 2
    _, (got,) = run(program, {"qkv": qkv.numpy()})
    assert rel_err(got, attention_reference(qkv, heads, scale)) < 1e-4


def test_attention_on_a_small_target_tiles_queries(tmp_path):
    target = small_target(tmp_path, spad=8192, acc=2048)
    B, N, C, heads = 2, 45, 64, 2
    program = _attention_program(B, N, C, heads, 0.125, target)
    matmuls = [i for i in program.instructions if i.mnemonic == "matmul"]
    assert max(i["m"] for i in matmuls) < N  # S = [tm x N] tiles: N rows do not fit ACC
    qkv = rand(B, N, 3 * C, seed=3)
    _, (got,) = run(program, {"qkv": qkv.numpy()}, target)
    assert rel_err(got, attention_reference(qkv, heads, 0.125)) < 1e-4


@pytest.mark.parametrize("m", [8, 16, 23])
@pytest.mark.parametrize("kv", [1, 2])
@pytest.mark.parametrize("depth", [0, 1, 2])
@pytest.mark.parametrize("o_in_s", [0, 1])
def test_every_attention_schedule_is_correct(m, kv, depth, o_in_s):
    # 23 tokens: one tile per head for m=23, so pipelined tiles span heads and batches
    B, N, C, heads = 2, 23, 24, 3
    program = _attention_program(B, N, C, heads, 0.3, tiling={
        "m": m, "kv": kv, "depth": depth, "o_in_s": o_in_s})
    qkv = rand(B, N, 3 * C, seed=m + 10 * depth)
    _, (got,) = run(program, {"qkv": qkv.numpy()})
    assert rel_err(got, attention_reference(qkv, heads, 0.3)) < 1e-4


def test_attention_uses_transposed_keys_and_merges_heads_in_place():
    program = _attention_program(1, 20, 32, 2, 0.25)
    ins = program.instructions
    assert sum(i.mnemonic == "matmul" and i["transpose_w"] == 1 for i in ins) == 2
    assert {i["fn"] for i in ins if i.mnemonic == "vrow"} == {1}  # softmax
    stores = [i for i in ins if i.mnemonic == "store"]
    assert all(i["stride"] == 32 and i["mem"] == Mem.ACC for i in stores)


# ------------------------------------------------------------------------ patch embedding


def _patch_embed(B, Cin, H, W, D, p, target="sta_ref", seed=0):
    weight = rand(D, Cin, p, p, seed=seed) * 0.1
    bias = rand(D, seed=seed + 1)
    params = {"proj.weight": weight.numpy(), "proj.bias": bias.numpy()}

    def body(v, ops):
        op = PatchEmbedOp(v["x"], v["proj.weight"], v["proj.bias"], p, "patch_embed")
        ops.append(op)
        return [op.result]

    program = compile_nm({"x": (B, Cin, H, W)}, params, body, target)
    x = rand(B, Cin, H, W, seed=seed + 2)
    want = F.conv2d(x, weight, bias, stride=p).flatten(2).transpose(1, 2)
    _, (got,) = run(program, {"x": x.numpy()}, target)
    return program, got, want


@pytest.mark.parametrize("B,Cin,H,W,D,p", [
    (1, 3, 32, 32, 64, 8),
    (2, 3, 40, 24, 48, 8),   # non-square, D not a multiple of 16
    (1, 2, 15, 10, 20, 5),   # odd patch
    (1, 3, 64, 64, 96, 16),
])
def test_patch_embed_matches_conv2d(B, Cin, H, W, D, p):
    program, got, want = _patch_embed(B, Cin, H, W, D, p)
    assert got.shape == tuple(want.shape)
    assert rel_err(got, want) < 1e-4
    # the weight is used as stored ([D, Cin, p, p]): no layout change, matmul transposes
    assert any(i.mnemonic == "matmul" and i["transpose_w"] for i in program.instructions)


def test_patch_embed_on_a_small_target(tmp_path):
    program, got, want = _patch_embed(2, 3, 48, 48, 40, 8, small_target(tmp_path, 6144, 1024))
    assert rel_err(got, want) < 1e-4


# ------------------------------------------------------------------------ concat, select


@pytest.mark.parametrize("shapes,axis", [
    ([(2, 1, 24), (2, 9, 24)], 1),             # class token + patches
    ([(2, 1, 24), (2, 1, 24), (2, 7, 24)], 1),  # + distillation token
    ([(3, 5, 8), (1, 5, 8)], 0),
    ([(2, 3, 4, 5), (2, 2, 4, 5)], 1),
])
def test_concat_matches_torch_cat(shapes, axis):
    xs = [rand(*s, seed=i) for i, s in enumerate(shapes)]
    names = {f"x{i}": s for i, s in enumerate(shapes)}

    def body(v, ops):
        op = ConcatOp([v[n] for n in names], axis, "cat")
        ops.append(op)
        return [op.result]

    program = compile_nm(names, {}, body)
    _, (got,) = run(program, {n: x.numpy() for n, x in zip(names, xs)})
    np.testing.assert_array_equal(got, torch.cat(xs, axis).numpy())


def test_concat_bigger_than_the_scratchpad(tmp_path):
    target = small_target(tmp_path, 1024, 256)
    shapes = [(2, 1, 200), (2, 30, 200)]
    xs = [rand(*s, seed=i) for i, s in enumerate(shapes)]

    def body(v, ops):
        op = ConcatOp([v["a"], v["b"]], 1, "cat")
        ops.append(op)
        return [op.result]

    program = compile_nm({"a": shapes[0], "b": shapes[1]}, {}, body, target)
    _, (got,) = run(program, {"a": xs[0].numpy(), "b": xs[1].numpy()}, target)
    np.testing.assert_array_equal(got, torch.cat(xs, 1).numpy())


@pytest.mark.parametrize("shape,index", [((2, 7, 24), 0), ((3, 5, 40), 4), ((1, 197, 192), 0)])
def test_select_matches_indexing(shape, index):
    x = rand(*shape)

    def body(v, ops):
        op = SelectOp(v["x"], 1, index, "select")
        ops.append(op)
        return [op.result]

    program = compile_nm({"x": shape}, {}, body)
    _, (got,) = run(program, {"x": x.numpy()})
    np.testing.assert_array_equal(got, x[:, index].numpy())


# ------------------------------------------------------------------------ broadcast add


@pytest.mark.parametrize("lhs,rhs", [
    ((2, 10, 24), (1, 10, 24)),  # position embedding
    ((3, 7, 40), (7, 40)),
    ((2, 5, 16), (1, 1, 16)),    # one row: a broadcast parameter
    ((4, 33), (33,)),
    ((2, 9, 8), (2, 9, 8)),
])
def test_broadcast_add(lhs, rhs):
    a, b = rand(*lhs), rand(*rhs, seed=1)

    def body(v, ops):
        op = AddOp(v["a"], v["pos"], "add")
        ops.append(op)
        return [op.result]

    program = compile_nm({"a": lhs}, {"pos": b.numpy()}, body)
    _, (got,) = run(program, {"a": a.numpy()})
    np.testing.assert_allclose(got, (a + b).numpy(), rtol=0, atol=0)


# ------------------------------------------------------------------------ a DeiT front end


def test_deit_stem_and_head_chain():
    """patch_embed -> concat(cls) -> + pos_embed -> qkv linear -> attention -> select."""
    B, Cin, img, p, D, heads = 2, 3, 24, 8, 24, 2
    n = (img // p) ** 2
    g = torch.Generator().manual_seed(0)
    params = {
        "pe.w": torch.randn(D, Cin, p, p, generator=g) * 0.1, "pe.b": torch.randn(D, generator=g),
        "cls": torch.randn(B, 1, D, generator=g), "pos": torch.randn(1, n + 1, D, generator=g),
        "qkv.w": torch.randn(3 * D, D, generator=g) * 0.2, "qkv.b": torch.randn(3 * D, generator=g),
    }

    def body(v, ops):
        pe = PatchEmbedOp(v["x"], v["pe.w"], v["pe.b"], p, "patch_embed")
        cat = ConcatOp([v["cls"], pe.result], 1, "cat")
        add = AddOp(cat.result, v["pos"], "pos_add")
        qkv = LinearOp(add.result, v["qkv.w"], v["qkv.b"], "qkv")
        attn = AttentionOp(qkv.result, heads, (D // heads) ** -0.5, "attn")
        sel = SelectOp(attn.result, 1, 0, "select")
        ops.extend([pe, cat, add, qkv, attn, sel])
        return [sel.result]

    program = compile_nm({"x": (B, Cin, img, img)}, {k: t.numpy() for k, t in params.items()},
                         body)
    x = torch.randn(B, Cin, img, img, generator=g)
    tok = F.conv2d(x, params["pe.w"], params["pe.b"], stride=p).flatten(2).transpose(1, 2)
    tok = torch.cat([params["cls"], tok], 1) + params["pos"]
    qkv = F.linear(tok, params["qkv.w"], params["qkv.b"])
    want = attention_reference(qkv, heads, (D // heads) ** -0.5)[:, 0]
    result, (got,) = run(program, {"x": x.numpy()})
    assert rel_err(got, want) < 1e-4
    assert [l.name for l in result.layers] == [
        "patch_embed", "cat", "pos_add", "qkv", "attn", "select"]


# ------------------------------------------------------------------------ tile search


def test_linear_closed_form_cost_matches_the_emitted_kernel():
    """The linear tile search ranks candidates by `LINEAR.cost` without emitting them; it
    must equal estimate_cycles / len of the emitted instructions (or both not fit)."""
    import random

    from kernel_helpers import emitted_and_costed

    from nmc.compiler.kernels.linear import LinearProblem

    rng = random.Random(0)
    for _ in range(150):
        M, K, N = rng.randint(1, 300), rng.randint(1, 800), rng.randint(1, 400)
        t = {"m": rng.choice([16, 32, 48, 64, 100, M]), "n": rng.choice([16, 32, 64, 128, N]),
             "k": rng.choice([16, 64, 96, 256, K])}
        bias, layout = rng.random() < 0.5, rng.choice(["kn", "nk"])
        act = rng.choice([None, None, "gelu", "gelu_tanh"])  # fused (fuse-activations)
        problem = LinearProblem(M, K, N, bias, activation=act, w_layout=layout)
        emitted, closed = emitted_and_costed(problem, t, TARGET)
        assert closed == emitted, (M, K, N, t, bias, layout, act)


def test_tile_choices_are_memoised_per_shape():
    from nmc.compiler.kernels.common import TILINGS
    from nmc.compiler.kernels.linear import LINEAR, LinearProblem

    calls = []
    real = TILINGS.get

    first = LINEAR.choose(LinearProblem(197, 192, 768, True), TARGET, "a")
    # a second search of the same shape (any layer name, a reloaded target) is a lookup
    TILINGS.get = lambda key, target, compute: real(key, target, lambda: calls.append(key))
    try:
        assert LINEAR.choose(LinearProblem(197, 192, 768, True), load_target(), "b") == first
    finally:
        TILINGS.get = real
    assert calls == []

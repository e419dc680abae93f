"""DeiT frontend: models/deit.py, `nmc export deit_*`, and raise-torch-to-nm of every DeiT
form (sdpa and explicit attention, batch 1 and 2) into nm.patch_embed / concat / add /
attention / select / linear / layer_norm / gelu.

`run_nm` below is a small numpy interpreter of the nm dialect written from the contract in
docs/ARCHITECTURE.md: running the raised module with it and comparing with PyTorch checks
that the raise keeps the semantics (and pins down the semantics the backend implements).
"""

from __future__ import annotations

import io
import math
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from xdsl.dialects.builtin import ModuleOp
from xdsl.dialects.func import FuncOp, ReturnOp
from xdsl.parser import Parser
from xdsl.printer import Printer
from xdsl.utils.exceptions import VerifyException

from nmc.cli import main
from nmc.compiler.dialects import nm
from nmc.compiler.dialects.context import make_context
from nmc.compiler.dialects.nm_attrs import model_path
from nmc.compiler.driver import import_nm
from nmc.compiler.errors import FrontendError, UnsupportedOpsError
from nmc.compiler.frontend import import_model, load_weights
from nmc.compiler.transforms.raise_torch_to_nm import RaiseTorchToNm
from nmc.models.deit import (
    DEIT_CONFIGS,
    TINY_TEST_CONFIG,
    DeiT,
    deit_tiny,
    reference,
    timm_state_dict_shapes,
)
from nmc.models.export import export_model
from nmc.models.registry import ModelError, build_model

TINY = TINY_TEST_CONFIG
TOKENS = (TINY["img_size"] // TINY["patch"]) ** 2 + 1
D = TINY["dim"]


# ----------------------------------------------------------------------------- helpers


def _main(module: ModuleOp) -> FuncOp:
    return next(op for op in module.ops if isinstance(op, FuncOp))


def _compute(module: ModuleOp) -> list[nm._ComputeOp]:
    return [op for op in module.walk() if isinstance(op, nm.COMPUTE_OPS)]


def _print(module: ModuleOp, *, debuginfo: bool = False) -> str:
    out = io.StringIO()
    Printer(stream=out, print_debuginfo=debuginfo).print_op(module)
    return out.getvalue()


def _body(module: ModuleOp) -> str:
    """The printed module without the model path (which differs between files)."""
    return "\n".join(
        line for line in _print(module).splitlines() if model_path(module) not in line
    )


def _shape(v) -> tuple[int, ...]:  # noqa: ANN001
    return tuple(v.type.get_shape())


def _gelu(x: np.ndarray, approximate: str) -> np.ndarray:
    if approximate == "tanh":
        return 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x**3)))
    erf = np.vectorize(math.erf, otypes=[np.float64])
    return 0.5 * x * (1 + erf(x / math.sqrt(2)))


def _softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def run_nm(
    module: ModuleOp, weights: dict[str, np.ndarray], *inputs: np.ndarray
) -> list[np.ndarray]:
    """Evaluate the nm module in float64 numpy, following docs/ARCHITECTURE.md."""
    func = _main(module)
    env = {a: np.asarray(x, np.float64) for a, x in zip(func.body.block.args, inputs)}
    out: list[np.ndarray] = []
    for op in func.body.block.ops:
        g = lambda v: env[v]  # noqa: E731
        if isinstance(op, nm.ParamOp):
            r = np.asarray(weights[op.param_name.data], np.float64)
        elif isinstance(op, nm.LinearOp):
            r = g(op.input) @ g(op.weight).T + (0 if op.bias is None else g(op.bias))
        elif isinstance(op, nm.LayerNormOp):
            x = g(op.input)
            mu, var = x.mean(-1, keepdims=True), x.var(-1, keepdims=True)
            r = (x - mu) / np.sqrt(var + op.eps_value) * g(op.gamma) + g(op.beta)
        elif isinstance(op, nm.GeluOp):
            r = _gelu(g(op.input), op.approximate.data)
        elif isinstance(op, nm.AddOp):
            r = g(op.lhs) + g(op.rhs)  # numpy broadcasting = nm.add's leading-dims rule
        elif isinstance(op, nm.PatchEmbedOp):
            # Patch (i, j) -> token i * W/p + j; its features in weight order (Cin, p, p).
            x, w, p = g(op.input), g(op.weight), op.patch_size
            b, c, h, wd = x.shape
            patches = x.reshape(b, c, h // p, p, wd // p, p).transpose(0, 2, 4, 1, 3, 5)
            patches = patches.reshape(b, (h // p) * (wd // p), c * p * p)
            r = patches @ w.reshape(w.shape[0], -1).T + g(op.bias)
        elif isinstance(op, nm.ConcatOp):
            r = np.concatenate([g(v) for v in op.inputs], axis=op.axis_value)
        elif isinstance(op, nm.AttentionOp):
            qkv, h = g(op.qkv), op.heads_value
            b, n, c3 = qkv.shape
            c = c3 // 3
            q, k, v = (qkv[..., i * c : (i + 1) * c].reshape(b, n, h, c // h) for i in range(3))
            r = np.empty((b, n, c))
            for head in range(h):
                s = q[:, :, head] @ k[:, :, head].transpose(0, 2, 1) * op.scale_value
                r[:, :, head * (c // h) : (head + 1) * (c // h)] = _softmax(s) @ v[:, :, head]
        elif isinstance(op, nm.SelectOp):
            assert op.axis_value == 1
            r = g(op.input)[:, op.index_value]
        elif isinstance(op, ReturnOp):
            out = [env[v] for v in op.operands]
            break
        else:
            raise AssertionError(f"run_nm: unknown op {op.name}")
        assert r.shape == _shape(op.results[0]), op
        env[op.results[0]] = r
    return out


def _tiny(fused: bool = True, seed: int = 0, **overrides: int) -> DeiT:
    torch.manual_seed(seed)
    return DeiT(**{**TINY, **overrides}, fused_attn=fused).eval()


@pytest.fixture(scope="module")
def tmp(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("deit_frontend")


@pytest.fixture(scope="module")
def tiny_models() -> dict[bool, DeiT]:
    """The same weights in both attention forms."""
    fused = _tiny(True)
    explicit = _tiny(False)
    explicit.load_state_dict(fused.state_dict())
    return {True: fused, False: explicit}


@pytest.fixture(scope="module")
def raised(tiny_models: dict[bool, DeiT], tmp: Path) -> dict[bool, tuple[Path, ModuleOp]]:
    out = {}
    for fused, model in tiny_models.items():
        path = export_model(model, torch.randn(1, 3, TINY["img_size"], TINY["img_size"]),
                            tmp / f"tiny_{'sdpa' if fused else 'explicit'}.pt")
        out[fused] = (path, import_nm(path))
    return out


# ----------------------------------------------------------------------------- models


def test_attention_forms_compute_the_same(tiny_models: dict[bool, DeiT]) -> None:
    x = torch.randn(2, 3, TINY["img_size"], TINY["img_size"])
    a, b = reference(tiny_models[True], x), reference(tiny_models[False], x)
    assert a.shape == (2, TINY["num_classes"])
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", list(DEIT_CONFIGS))
def test_timm_state_dict_keys_and_shapes(name: str) -> None:
    dim, depth, heads = DEIT_CONFIGS[name]
    with torch.device("meta"):
        model = deit_tiny() if name == "deit_tiny" else DeiT(dim=dim, depth=depth, heads=heads)
    got = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert got == timm_state_dict_shapes(dim=dim, depth=depth)
    assert got["pos_embed"] == (1, 197, dim) and got["head.weight"] == (1000, dim)
    assert model.blocks[0].attn.num_heads == heads
    assert model.norm.eps == 1e-6 and model.blocks[0].norm1.eps == 1e-6


def test_timm_state_dict_loads_strict() -> None:
    """A state_dict with timm's key names (written out by hand) loads with strict=True."""
    shapes = timm_state_dict_shapes(**{k: v for k, v in TINY.items() if k != "heads"})
    gen = torch.Generator().manual_seed(3)
    state = {k: torch.randn(s, generator=gen) for k, s in shapes.items()}
    model = _tiny()
    model.load_state_dict(state, strict=True)
    for k, v in model.state_dict().items():
        assert torch.equal(v, state[k]), k


def test_model_hyper_parameters_are_overridable() -> None:
    m = DeiT(img_size=48, patch=16, dim=24, depth=3, heads=4, mlp_ratio=2, num_classes=7,
             in_chans=1)
    assert m.pos_embed.shape == (1, 10, 24) and len(m.blocks) == 3
    assert m.blocks[0].mlp.fc1.weight.shape == (48, 24)
    assert m.blocks[0].attn.qkv.bias is not None
    assert reference(m, torch.randn(1, 1, 48, 48)).shape == (1, 7)
    with pytest.raises(ValueError, match="not divisible by patch"):
        DeiT(img_size=225)


# ----------------------------------------------------------------------------- raising


def _expected_layers(depth: int) -> list[tuple[type, str]]:
    layers: list[tuple[type, str]] = [
        (nm.PatchEmbedOp, "patch_embed"),
        (nm.ConcatOp, "concat"),
        (nm.AddOp, "add"),
    ]
    for i in range(depth):
        b = f"blocks.{i}"
        layers += [
            (nm.LayerNormOp, f"{b}.norm1"),
            (nm.LinearOp, f"{b}.attn.qkv"),
            (nm.AttentionOp, f"{b}.attn"),
            (nm.LinearOp, f"{b}.attn.proj"),
            (nm.AddOp, f"{b}.add"),
            (nm.LayerNormOp, f"{b}.norm2"),
            (nm.LinearOp, f"{b}.mlp.fc1"),
            (nm.GeluOp, f"{b}.mlp.act"),
            (nm.LinearOp, f"{b}.mlp.fc2"),
            (nm.AddOp, f"{b}.add_1"),
        ]
    return layers + [(nm.LayerNormOp, "norm"), (nm.SelectOp, "select"), (nm.LinearOp, "head")]


@pytest.mark.parametrize("fused", [True, False], ids=["sdpa", "explicit"])
def test_raised_op_sequence(raised, fused: bool) -> None:  # noqa: ANN001
    _, module = raised[fused]
    got = [(type(op), op.layer_name) for op in _compute(module)]
    assert got == _expected_layers(TINY["depth"])
    for op in module.walk():
        assert op.name.split(".")[0] in ("builtin", "func", "nm"), op.name


def test_both_attention_forms_raise_to_the_same_module(raised) -> None:  # noqa: ANN001
    assert _body(raised[True][1]) == _body(raised[False][1])


def _counts(depth: int) -> dict[str, int]:
    return {
        "nm.patch_embed": 1,
        "nm.concat": 1,
        "nm.add": 1 + 2 * depth,
        "nm.attention": depth,
        "nm.linear": 4 * depth + 1,
        "nm.layer_norm": 2 * depth + 1,
        "nm.gelu": depth,
        "nm.select": 1,
    }


@pytest.mark.parametrize("depth", [1, 3])
def test_op_counts_by_depth(tmp: Path, depth: int) -> None:
    model = _tiny(depth=depth)
    path = export_model(model, torch.randn(1, 3, 32, 32), tmp / f"depth{depth}.pt")
    assert Counter(op.name for op in _compute(import_nm(path))) == _counts(depth)


def test_op_operands_and_properties(raised) -> None:  # noqa: ANN001
    _, module = raised[True]
    func = _main(module)
    ops = {op.layer_name: op for op in _compute(module)}
    params = {op.param_name.data: op.result for op in module.walk() if isinstance(op, nm.ParamOp)}
    x = func.body.block.args[0]
    assert _shape(x) == (1, 3, 32, 32)

    pe = ops["patch_embed"]
    assert (pe.input, pe.weight, pe.bias) == (
        x, params["patch_embed.proj.weight"], params["patch_embed.proj.bias"]
    )
    assert pe.patch_size == 8 and _shape(pe.weight) == (D, 3, 8, 8)
    assert _shape(pe.result) == (1, 16, D)

    cat = ops["concat"]
    assert list(cat.inputs) == [params["cls_token"], pe.result] and cat.axis_value == 1
    add = ops["add"]
    assert (add.lhs, add.rhs) == (cat.result, params["pos_embed"])
    assert _shape(add.result) == (1, TOKENS, D)

    attn = ops["blocks.0.attn"]
    assert attn.qkv == ops["blocks.0.attn.qkv"].result
    assert _shape(attn.qkv) == (1, TOKENS, 3 * D) and _shape(attn.result) == (1, TOKENS, D)
    assert attn.heads_value == 2 and attn.head_dim == D // 2
    assert attn.scale_value == pytest.approx((D // 2) ** -0.5)
    assert ops["blocks.0.attn.proj"].input == attn.result

    sel = ops["select"]
    assert sel.input == ops["norm"].result and (sel.axis_value, sel.index_value) == (1, 0)
    assert ops["head"].input == sel.result
    assert func.body.block.last_op.operands[0] == ops["head"].result  # type: ignore[union-attr]


@pytest.mark.parametrize("fused", [True, False], ids=["sdpa", "explicit"])
def test_nm_semantics_match_pytorch(raised, tiny_models, fused: bool) -> None:  # noqa: ANN001
    path, module = raised[fused]
    x = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(7))
    (got,) = run_nm(module, load_weights(path), x.numpy())
    want = reference(tiny_models[fused], x)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("fused", [True, False], ids=["sdpa", "explicit"])
def test_batch_2_materialises_the_class_token(tmp: Path, fused: bool) -> None:
    model = _tiny(fused, seed=1)
    path = export_model(model, torch.randn(2, 3, 32, 32), tmp / f"batch2_{fused}.pt")
    module = import_nm(path)
    ops = _compute(module)
    expand = ops[1]
    assert isinstance(expand, nm.ConcatOp) and expand.layer_name == "expand"
    assert expand.axis_value == 0 and _shape(expand.result) == (2, 1, D)
    pos = next(op for op in ops if op.layer_name == "add")
    assert _shape(pos.lhs) == (2, TOKENS, D) and _shape(pos.rhs) == (1, TOKENS, D)
    assert pos.is_broadcast
    x = torch.randn(2, 3, 32, 32)
    (got,) = run_nm(module, load_weights(path), x.numpy())
    np.testing.assert_allclose(got, reference(model, x), rtol=1e-4, atol=1e-5)


def test_print_parse_round_trips(raised) -> None:  # noqa: ANN001
    path, module = raised[True]
    text = _print(module)
    reparsed = Parser(make_context(allow_unregistered=False), text).parse_module()
    reparsed.verify()
    assert _print(reparsed) == text
    # The torch-level import prints, parses back (typed torch ops), verifies and raises
    # to the same nm module, as `nmc opt -p raise-torch-to-nm` on a dump does.
    torch_level = import_model(path)
    torch_level.verify()
    torch_text = _print(torch_level, debuginfo=True)
    again = Parser(make_context(), torch_text).parse_module()
    assert _print(again, debuginfo=True) == torch_text
    RaiseTorchToNm().apply(make_context(), again)
    assert _print(again) == text


# ------------------------------------------------------------------------ image size


def _import_error(model: nn.Module, example: torch.Tensor, path: Path,
                  error: type[Exception] = UnsupportedOpsError) -> str:
    """The message of the `error` the frontend raises on `model` exported at `path`."""
    with pytest.raises(error) as info:
        import_nm(export_model(model, example, path))
    return str(info.value)


def test_image_size_not_divisible_is_a_frontend_error(tmp: Path) -> None:
    # A 33x33 image through a patch-8 DeiT: PyTorch floors it to 4x4 patches and exports.
    msg = _import_error(_tiny(), torch.randn(1, 3, 33, 33), tmp / "bad_size.pt", FrontendError)
    assert "input 33x33 is not divisible by patch 8 at patch_embed.proj (deit.py:" in msg
    assert "\n" not in msg


def test_image_size_225_at_export(tmp: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp / "never.pt"
    assert main(["export", "deit_tiny", "--img-size", "225", "-o", str(out)]) == 1
    err = capsys.readouterr().err
    assert "image size 225 is not divisible by patch 16" in err and "Traceback" not in err
    assert not out.exists()
    with pytest.raises(ModelError, match="not divisible by patch 16"):
        build_model("deit_small", {"img_size": 225})


# ------------------------------------------------------------------ unsupported forms


class _Attn(nn.Module):
    """Attention variants nmc must refuse, with the reason on the core op."""

    def __init__(self, variant: str) -> None:
        super().__init__()
        self.variant = variant
        self.qkv = nn.Linear(16, 48)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, N, C = x.shape
        qkv = self.qkv(x).reshape(B, N, 3, 2, 8).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        if self.variant == "swapped":
            q, k = k, q
        if self.variant == "causal":
            o = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        elif self.variant == "sdpa_scale":
            o = F.scaled_dot_product_attention(q, k, v, scale=0.3)
        elif self.variant == "scale_after":
            o = ((q @ k.transpose(-1, -2)) / 4.0).softmax(dim=3) @ v
        elif self.variant == "scale_both":
            o = ((q * 0.5) @ k.transpose(2, 3) * 0.25).softmax(dim=-1) @ v
        else:
            o = F.scaled_dot_product_attention(q, k, v)
        return o.transpose(1, 2).reshape(B, N, C)


@pytest.mark.parametrize(
    "variant, reason",
    [
        ("swapped", "the q, k, v head split must be timm's"),
        ("causal", "causal scaled_dot_product_attention is not supported"),
    ],
)
def test_attention_variants_are_refused_with_a_reason(tmp: Path, variant: str, reason: str) -> None:
    msg = _import_error(_Attn(variant), torch.randn(1, 5, 16), tmp / f"attn_{variant}.pt")
    assert f"torch.aten.scaled_dot_product_attention at <top level> (test_deit_frontend.py:" in msg
    assert reason in msg and "\n" not in msg


@pytest.mark.parametrize(
    "variant, scale", [("sdpa_scale", 0.3), ("scale_after", 0.25), ("scale_both", 0.125)]
)
def test_attention_scale_variants(tmp: Path, variant: str, scale: float) -> None:
    torch.manual_seed(0)
    model = _Attn(variant).eval()
    path = export_model(model, torch.randn(1, 5, 16), tmp / f"attn_{variant}.pt")
    module = import_nm(path)
    (attn,) = [op for op in _compute(module) if isinstance(op, nm.AttentionOp)]
    assert attn.layer_name == "attention" and attn.heads_value == 2
    assert attn.scale_value == pytest.approx(scale)
    x = torch.randn(1, 5, 16)
    (got,) = run_nm(module, load_weights(path), x.numpy())
    np.testing.assert_allclose(got, reference(model, x), rtol=1e-4, atol=1e-5)


class _Conv(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.proj = nn.Conv2d(3, 8, 3, stride=1, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).flatten(2).transpose(1, 2)


def test_general_convolution_is_refused(tmp: Path) -> None:
    msg = _import_error(_Conv(), torch.randn(1, 3, 8, 8), tmp / "conv.pt")
    assert "torch.aten.conv2d at proj" in msg
    assert "only the patch-embedding convolution is supported" in msg
    assert "stride [1, 1], padding [1, 1]" in msg


# ------------------------------------------------------------------------- nm dialect


def _verify_error(body: str, args: str) -> str:
    text = f"func.func @main({args}) {{\n{body}\n  func.return\n}}"
    module = Parser(make_context(), text).parse_module()
    with pytest.raises(VerifyException) as info:
        module.verify()
    return str(info.value)


@pytest.mark.parametrize(
    "body, args, message",
    [
        (
            '%y = "nm.patch_embed"(%x, %w, %b) <{layer = "pe", patch = 8 : i64}> : '
            "(tensor<1x3x36x32xf32>, tensor<4x3x8x8xf32>, tensor<4xf32>) -> tensor<1x16x4xf32>",
            "%x: tensor<1x3x36x32xf32>, %w: tensor<4x3x8x8xf32>, %b: tensor<4xf32>",
            "nm.patch_embed (pe): input 36x32 is not divisible by patch 8",
        ),
        (
            '%y = "nm.patch_embed"(%x, %w, %b) <{layer = "pe", patch = 8 : i64}> : '
            "(tensor<1x3x32x32xf32>, tensor<4x3x4x4xf32>, tensor<4xf32>) -> tensor<1x16x4xf32>",
            "%x: tensor<1x3x32x32xf32>, %w: tensor<4x3x4x4xf32>, %b: tensor<4xf32>",
            "must have a 8x8 kernel",
        ),
        (
            '%y = "nm.concat"(%a, %b) <{layer = "cat", axis = 1 : i64}> : '
            "(tensor<1x1x8xf32>, tensor<1x4x6xf32>) -> tensor<1x5x8xf32>",
            "%a: tensor<1x1x8xf32>, %b: tensor<1x4x6xf32>",
            "nm.concat (cat): input 1 [1, 4, 6] differs from input 0 [1, 1, 8] in dim 2",
        ),
        (
            '%y = "nm.concat"(%a, %b) <{layer = "cat", axis = 2 : i64}> : '
            "(tensor<1x1x8xf32>, tensor<1x1x8xf32>) -> tensor<1x1x16xf32>",
            "%a: tensor<1x1x8xf32>, %b: tensor<1x1x8xf32>",
            "axis must satisfy 0 <= axis < rank - 1 = 2, got 2",
        ),
        (
            '%y = "nm.attention"(%q) <{layer = "attn", heads = 3 : i64, scale = 0.5 : f64}> : '
            "(tensor<1x5x24xf32>) -> tensor<1x5x8xf32>",
            "%q: tensor<1x5x24xf32>",
            "nm.attention (attn): embedding dim C=8 (qkv [1, 5, 24]) is not divisible by heads=3",
        ),
        (
            '%y = "nm.attention"(%q) <{layer = "attn", heads = 2 : i64, scale = 0.5 : f64}> : '
            "(tensor<1x5x24xf32>) -> tensor<1x5x24xf32>",
            "%q: tensor<1x5x24xf32>",
            "result shape [1, 5, 24] should be [1, 5, 8]",
        ),
        (
            '%y = "nm.select"(%x) <{layer = "sel", axis = 1 : i64, index = 5 : i64}> : '
            "(tensor<1x5x8xf32>) -> tensor<1x8xf32>",
            "%x: tensor<1x5x8xf32>",
            "nm.select (sel): index 5 is out of range for input [1, 5, 8]",
        ),
        (
            '%y = "nm.select"(%x) <{layer = "sel", axis = 2 : i64, index = 0 : i64}> : '
            "(tensor<1x5x8xf32>) -> tensor<1x5xf32>",
            "%x: tensor<1x5x8xf32>",
            "axis must be 1, got 2",
        ),
        (
            '%y = "nm.add"(%x, %p) <{layer = "add"}> : '
            "(tensor<2x5x8xf32>, tensor<2x1x8xf32>) -> tensor<2x5x8xf32>",
            "%x: tensor<2x5x8xf32>, %p: tensor<2x1x8xf32>",
            "rhs [2, 1, 8] does not broadcast to lhs [2, 5, 8]",
        ),
    ],
)
def test_nm_verifiers(body: str, args: str, message: str) -> None:
    assert message in _verify_error(body, args)


def test_nm_add_broadcast_rule() -> None:
    assert nm.broadcasts_to((1, 5, 8), (2, 5, 8))
    assert nm.broadcasts_to((5, 8), (2, 5, 8))
    assert nm.broadcasts_to((1, 1, 8), (2, 5, 8))
    assert nm.broadcasts_to((2, 5, 8), (2, 5, 8))
    assert not nm.broadcasts_to((2, 1, 8), (2, 5, 8))
    assert not nm.broadcasts_to((1, 1, 5, 8), (5, 8))
    assert not nm.broadcasts_to((5, 1), (5, 8))


def test_new_ops_are_compute_ops() -> None:
    kinds = {cls.KIND for cls in nm.COMPUTE_OPS}
    assert {"patch_embed", "concat", "attention", "select"} <= kinds
    assert {nm.PatchEmbedOp, nm.ConcatOp, nm.AttentionOp, nm.SelectOp} <= set(nm.NM.operations)


# --------------------------------------------------------------------------------- CLI


def test_export_with_overrides_and_weights(tmp: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = {"img_size": 32, "patch": 8, "dim": 16, "depth": 1, "heads": 2, "num_classes": 5}
    shapes = timm_state_dict_shapes(**{k: v for k, v in cfg.items() if k != "heads"})
    gen = torch.Generator().manual_seed(5)
    state = {k: torch.randn(s, generator=gen) for k, s in shapes.items()}
    torch.save(state, tmp / "w.pth")
    sets = [a for k, v in cfg.items() if k != "img_size" for a in ("--set", f"{k}={v}")]
    out = tmp / "small.pt"
    assert main(["export", "deit_small", "--img-size", "32", *sets,
                 "--weights", str(tmp / "w.pth"), "-o", str(out)]) == 0
    assert "input [1, 3, 32, 32]" in capsys.readouterr().out
    weights = load_weights(out)
    for k, v in state.items():
        np.testing.assert_array_equal(weights[k], v.numpy())
    assert Counter(op.name for op in _compute(import_nm(out))) == _counts(1)

    # A DeiT checkpoint wrapped as {"model": state_dict} loads too.
    torch.save({"model": state, "epoch": 3}, tmp / "wrapped.pth")
    assert main(["export", "deit_small", "--img-size", "32", *sets,
                 "--weights", str(tmp / "wrapped.pth"), "-o", str(tmp / "w2.pt")]) == 0


def test_weights_that_do_not_fit(tmp: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = ["export", "deit_tiny", "--set", "depth=1", "--set", "dim=16", "--set", "heads=2",
            "--img-size", "32", "-o", str(tmp / "never.pt")]
    good = timm_state_dict_shapes(img_size=32, patch=16, dim=16, depth=1)
    bad = {k: torch.zeros(s) for k, s in good.items() if not k.startswith("head.")}
    bad["blocks.0.extra"] = torch.zeros(1)
    bad["pos_embed"] = torch.zeros(1, 197, 16)
    torch.save(bad, tmp / "bad.pth")
    assert main([*args, "--weights", str(tmp / "bad.pth")]) == 1
    err = capsys.readouterr().err
    assert "missing keys: head.weight, head.bias" in err
    assert "unexpected keys: blocks.0.extra" in err
    assert "pos_embed [1, 197, 16] in the file, [1, 5, 16] in the model" in err

    torch.save([1, 2, 3], tmp / "list.pth")
    assert main([*args, "--weights", str(tmp / "list.pth")]) == 1
    assert "does not hold a state_dict" in capsys.readouterr().err
    assert main([*args, "--weights", str(tmp / "missing.pth")]) == 1
    assert "weights file not found" in capsys.readouterr().err
    assert not (tmp / "never.pt").exists()


def test_export_option_errors(tmp: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = str(tmp / "never.pt")
    assert main(["export", "mlp_block", "--img-size", "32", "-o", out]) == 1
    assert "mlp_block has no parameter img_size" in capsys.readouterr().err
    assert main(["export", "deit_tiny", "--set", "heads=5", "-o", out]) == 1
    assert "dim 192 is not divisible by heads 5" in capsys.readouterr().err
    assert main(["export", "deit_tiny", "--img-size", "32", "--set", "img_size=64",
                 "-o", out]) == 1
    assert "contradicts" in capsys.readouterr().err


def test_export_real_deit_tiny_and_raise(tmp: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The full-size deit_tiny (224x224, 197 tokens, depth 12) imports and raises."""
    start = time.perf_counter()
    out = tmp / "deit_tiny.pt"
    assert main(["export", "deit_tiny", "-o", str(out)]) == 0
    module = import_nm(out)
    assert Counter(op.name for op in _compute(module)) == _counts(12)
    ops = {op.layer_name: op for op in _compute(module)}
    assert _shape(ops["patch_embed"].result) == (1, 196, 192)
    assert _shape(ops["blocks.11.attn"].qkv) == (1, 197, 576)
    assert ops["blocks.11.attn"].heads_value == 3
    assert _shape(ops["head"].result) == (1, 1000)
    assert time.perf_counter() - start < 60

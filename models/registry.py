"""The built-in models `nmc export` and `nmc demo` know, and how to export them.

A model is a factory of keyword hyper-parameters plus the shape of its example input;
`nmc export NAME --set key=value` overrides any of them (`--img-size N` is `--set
img_size=N`), and `--weights FILE` loads a state_dict (e.g. timm's) into it.
"""

from __future__ import annotations

import inspect
import io
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch

from nmc.common.fileio import atomic_write_bytes
from nmc.models.deit import DEIT_CONFIGS, DeiT, resample_pos_embed
from nmc.models.errors import ModelError  # defined there, raised here and by the models
from nmc.models.mlp_block import MLPBlock
from nmc.models.swin import SWIN_CONFIGS, SWIN_DEFAULTS, check_config, swin


@dataclass(frozen=True)
class ModelSpec:
    description: str
    factory: Callable[..., torch.nn.Module]
    defaults: dict[str, int]
    # the example input's shape from the hyper-parameters
    input_shape: Callable[[dict[str, int]], tuple[int, ...]]
    # raises ModelError for inconsistent hyper-parameters (None: no check)
    validate: Callable[[str, dict[str, int]], None] | None = None
    # --weights with a position embedding of another grid is resampled to the model's (as
    # timm does); only for models whose checkpoints come at another size (DINOv2: 518x518).
    # Elsewhere such a file is reported as a shape mismatch.
    resamples_pos_embed: bool = False


def _deit_factory(*, batch: int = 1, fused_attn: int = 1, **params: int) -> DeiT:
    del batch  # the example input's, not the model's
    return DeiT(**params, fused_attn=bool(fused_attn))


def _dinov2_factory(*, batch: int = 1, fused_attn: int = 1, **params: int) -> DeiT:
    """timm's vit_small_patch14_dinov2 (LayerScale, init_values 1e-5). With random weights
    the layer-scale factors are drawn around 1 instead of timm's 1e-5, so that every block
    changes the output and a compiled model that got a block wrong cannot pass for right."""
    del batch
    model = DeiT(**params, fused_attn=bool(fused_attn), init_values=1e-5)
    with torch.no_grad():
        for block in model.blocks:
            for ls in (block.ls1, block.ls2):
                ls.gamma.uniform_(0.5, 1.5)
    return model


def _validate_deit(name: str, p: dict[str, int]) -> None:
    if p["img_size"] % p["patch"]:
        raise ModelError(
            f"{name}: image size {p['img_size']} is not divisible by patch {p['patch']} "
            f"(choose an image size that is a multiple of the patch size)"
        )
    if p["dim"] % p["heads"]:
        raise ModelError(f"{name}: dim {p['dim']} is not divisible by heads {p['heads']}")
    if p["fused_attn"] not in (0, 1):
        raise ModelError(f"{name}: fused_attn must be 0 (explicit attention) or 1 (sdpa)")


# timm's DINOv2 backbones: name -> (dim, depth, heads); patch 14, LayerScale, no head
DINOV2_CONFIGS: dict[str, tuple[int, int, int]] = {
    "vit_small_patch14_dinov2": (384, 12, 6),
}

# DeiTs sized for small data sets (`nmc sparsify`), beside timm's named sizes:
# name -> (dim, depth, heads, hyper-parameters that differ from the ImageNet defaults).
# deit_digits: DeiT-tiny's width (so its linears are wide enough for N:M to pay off on
# the reference target, see docs/SPARSIFY.md) at depth 4, on 16x16 images in 4x4 patches.
DEIT_DATA_CONFIGS: dict[str, tuple[int, int, int, dict[str, int]]] = {
    "deit_digits": (192, 4, 3, {"img_size": 16, "patch": 4, "num_classes": 10}),
}


def _dinov2_spec(name: str) -> ModelSpec:
    dim, depth, heads = DINOV2_CONFIGS[name]
    defaults = {"img_size": 224, "patch": 14, "dim": dim, "depth": depth, "heads": heads,
                "mlp_ratio": 4, "num_classes": 0, "in_chans": 3, "batch": 1, "fused_attn": 1}
    return ModelSpec(
        f"DINOv2 ViT-{name.split('_')[1][0].upper()}/14 backbone (timm {name}: dim {dim}, "
        f"depth {depth}, heads {heads}, LayerScale, 224x224 -> 257 tokens; output: the class "
        f"token's features, or logits with --set num_classes=N; a timm checkpoint's 518x518 "
        f"position embedding is resampled on --weights)",
        _dinov2_factory,
        defaults,
        lambda p: (p["batch"], p["in_chans"], p["img_size"], p["img_size"]),
        _validate_deit,
        resamples_pos_embed=True,
    )


def _deit_spec(name: str) -> ModelSpec:
    dim, depth, heads, extra = DEIT_DATA_CONFIGS.get(name) or (*DEIT_CONFIGS[name], {})
    defaults = {"img_size": 224, "patch": 16, "dim": dim, "depth": depth, "heads": heads,
                "mlp_ratio": 4, "num_classes": 1000, "in_chans": 3, "batch": 1,
                "fused_attn": 1, **extra}
    return ModelSpec(
        f"DeiT-{name.removeprefix('deit_')} (timm VisionTransformer: dim {dim}, depth "
        f"{depth}, heads {heads}, patch {defaults['patch']}, "
        f"{defaults['img_size']}x{defaults['img_size']}, {defaults['num_classes']} classes)",
        _deit_factory,
        defaults,
        lambda p: (p["batch"], p["in_chans"], p["img_size"], p["img_size"]),
        _validate_deit,
    )


def _swin_spec(name: str) -> ModelSpec:
    """A Swin: embed_dim, patch, window, image size and classes can be overridden; the depths
    and head counts are the named model's (scaled heads would change the checkpoint shapes)."""
    embed_dim, depths, heads = SWIN_CONFIGS[name]
    d = SWIN_DEFAULTS[name]

    def factory(*, batch: int = 1, img_size: int, patch: int, window: int, embed_dim: int,
                mlp_ratio: int, num_classes: int, in_chans: int) -> torch.nn.Module:
        del batch  # the example input's, not the model's
        return swin(name, img_size=img_size, patch_size=patch, window_size=window,
                    embed_dim=embed_dim, mlp_ratio=mlp_ratio, num_classes=num_classes,
                    in_chans=in_chans)

    def validate(name: str, p: dict[str, int]) -> None:
        check_config(img_size=p["img_size"], patch=p["patch"], window=p["window"],
                     embed_dim=p["embed_dim"], depths=depths, num_heads=heads, name=name)

    return ModelSpec(
        f"Swin-{name.removeprefix('swin_')} (timm SwinTransformer: embed {embed_dim}, depths "
        f"{depths}, heads {heads}, patch {d['patch']}, window {d['window']}, "
        f"{d['img_size']}x{d['img_size']}, {d['num_classes']} classes)",
        factory,
        {**d, "embed_dim": embed_dim, "mlp_ratio": 4, "in_chans": 3, "batch": 1},
        lambda p: (p["batch"], p["in_chans"], p["img_size"], p["img_size"]),
        validate,
    )


MODELS: dict[str, ModelSpec] = {
    "mlp_block": ModelSpec(
        "x + fc2(gelu(fc1(layer_norm(x)))): a ViT block's MLP half (DeiT-tiny sizes)",
        MLPBlock,
        {"dim": 192, "hidden": 768, "tokens": 197, "batch": 1},
        lambda p: (p["batch"], p["tokens"], p["dim"]),
    ),
    **{name: _deit_spec(name) for name in (*DEIT_CONFIGS, *DEIT_DATA_CONFIGS)},
    **{name: _dinov2_spec(name) for name in DINOV2_CONFIGS},
    **{name: _swin_spec(name) for name in SWIN_CONFIGS},
}
DEFAULT_MODEL = "mlp_block"


def parse_overrides(items: list[str]) -> dict[str, int]:
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        try:
            out[key] = int(value)
        except ValueError:
            raise ModelError(f"--set {item}: expected KEY=INTEGER") from None
        if not sep:
            raise ModelError(f"--set {item}: expected KEY=INTEGER")
    return out


def model_params(name: str, overrides: dict[str, int]) -> dict[str, int]:
    """The hyper-parameters of built-in model `name` with `overrides` applied, checked."""
    spec = MODELS.get(name)
    if spec is None:
        raise ModelError(f"unknown model '{name}' (built-in: {', '.join(MODELS)})")
    unknown = set(overrides) - set(spec.defaults)
    if unknown:
        raise ModelError(f"{name} has no parameter {', '.join(sorted(unknown))} "
                         f"(parameters: {', '.join(spec.defaults)})")
    params = {**spec.defaults, **overrides}
    # fused_attn is a 0/1 flag; num_classes = 0 means no head (the features are the output)
    bad = [k for k, v in params.items()
           if v < 1 and k != "fused_attn" and not (k == "num_classes" and v == 0)]
    if bad:
        raise ModelError(f"{name}: {', '.join(bad)} must be positive")
    if spec.validate is not None:
        spec.validate(name, params)
    return params


def build_model(
    name: str,
    overrides: dict[str, int],
    seed: int = 0,
    weights: str | os.PathLike[str] | None = None,
):
    """(module in eval mode with seeded random weights, example input).

    With `weights`, the state_dict in that file (torch.save of a dict of tensors, e.g. a
    timm checkpoint) replaces the random weights; every key must match (ModelError
    naming the missing, unexpected and mis-shaped ones otherwise).
    """
    spec = MODELS.get(name)
    params = model_params(name, overrides)
    assert spec is not None
    accepted = inspect.signature(spec.factory).parameters
    takes_all = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in accepted.values())
    torch.manual_seed(seed)
    try:
        module = spec.factory(
            **{k: v for k, v in params.items() if takes_all or k in accepted}
        ).eval()
    except ValueError as e:
        raise ModelError(f"{name}: {e}") from None
    if weights is not None:
        load_state_dict_file(module, weights, resample_pos_embed=spec.resamples_pos_embed)
    example = torch.randn(spec.input_shape(params), generator=torch.Generator().manual_seed(seed))
    return module, example


def _fmt_keys(keys: list[str], limit: int = 8) -> str:
    shown = ", ".join(keys[:limit])
    return shown + (f", ... ({len(keys)} in all)" if len(keys) > limit else "")


def read_state_dict(path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """The state_dict saved at `path` with torch.save (loaded with weights_only=True).

    A checkpoint that wraps it as {"model": ...} or {"state_dict": ...} (DeiT's released
    checkpoints do) is unwrapped.
    """
    shown = os.fspath(path)
    if not Path(path).is_file():
        raise ModelError(f"weights file not found: {shown}")
    try:
        obj: Any = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # unpickling errors come in many types
        first = str(e).strip().splitlines()
        raise ModelError(
            f"cannot read weights {shown} ({type(e).__name__}: {first[0] if first else ''}); "
            f"expected a state_dict saved with torch.save(model.state_dict(), path)"
        ) from None
    if isinstance(obj, dict) and not any(isinstance(v, torch.Tensor) for v in obj.values()):
        for key in ("model", "state_dict"):
            if isinstance(obj.get(key), dict):
                obj = obj[key]
                break
    if not isinstance(obj, dict) or not obj or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items()
    ):
        raise ModelError(
            f"{shown} does not hold a state_dict (a dict of name -> tensor); save one with "
            f"torch.save(model.state_dict(), path)"
        )
    return obj


def load_state_dict_file(module: torch.nn.Module, path: str | os.PathLike[str],
                         resample_pos_embed: bool = False) -> None:
    """Load the state_dict at `path` into `module` (strict: every key and shape must match,
    except, with `resample_pos_embed`, a ViT position embedding of another square grid)."""
    shown = os.fspath(path)
    state = read_state_dict(path)
    if resample_pos_embed:
        state = _fit_position_embedding(module, state)
    own = module.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    mismatched = [
        f"{k} {list(state[k].shape)} in the file, {list(own[k].shape)} in the model"
        for k in own
        if k in state and tuple(state[k].shape) != tuple(own[k].shape)
    ]
    problems = []
    if missing:
        problems.append(f"missing keys: {_fmt_keys(missing)}")
    if unexpected:
        problems.append(f"unexpected keys: {_fmt_keys(unexpected)}")
    if mismatched:
        problems.append(f"shape mismatch: {_fmt_keys(mismatched, 4)}")
    if problems:
        raise ModelError(f"weights {shown} do not fit the model: " + "; ".join(problems))
    with torch.no_grad():
        module.load_state_dict({k: v.to(own[k].dtype) for k, v in state.items()}, strict=True)


def _fit_position_embedding(module: torch.nn.Module,
                            state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A ViT checkpoint made for another image size (timm's DINOv2 at 518x518) has a
    position embedding of another grid: resample it to the model's grid, as timm does when
    it loads one."""
    pos = state.get("pos_embed")
    if not isinstance(module, DeiT) or pos is None or pos.dim() != 3:
        return state
    if tuple(pos.shape) == tuple(module.pos_embed.shape) or pos.shape[2] != module.dim:
        return state  # already fits, or a shape mismatch the strict check reports
    grid = module.img_size // module.patch
    try:
        return {**state, "pos_embed": resample_pos_embed(pos, grid)}
    except ValueError:
        return state  # not a square grid: the strict check reports the mismatch


def set_training(module: torch.nn.Module, mode: bool) -> None:
    """module.train(mode); the module of an ExportedProgram has no modes (its graph is
    fixed) and refuses the call."""
    try:
        module.train(mode)
    except NotImplementedError:
        pass


def export_to_file(module: torch.nn.Module, example: torch.Tensor, path: str | Path) -> None:
    """torch.export the module on `example` and save it atomically (any file name: .pt
    or .pt2)."""
    set_training(module, False)
    with torch.no_grad():
        program = torch.export.export(module, (example,))
    buf = io.BytesIO()
    torch.export.save(program, buf)
    atomic_write_bytes(path, buf.getvalue())

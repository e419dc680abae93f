"""The int8 reference: a model whose linear layers and patch embedding compute as an int8
accelerator does under nmc's arithmetic contract (docs/INT8.md), with PyTorch integer ops.

    ref = int8_reference(model, scales)        # scales: q.json's "layers" (or calibrate())
    y = ref(x)

Each layer named in `scales` (by module path: `blocks.0.attn.qkv`, `patch_embed.proj`)
becomes an `Int8Linear` / `Int8Conv` that
- quantises its input per tensor: q = clamp(round_half_even(x * fp32(1 / s_x)), -128, 127),
  the product in fp32;
- quantises its weight per output channel (the weight as it is: mask an N:M model with
  `apply_nm` first): q = clamp(round_half_even(w / s_w), -127, 127);
- multiplies exactly in int64 (an int32 accumulator never overflows at these sizes), adds
  the bias as int32 round_half_even(b / fp32(s_x * s_w)) (computed in float64), and
  rescales: fp32(acc) * fp32(s_x * s_w).
Everything else (LayerNorm, attention, softmax, GELU, residuals, an unlisted head) runs
in fp32 as in the model. This is written independently of the compiler's implementation
(nmc.common.quant, the kernels, the emulator); the tests compare them bit for bit.
"""

from __future__ import annotations

import copy
from typing import Mapping

import torch
import torch.nn.functional as F
from torch import nn

# how calibration chooses a clip is shared with the compiler (calibration, not arithmetic)
from nmc.common.observer import parse_observer

_I32_MIN, _I32_MAX = -(2 ** 31), 2 ** 31 - 1


def _positive(scale: torch.Tensor) -> torch.Tensor:
    return torch.where(scale > 0, scale, torch.ones_like(scale))


def weight_scales(weight: torch.Tensor) -> torch.Tensor:
    """fp32 max|w| / 127 per output channel (1 for a zero row)."""
    w = weight.detach().float().reshape(weight.shape[0], -1)
    return _positive(w.abs().amax(dim=1) / torch.tensor(127.0))


def input_scale(max_abs: float) -> float:
    """fp32(max|x| / 127) (1 for an all-zero input)."""
    s = torch.tensor(max_abs, dtype=torch.float32) / torch.tensor(127.0)
    return float(_positive(s))


class _Int8Matmul(nn.Module):
    """y = rescale(q(x) . q(W)^T + q(b)) for x [..., K] and W [N, K] (module docstring)."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None, s_x: float,
                 s_w: torch.Tensor):
        super().__init__()
        s_w = torch.as_tensor(s_w, dtype=torch.float32)
        w = weight.detach().float().reshape(weight.shape[0], -1)
        self.inv_s_x = torch.tensor(1.0) / torch.tensor(s_x, dtype=torch.float32)
        self.register_buffer("q_weight", torch.clamp(torch.round(w / s_w[:, None]), -127, 127)
                             .to(torch.int64))
        self.scale = torch.tensor(s_x, dtype=torch.float32) * s_w  # fp32(s_x * s_w)
        if bias is None:
            self.q_bias = torch.zeros(len(s_w), dtype=torch.int64)
        else:
            b = torch.round(bias.detach().double() / self.scale.double())
            self.q_bias = torch.clamp(b, _I32_MIN, _I32_MAX).to(torch.int64)

    def matmul(self, x: torch.Tensor) -> torch.Tensor:
        q = torch.clamp(torch.round(x.float() * self.inv_s_x), -128, 127).to(torch.int64)
        acc = q @ self.q_weight.T + self.q_bias
        return acc.to(torch.int32).to(torch.float32) * self.scale


class Int8Linear(_Int8Matmul):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.matmul(x)


class Int8Conv(_Int8Matmul):
    """A stride = kernel = p convolution (patch embedding) as im2col + the int8 matmul."""

    def __init__(self, conv: nn.Conv2d, s_x: float, s_w: torch.Tensor):
        super().__init__(conv.weight, conv.bias, s_x, s_w)
        self.patch = conv.kernel_size[0]
        self.out_channels = conv.out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, _, H, W = x.shape
        p = self.patch
        cols = F.unfold(x, p, stride=p).transpose(1, 2)  # [B, L, Cin*p*p], (c, i, j) order
        y = self.matmul(cols)  # [B, L, D]
        return y.transpose(1, 2).reshape(B, self.out_channels, H // p, W // p)


def int8_reference(model: nn.Module, scales: Mapping[str, Mapping]) -> nn.Module:
    """A copy of `model` with the layers of `scales` ({module path: {"input_scale": s_x,
    "weight_scales": [s_w] (optional: computed from the weight)}}) in int8."""
    ref = copy.deepcopy(model).eval()
    for name, entry in scales.items():
        layer = ref.get_submodule(name)
        s_w = entry.get("weight_scales")
        s_w = weight_scales(layer.weight) if s_w is None else torch.tensor(s_w)
        if isinstance(layer, nn.Linear):
            new = Int8Linear(layer.weight, layer.bias, float(entry["input_scale"]), s_w)
        elif isinstance(layer, nn.Conv2d):
            new = Int8Conv(layer, float(entry["input_scale"]), s_w)
        else:
            raise TypeError(f"{name}: {type(layer).__name__} has no int8 form")
        parent_name, _, child = name.rpartition(".")
        parent = ref.get_submodule(parent_name) if parent_name else ref
        setattr(parent, child, new)
    return ref


def int8_layers(model: nn.Module) -> list[str]:
    """The layers an int8 target computes in int8: linears and convolutions whose
    reduction and output sizes are multiples of 4."""
    out = []
    for name, layer in model.named_modules():
        if isinstance(layer, (nn.Linear, nn.Conv2d)):
            w = layer.weight
            if w.shape[0] % 4 == 0 and w[0].numel() % 4 == 0:
                out.append(name)
    return out


def calibrate(model: nn.Module, inputs: list[torch.Tensor], layers: list[str],
              observer: str = "max") -> dict:
    """{layer: {"input_scale": s_x}}: the clip `observer` chooses from |input| of each
    layer over `inputs` (max |x| by default; nmc.common.observer), / 127."""
    obs = parse_observer(observer)
    seen = {name: obs.collector() for name in layers}
    hooks = []
    for name in layers:
        def hook(module, args, name=name):
            seen[name].update(args[0].detach().float().numpy())
        hooks.append(model.get_submodule(name).register_forward_pre_hook(hook))
    try:
        with torch.no_grad():
            for x in inputs:
                model(x)
    finally:
        for h in hooks:
            h.remove()
    return {name: {"input_scale": input_scale(h.clip(obs))} for name, h in seen.items()}

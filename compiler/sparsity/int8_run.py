"""The sensitivity's model run as an int8 target computes it (docs/INT8.md): on an int8
target the ELSA search measures the error of each (layer, pattern) on the quantized model.

`Int8Layers` names the layers that run in int8 (by weight parameter, as the quantize pass
chooses them) with their scales: the input's (per tensor: from the model when it carries
its own, a PT2E model, else calibrated here as the quantize pass does, max |x| / 127 over
the calibration inputs of the fp32 model) and the weight's (per output channel: from the
model, else computed from the weight as the run sees it, i.e. N:M-masked for a masked run,
as the compiler quantises a sparse layer). `Int8Run` is a `torch.fx.Interpreter` whose
int8 layers (`aten.linear`, and `aten.conv2d` patch embeddings, whose weight is a
`get_attr`) compute with the contract of nmc.common.quant: input quantised with the fp32
reciprocal, weights per channel, exact integer products (summed in float64, exact below
2^53), bias as int32, the sum converted to fp32 and rescaled.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from nmc.common import quant
from nmc.common.observer import AbsHistogram

_LINEAR = torch.ops.aten.linear.default
_CONV2D = torch.ops.aten.conv2d.default


@dataclass
class Int8Layers:
    """{weight parameter: input scale (None: calibrate)} and the weight scales a model
    gives ({weight parameter: [s_w]}; others are computed from the weight)."""

    input_scales: dict[str, float | None]
    weight_scales: dict[str, list[float]] = field(default_factory=dict)

    def layer_of(self, node: torch.fx.Node) -> str | None:
        """The weight parameter of an int8 layer node, None for any other node."""
        if node.op != "call_function" or node.target not in (_LINEAR, _CONV2D):
            return None
        weight = node.args[1] if len(node.args) > 1 else None
        if isinstance(weight, torch.fx.Node) and weight.op == "get_attr" \
                and weight.target in self.input_scales:
            return weight.target
        return None

    def calibrated(self, clips: dict[str, float]) -> Int8Layers:
        """These layers with every missing input scale from `clips` (the |x| each layer's
        range ends at, as the calibration's observer chose it)."""
        return Int8Layers({p: s if s is not None else quant.input_scale(clips.get(p, 0.0))
                           for p, s in self.input_scales.items()}, self.weight_scales)

    def compute(self, param: str, x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None,
                conv_args: tuple | None = None) -> torch.Tensor:
        """The layer of weight `param` in int8 (module docstring); `conv_args` (stride,
        padding, ...) for a convolution, None for a linear."""
        s_x = self.input_scales[param]
        w_np = w.detach().float().numpy()
        given = self.weight_scales.get(param)
        s_w = np.asarray(given, np.float32) if given is not None else quant.weight_scales(w_np)
        q_w = torch.from_numpy(quant.quantize_weight(w_np, s_w).astype(np.float64))
        q_x = torch.clamp(torch.round(x.float() * torch.from_numpy(
            np.asarray(quant.inverse_scale(s_x)))), quant.QMIN_ACT, quant.QMAX_ACT).double()
        combined = quant.combined_scales(s_x, s_w)
        bias = torch.from_numpy(quant.bias_int32(
            None if b is None else b.detach().float().numpy(), combined).astype(np.float64))
        if conv_args is not None:  # [B, C, H, W]: the channel is dim 1
            acc = F.conv2d(q_x, q_w.reshape(w.shape), None, *conv_args)
            shape = (1, -1, 1, 1)
        else:
            acc = F.linear(q_x, q_w)
            shape = (-1,)
        return (acc + bias.reshape(shape)).float() * torch.from_numpy(combined).reshape(shape)


class Int8Run(torch.fx.Interpreter):
    """A run of the module with `layers` in int8; `seen` (when given: a collector per
    layer, `Observer.collector`) records instead |input| of each of them, computed in fp32
    (the calibration run)."""

    def __init__(self, module: torch.fx.GraphModule, layers: Int8Layers,
                 seen: dict[str, AbsHistogram] | None = None, **kwargs):
        super().__init__(module, **kwargs)
        self.layers, self.seen = layers, seen

    def run_node(self, n: torch.fx.Node):
        param = self.layers.layer_of(n)
        if param is None:
            return super().run_node(n)
        args, _ = self.fetch_args_kwargs_from_env(n)
        x, w = args[0], args[1]
        if self.seen is not None:
            self.seen[param].update(x.detach().float().numpy())
            return super().run_node(n)
        b = args[2] if len(args) > 2 else None
        return self.layers.compute(param, x, w, b, tuple(args[3:]) if n.target == _CONV2D
                                   else None)

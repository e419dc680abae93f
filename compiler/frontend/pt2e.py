"""PT2E-quantized models in: the int8 scales of a torchao `convert_pt2e` graph.

A model quantized with PyTorch's PT2E flow (torchao 0.18: `prepare_pt2e`, calibration,
`convert_pt2e`, then `torch.export.save`) computes every quantized linear and convolution
in fp32 on dequantized values, with the quantization written around it as
`quantized_decomposed` ops (torch/ao/quantization/fx/_decomposed.py):

    xq = quantize_per_tensor(x, s_x, 0, -128, 127, int8)
    xd = dequantize_per_tensor(xq, s_x, 0, -128, 127, int8)
    wd = dequantize_per_channel(w_int8, s_w, zero_points, 0, -127, 127, int8)
    y  = linear(xd, wd, b)          # or conv2d: a patch embedding
    yq = quantize_per_tensor(y, s_y, ...) ...   # the consumer's own q/dq

`read_pt2e` turns that into what nmc's int8 target computes (docs/INT8.md), before the
rest of the frontend sees the graph:

- each linear / convolution whose weight is a dequantized int8 constant becomes an fp32
  layer on the dequantized weight (PyTorch's own value, fp32(q * s_w), a new constant named
  `<module path>.weight`, from which the contract's quantisation gives back q exactly), and
  its scales (s_x of its input, s_w per output channel) are recorded, keyed by that weight
  name, in `ep.graph_module.meta[SCALES]`; the importer writes them into the IR as the
  module attribute `nm.model_scales`, which the quantize pass reads as it reads a
  `--quant` file (one home for the int8 arithmetic);
- every other quantize -> dequantize pair (a layer's output, a residual add, a concat) is
  dropped: nmc computes those values in fp32 (docs/INT8.md, "PT2E models");
- a dequantized constant read by another op (a class token) is left to constant folding.

What nmc's int8 matmul cannot run is one error naming the layer: asymmetric weights or
activations (a nonzero zero point), uint8 activations (X86InductorQuantizer's scheme),
per-channel or dynamically quantized activations, int8 weights on an fp32 input, weights
reaching -128 (the contract's weights are in [-127, 127]).
"""

from __future__ import annotations

import torch
from torch.export import ExportedProgram

from nmc.common import quant
from nmc.compiler.errors import FrontendError
from nmc.compiler.frontend.lifted import (
    drop_input, fake_mode, lift_constant, module_path, placeholder_tensors,
)

SCALES = "nm.pt2e_scales"
"""`ep.graph_module.meta` key: {weight name: (input scale, [weight scale per channel])}."""

_SCALAR_OPS = ("aten.mul.Tensor", "aten.div.Tensor")
_LAYERS = ("aten.linear.default", "aten.conv2d.default", "aten.convolution.default")
_HOWTO = ("nmc's int8 matmul takes int8 activations per tensor with zero point 0 and int8 "
          "weights per output channel with zero point 0 (torchao's XNNPACK-style "
          "symmetric config, activations with qscheme=torch.per_tensor_symmetric)")


def ensure_ops_registered() -> None:
    """Register the `quantized_decomposed` ops: a saved PT2E program loads only then."""
    import torch.ao.quantization.fx._decomposed  # noqa: F401


def _qd(node: object, *names: str) -> bool:
    """Whether `node` calls one of the quantized_decomposed ops `names` (any overload)."""
    return (isinstance(node, torch.fx.Node) and node.op == "call_function"
            and str(node.target).split(".")[:2] in [["quantized_decomposed", n] for n in names])


class _Layer:
    """One linear / convolution of the graph and the error messages about it."""

    def __init__(self, node: torch.fx.Node, shown: str):
        self.node, self.shown = node, shown
        self.name = module_path(node) or node.name

    def error(self, what: str) -> FrontendError:
        return FrontendError(f"{self.shown}: PT2E-quantized layer '{self.name}': {what}; "
                             f"{_HOWTO}")


def _weight(layer: _Layer, dq: torch.fx.Node, values: dict[str, torch.Tensor]):
    """(fp32 dequantized weight, per-channel scales) of a dequantized int8 weight."""
    if any(isinstance(a, torch.fx.Node) and a.name not in values for a in dq.args):
        raise layer.error("its weight is quantized at run time, not a constant")
    args = [values[a.name] if isinstance(a, torch.fx.Node) else a for a in dq.args]
    q, scale = args[0], args[1]
    channels = q.shape[0]
    if _qd(dq, "dequantize_per_channel"):
        zero, axis, dtype = args[2], args[3], args[6]
        if axis != 0:
            raise layer.error(f"weight scales along axis {axis}, not per output channel")
    else:  # per tensor: one scale for every channel
        zero, dtype = args[2], args[5]
    if dtype != torch.int8 or q.dtype != torch.int8:
        raise layer.error(f"{dtype} weights")
    zeros = torch.as_tensor(0 if zero is None else zero).reshape(-1)
    if bool((zeros != 0).any()):
        c = int(torch.nonzero(zeros)[0]) if len(zeros) > 1 else 0
        raise layer.error(f"asymmetric weights (zero point {int(zeros[c])}"
                          f"{f' in output channel {c}' if len(zeros) > 1 else ''})")
    if int(q.min()) < -quant.QMAX_WEIGHT:
        raise layer.error(f"weight values reach {int(q.min())} (quant_min=-128); the "
                          f"contract's weights are in [-127, 127]")
    scales = torch.as_tensor(scale, dtype=torch.float32).reshape(-1).expand(channels)
    bad = [float(s) for s in scales if not quant.check_scale(float(s))]
    if bad:
        raise layer.error(f"weight scale {bad[0]} is not a finite positive number")
    fp32 = dq.target(*args, **dq.kwargs)  # PyTorch's own dequantized weight
    return fp32, [float(s) for s in scales]


def _input_scale(layer: _Layer) -> float:
    """s_x of the layer's input: it must be dequantize_per_tensor(quantize_per_tensor(x))."""
    dq = layer.node.args[0]
    if _qd(dq, "dequantize_per_channel", "dequantize_per_token"):
        raise layer.error("per-channel activations")
    if not _qd(dq, "dequantize_per_tensor") or not _qd(dq.args[0], "quantize_per_tensor"):
        raise layer.error("int8 weights on an fp32 input (weight-only or dynamic "
                          "quantization)")
    params = dq.args[1:6]
    if any(isinstance(a, torch.fx.Node) for a in params):
        raise layer.error("dynamically quantized activations (scale computed at run time)")
    scale, zero, qmin, qmax, dtype = params
    if dtype != torch.int8:
        made = "; X86InductorQuantizer's scheme" if dtype == torch.uint8 else ""
        raise layer.error(f"{str(dtype).removeprefix('torch.')} activations (zero point "
                          f"{zero}{made})")
    if zero != 0:
        raise layer.error(f"asymmetric activations (zero point {zero})")
    if (qmin, qmax) != (quant.QMIN_ACT, quant.QMAX_ACT):
        raise layer.error(f"activation range [{qmin}, {qmax}], not [-128, 127]")
    if not quant.check_scale(float(scale)):
        raise layer.error(f"input scale {scale} is not a finite positive number")
    return float(scale)


def _weight_key(ep: ExportedProgram, layer: _Layer) -> str:
    """`<module path>.weight` for the dequantized weight; an unused input of that name
    (convert_pt2e leaves the float weight in the signature) makes room for it."""
    key = f"{module_path(layer.node) or layer.node.name}.weight"
    for spec in list(ep.graph_signature.input_specs):
        if spec.target == key:
            node = next(n for n in ep.graph_module.graph.nodes if n.name == spec.arg.name)
            if node.users:
                return f"{key}_int8"  # the float weight is read elsewhere: keep both
            drop_input(ep, node)
    return key


def _scalars_back(graph: torch.fx.Graph, values: dict[str, torch.Tensor]) -> set:
    """convert_pt2e lifts a Python scalar operand (timm's `q * self.scale`) into a 0-d
    tensor buffer (`_tensor_constant_0`); put the number back, as the float model has it
    (the same fp32 arithmetic), so that the patterns that read a constant factor match.
    Returns the placeholders replaced."""
    done = set()
    for node in graph.nodes:
        if node.op != "call_function" or str(node.target) not in _SCALAR_OPS:
            continue
        for arg in node.args[1:]:
            value = values.get(arg.name) if isinstance(arg, torch.fx.Node) else None
            if (arg is not None and arg.op == "placeholder" and value is not None
                    and value.dim() == 0 and value.dtype == torch.float32):
                node.replace_input_with(arg, float(value))
                done.add(arg)
    return done


def read_pt2e(ep: ExportedProgram, shown: str = "<model>") -> ExportedProgram:
    """`ep` with its PT2E quantization read (module docstring); in place, returned for
    chaining; `shown`: the model file, in errors. A program without `quantized_decomposed`
    ops is returned unchanged."""
    graph = ep.graph_module.graph
    if not any(_qd(n, "quantize_per_tensor", "dequantize_per_tensor",
                   "dequantize_per_channel") for n in graph.nodes):
        return ep
    values, mode = placeholder_tensors(ep), fake_mode(ep)
    scales: dict[str, tuple[float, list[float]]] = {}
    replaced: set[torch.fx.Node] = set()  # the int8 weights, scales and zero points read
    for node in list(graph.nodes):
        if node.op != "call_function" or str(node.target) not in _LAYERS:
            continue
        dq = node.args[1]
        if not _qd(dq, "dequantize_per_channel", "dequantize_per_tensor"):
            continue  # an fp32 layer: its input's q/dq, if any, is dropped below
        layer = _Layer(node, shown)
        s_x = _input_scale(layer)
        fp32, s_w = _weight(layer, dq, values)
        key = _weight_key(ep, layer)
        weight, _ = lift_constant(ep, dq, fp32, mode, key=key)
        node.replace_input_with(dq, weight)
        replaced.update(a for a in dq.args if isinstance(a, torch.fx.Node))
        scales[key] = (s_x, s_w)
    for node in list(graph.nodes):  # fake quantization of fp32 values: computed in fp32
        if _qd(node, "dequantize_per_tensor") and _qd(node.args[0], "quantize_per_tensor"):
            node.replace_all_uses_with(node.args[0].args[0])
    replaced.update(_scalars_back(graph, values))
    graph.eliminate_dead_code()
    for ph in replaced:
        if not ph.users:  # now held as the fp32 weight and the recorded scales
            drop_input(ep, ph)
    graph.lint()
    ep.graph_module.recompile()
    ep.graph_module.meta[SCALES] = scales
    return ep


def pt2e_scales(ep: ExportedProgram) -> dict[str, tuple[float, list[float]]]:
    """The scales `read_pt2e` found ({} for a model that is not PT2E-quantized)."""
    return dict(ep.graph_module.meta.get(SCALES, {}))

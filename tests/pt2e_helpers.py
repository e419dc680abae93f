"""Models quantized with torchao's PT2E flow (prepare_pt2e, calibration, convert_pt2e),
re-exported and saved as nmc's users would: the inputs of the PT2E tests."""

from __future__ import annotations

import dataclasses
import warnings

import pytest
import torch

pytest.importorskip("torchao")  # the `test` extra pins torchao==0.18.0

from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e  # noqa: E402
from torchao.quantization.pt2e.quantizer import (  # noqa: E402
    QuantizationAnnotation, QuantizationConfig, Quantizer,
)
from torchao.testing.pt2e._xnnpack_quantizer import (  # noqa: E402
    XNNPACKQuantizer, get_symmetric_quantization_config,
)


class MatmulQuantizer(XNNPACKQuantizer):
    """torchao's XNNPACK-style quantizer on the ops nmc's int8 target computes in int8
    (linear and the patch embedding's convolution); adds, concats and muls stay fp32."""

    STATIC_OPS = ["linear", "conv"]


class LinearQuantizer(Quantizer):
    """Every aten.linear's input and weight quantized with the given specs, which
    torchao's own quantizers would refuse (asymmetric weights): the bad inputs nmc must
    refuse."""

    def __init__(self, config: QuantizationConfig):
        super().__init__()
        self.config = config

    def annotate(self, model):
        for node in model.graph.nodes:
            if node.op == "call_function" and node.target == torch.ops.aten.linear.default:
                node.meta["quantization_annotation"] = QuantizationAnnotation(
                    input_qspec_map={node.args[0]: self.config.input_activation,
                                     node.args[1]: self.config.weight}, _annotated=True)
        return model

    def validate(self, model) -> None:
        pass


def symmetric_config(**activation: object) -> QuantizationConfig:
    """Per-channel symmetric int8 weights, per-tensor symmetric int8 activations entering
    the layer (what nmc's int8 matmul runs), no quantization of the layer's output;
    `activation` replaces fields of the activations' spec (e.g. a zero point)."""
    base = get_symmetric_quantization_config(is_per_channel=True)
    act = dataclasses.replace(base.input_activation, qscheme=torch.per_tensor_symmetric)
    act = dataclasses.replace(act, **activation)
    return QuantizationConfig(act, None, base.weight, base.bias, base.is_qat)


def quantize_and_save(module, example, path, quantizer=None, calib=None):
    """PT2E-quantize `module` (calibrated on `calib`, default 4 seeded random inputs),
    re-export the converted model and save it to `path`."""
    if quantizer is None:
        quantizer = MatmulQuantizer().set_global(symmetric_config())
    if calib is None:
        calib = [torch.randn(example.shape, generator=torch.Generator().manual_seed(100 + i))
                 for i in range(4)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        graph = torch.export.export(module, (example,)).module()
        prepared = prepare_pt2e(graph, quantizer)
        with torch.no_grad():
            for x in calib:
                prepared(x)
        converted = convert_pt2e(prepared)
        torch.export.save(torch.export.export(converted, (example,)), path)
    return path


def load_pt2e(path):
    """The saved PT2E program as PyTorch runs it (its q/dq graph): the reference."""
    import torch.ao.quantization.fx._decomposed  # noqa: F401  (registers the q/dq ops)

    return torch.export.load(path)

"""PT2E-quantized models in (docs/INT8.md, "PT2E models"): a model quantized with
torchao's PT2E flow compiles for sta_int8 with the scales in its graph, and runs as PyTorch
runs the same q/dq graph; the schemes nmc's int8 matmul cannot run are one error naming
the layer."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch
from torch import nn

from pt2e_helpers import LinearQuantizer, MatmulQuantizer, load_pt2e, quantize_and_save, symmetric_config
from robust_helpers import cli, expect_error
from nmc.compiler.driver import import_nm
from nmc.compiler.transforms.assign_sparsity import int8_layers
from nmc.models.int8 import int8_reference
from nmc.models.registry import build_model

DEIT = {"img_size": 32, "patch": 8, "dim": 64, "depth": 2, "heads": 2, "num_classes": 12,
        "fused_attn": 0}


def graph_scales(ep) -> tuple[dict, dict]:
    """({layer: {"input_scale", "weight_scales"}}, {layer.weight: dequantized weight}) read
    straight from the PT2E graph: dequantize_per_channel(w, s_w, ...) -> linear/conv <-
    dequantize_per_tensor(quantize_per_tensor(x, s_x, ...))."""
    tensors = {**ep.state_dict, **ep.constants}
    by_arg = {s.arg.name: tensors.get(s.target) for s in ep.graph_signature.input_specs}
    scales, weights = {}, {}
    for node in ep.graph.nodes:
        if node.op != "call_function" or node.target not in (
                torch.ops.aten.linear.default, torch.ops.aten.conv2d.default):
            continue
        dq_x, dq_w = node.args[0], node.args[1]
        layer = list(node.meta["nn_module_stack"].values())[-1][0]
        args = [by_arg[a.name] if isinstance(a, torch.fx.Node) else a for a in dq_w.args]
        weights[f"{layer}.weight"] = dq_w.target(*args)
        scales[layer] = {"input_scale": dq_x.args[1],
                         "weight_scales": [float(s) for s in args[1]]}
    return scales, weights


def test_pt2e_deit_compiles_and_runs_as_its_qdq_graph(capsys, tmp_path):
    module, example = build_model("deit_tiny", DEIT, seed=0)
    path = quantize_and_save(module, example, tmp_path / "q.pt2")
    rc, _, err = cli(capsys, "compile", path, "--target", "sta_int8", "-o",
                     tmp_path / "p.bin", "--quant-out", tmp_path / "q.json", "-q")
    assert rc == 0, err
    ep = load_pt2e(path)
    scales, weights = graph_scales(ep)
    assert len(scales) == 2 + 4 * DEIT["depth"]  # patch embedding, 4 per block, head
    assert json.loads((tmp_path / "q.json").read_text())["layers"] == scales
    # an ELSA search measures on the same int8 model: the graph's scales
    int8 = int8_layers(import_nm(path))
    assert {k.removesuffix(".weight"): v for k, v in int8.input_scales.items()} == \
        {k: v["input_scale"] for k, v in scales.items()}

    # the int8 reference (the contract) on the graph's own weights and scales: bit for bit
    model = build_model("deit_tiny", DEIT, seed=0)[0]
    model.load_state_dict({**model.state_dict(), **weights})
    reference = int8_reference(model, scales)
    for seed in range(4):
        x = torch.randn(example.shape, generator=torch.Generator().manual_seed(seed))
        np.save(tmp_path / "x.npy", x.numpy())
        rc, _, err = cli(capsys, "run", tmp_path / "p.bin", "-i", tmp_path / "x.npy",
                         "-o", tmp_path / "y.npy", "-q")
        assert rc == 0, err
        got = np.load(tmp_path / "y.npy")
        with torch.no_grad():
            np.testing.assert_array_equal(got, reference(x).numpy())
            qdq, fp32 = ep.module()(x).numpy(), module(x).numpy()
        # PyTorch's q/dq graph adds the fp32 bias after the fp32 product where nmc adds it
        # as int32 (docs/INT8.md): one step of the head's input quantization, carried
        # through the head (s_x * sum |w|), bounds the difference
        head = torch.as_tensor(weights["head.weight"])
        step = scales["head"]["input_scale"] * head.abs().sum(dim=1).numpy()
        diff = np.abs(got - qdq)
        with capsys.disabled():
            print(f"\nseed {seed}: nmc vs PT2E graph {diff.max():.2e} ({(diff / step).max():.2f}"
                  f" steps); PT2E vs fp32 {np.abs(qdq - fp32).max():.2e}")
        assert (diff <= step).all()


class TwoLayers(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(16, 32), nn.Linear(32, 16)

    def forward(self, x):
        return self.fc2(torch.relu(self.fc1(x)))


def _x86():
    from torchao.quantization.pt2e.quantizer.x86_inductor_quantizer import (
        X86InductorQuantizer, get_default_x86_inductor_quantization_config,
    )

    return X86InductorQuantizer().set_global(get_default_x86_inductor_quantization_config())


def _asymmetric_weights():
    config = symmetric_config()
    weight = dataclasses.replace(config.weight, qscheme=torch.per_channel_affine,
                                 quant_min=-128)
    return LinearQuantizer(dataclasses.replace(config, weight=weight))


def _per_channel_activations():
    from torchao.quantization.pt2e.observer import PerChannelMinMaxObserver

    return LinearQuantizer(symmetric_config(
        qscheme=torch.per_channel_symmetric, ch_axis=2,
        observer_or_fake_quant_ctr=PerChannelMinMaxObserver.with_args(ch_axis=2)))


@pytest.mark.parametrize("quantizer,fragments", [
    (lambda: MatmulQuantizer().set_global(symmetric_config(qscheme=torch.per_tensor_affine)),
     ["asymmetric activations (zero point"]),
    (_asymmetric_weights, ["asymmetric weights (zero point"]),
    (_x86, ["uint8 activations", "X86InductorQuantizer"]),
    (_per_channel_activations, ["per-channel activations"]),
], ids=["asymmetric-activations", "asymmetric-weights", "x86-uint8", "per-channel-act"])
def test_unsupported_schemes_are_one_error_naming_the_layer(capsys, tmp_path, quantizer,
                                                            fragments):
    torch.manual_seed(0)
    module = TwoLayers().eval()
    example = torch.randn(1, 8, 16)
    calib = [torch.rand(1, 8, 16, generator=torch.Generator().manual_seed(i)) + 0.5
             for i in range(2)]  # all positive: an affine observer moves the zero point
    path = quantize_and_save(module, example, tmp_path / "q.pt2", quantizer(), calib)
    expect_error(capsys, ["compile", path, "--target", "sta_int8", "-o", tmp_path / "p.bin"],
                 "PT2E-quantized layer 'fc1'", *fragments)
    assert not (tmp_path / "p.bin").exists()


def test_scales_file_on_a_pt2e_model_is_refused(capsys, tmp_path):
    torch.manual_seed(0)
    path = quantize_and_save(TwoLayers().eval(), torch.randn(1, 8, 16), tmp_path / "q.pt2")
    (tmp_path / "q.json").write_text('{"layers": {}}')
    expect_error(capsys, ["compile", path, "--target", "sta_int8", "--quant",
                          tmp_path / "q.json", "-o", tmp_path / "p.bin"],
                 "--quant", "its own int8 scales")
    assert not (tmp_path / "p.bin").exists()

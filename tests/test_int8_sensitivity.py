"""The ELSA sensitivity on an int8 target (issue 16, "ELSA and SparseViT on int8"): the
error of a (layer, pattern) choice is measured on the quantized model, the contract of
docs/INT8.md, not on fp32. Checked against the int8 PyTorch reference (models/int8.py:
`int8_reference` of the `apply_nm`-masked model, scales from `calibrate` on the same
calibration inputs, the weight scales of the masked weight, as the compiler quantises a
sparse layer)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from robust_helpers import cli
from nmc.compiler.driver import import_nm
from nmc.compiler.frontend.weights import WeightStore
from nmc.compiler.sparsity.sensitivity import Sensitivity
from nmc.compiler.transforms.assign_sparsity import int8_layers
from nmc.models.int8 import calibrate, int8_layers as reference_layers, int8_reference
from nmc.models.nm_sparsity import apply_nm
from nmc.models.registry import build_model, export_to_file

TINY = {"img_size": 32, "patch": 8, "dim": 64, "depth": 2, "heads": 2, "num_classes": 12,
        "fused_attn": 0}


@pytest.fixture(scope="module")
def deit(tmp_path_factory):
    d = tmp_path_factory.mktemp("int8_elsa")
    module, example = build_model("deit_tiny", TINY, seed=0)
    export_to_file(module, example, d / "deit.pt")
    calib = torch.randn((3, *example.shape), generator=torch.Generator().manual_seed(7))
    np.save(d / "calib.npy", calib.numpy())
    return d, module, [c for c in calib]


def _error(model, reference, inputs) -> float:
    """||model(x) - reference(x)|| / ||reference(x)|| over all inputs (Frobenius)."""
    with torch.no_grad():
        got, want = [model(x) for x in inputs], [reference(x) for x in inputs]
    diff = sum(float(((a.double() - b.double()) ** 2).sum()) for a, b in zip(got, want))
    return (diff / sum(float((b.double() ** 2).sum()) for b in want)) ** 0.5


@pytest.mark.parametrize("layer,pattern", [("blocks.0.mlp.fc1", (2, 4)),
                                           ("blocks.1.attn.qkv", (1, 8)),
                                           ("blocks.1.mlp.fc2", (1, 4))])
def test_int8_errors_are_those_of_the_quantized_model(deit, layer, pattern):
    d, module, inputs = deit
    store = WeightStore.from_file(d / "deit.pt")
    int8 = int8_layers(import_nm(d / "deit.pt"))
    assert sorted(p.removesuffix(".weight") for p in int8.input_scales) == \
        sorted(reference_layers(module))  # the same layers are int8
    sens8 = Sensitivity(store, str(d / "calib.npy"), tuple(inputs[0].shape), int8)
    scales = calibrate(module, inputs, reference_layers(module))
    want = _error(int8_reference(apply_nm(module, {layer: pattern}), scales),
                  int8_reference(module, scales), inputs)
    param = f"{layer}.weight"
    assert sens8.error(param, pattern) == pytest.approx(want, rel=1e-5)
    # one sparse pattern: it is the probe, measured exactly
    assert sens8.errors(param, [None, pattern]) == [0.0, pytest.approx(want, rel=1e-5)]
    fp32 = Sensitivity(store, str(d / "calib.npy"), tuple(inputs[0].shape)).error(param,
                                                                                 pattern)
    print(f"\n{layer} {pattern}: int8 {want:.5f}, fp32 {fp32:.5f}")
    assert fp32 != pytest.approx(want, rel=1e-4)  # not the fp32 model's error


def test_elsa_on_an_int8_target_compiles(capsys, deit, tmp_path):
    d, _, _ = deit
    rc, out, err = cli(capsys, "compile", d / "deit.pt", "--target", "sta_int8", "--calib",
                       d / "calib.npy", "--sparsity", "elsa:speedup=1.3", "--sparsity-out",
                       tmp_path / "s.json", "-o", tmp_path / "p.bin", "-q")
    assert rc == 0, err
    assert (tmp_path / "p.bin").is_file() and (tmp_path / "s.json").is_file()


def _scales_file(d, module, inputs, factor: float) -> tuple[dict, str]:
    """A --quant file: the calibrated input scales times `factor`, no weight scales (the
    program then takes them from each masked weight, as the sensitivity does)."""
    import json

    scales = {k: {"input_scale": v["input_scale"] * factor}
              for k, v in calibrate(module, inputs, reference_layers(module)).items()}
    path = d / f"q{factor}.json"
    path.write_text(json.dumps({"layers": scales}))
    return scales, str(path)


def test_int8_errors_use_the_scales_of_the_quant_file(deit):
    """With --quant q.json the sensitivity measures the model the program computes: the
    file's input scales, not its own calibration."""
    d, module, inputs = deit
    store = WeightStore.from_file(d / "deit.pt")
    scales, path = _scales_file(d, module, inputs, 3.0)
    int8 = int8_layers(import_nm(d / "deit.pt"), path)
    sens = Sensitivity(store, str(d / "calib.npy"), tuple(inputs[0].shape), int8)
    layer, pattern = "blocks.0.mlp.fc1", (2, 4)
    want = _error(int8_reference(apply_nm(module, {layer: pattern}), scales),
                  int8_reference(module, scales), inputs)
    assert sens.error(f"{layer}.weight", pattern) == pytest.approx(want, rel=1e-5)
    own = Sensitivity(store, str(d / "calib.npy"), tuple(inputs[0].shape),
                      int8_layers(import_nm(d / "deit.pt")))
    assert own.error(f"{layer}.weight", pattern) != pytest.approx(want, rel=1e-3)


def test_elsa_with_a_quant_file_reports_its_errors(capsys, deit, tmp_path):
    d, module, inputs = deit
    _, same = _scales_file(d, module, inputs, 1.0)
    _, coarse = _scales_file(d, module, inputs, 3.0)

    def predicted(*quant) -> str:
        rc, out, err = cli(capsys, "compile", d / "deit.pt", "--target", "sta_int8",
                           "--calib", d / "calib.npy", "--sparsity", "elsa:speedup=1.3",
                           *quant, "-o", tmp_path / "p.bin")
        assert rc == 0, err
        return out.split("predicted error")[1].split()[0]

    own = predicted()
    assert predicted("--quant", same) == own  # the file holds the sensitivity's own scales
    assert predicted("--quant", coarse) != own
    assert predicted("--calib-observer", "mse") != own  # it calibrates as the program does

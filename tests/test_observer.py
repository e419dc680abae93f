"""Calibration observers (nmc.common.observer): the histogram against the raw values it
summarises (numpy's percentile, a brute-force squared error), and `--calib-observer`
end to end: the program equals the int8 reference given the scales it wrote, bit for bit,
and those scales are what the reference's own calibration with the same observer picks."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from nmc.common.observer import AbsHistogram, Observer, ObserverError, parse_observer
from nmc.compiler.driver import compile_model
from nmc.isa.target import load_target
from nmc.models.int8 import calibrate, int8_reference
from nmc.models.registry import build_model, export_to_file
from nmc.runtime.emulator import run_program

from robust_helpers import expect_process_error, run_nmc


def _heavy_tailed(n: int = 200_000, seed: int = 0) -> np.ndarray:
    """Activations as a ViT's MLP input: mostly small, a few large outliers."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(n).astype(np.float32)
    x[rng.choice(n, 40, replace=False)] *= 60
    return x


def _true_error(a: np.ndarray, clip: float) -> float:
    """The squared error of quantising `a` symmetric int8 with range `clip`, exactly."""
    s = np.float64(clip) / 127
    q = np.clip(np.rint(a.astype(np.float64) / s), -128, 127) * s
    return float(((a - q) ** 2).sum())


@pytest.mark.parametrize("text,want", [("max", Observer()), ("mse", Observer("mse")),
                                       ("percentile:99.9", Observer("percentile", 99.9)),
                                       ("percentile:100", Observer("percentile", 100.0))])
def test_parse(text, want):
    assert parse_observer(text) == want
    assert str(parse_observer(text)) == text


@pytest.mark.parametrize("text", ["", "min", "mse:2", "percentile", "percentile:0",
                                  "percentile:101", "percentile:x", "percentile:nan"])
def test_parse_refuses(text):
    with pytest.raises(ObserverError, match="observer"):
        parse_observer(text)


def test_max_is_the_exact_maximum_and_batching_does_not_matter():
    x = _heavy_tailed()
    whole = AbsHistogram()
    whole.update(x)
    assert whole.clip(Observer()) == float(np.abs(x).max())
    order = np.argsort(np.abs(x))  # smallest first: the range doubles many times
    for chunks in (np.array_split(x, 7), np.array_split(x[order], 50)):
        parts = AbsHistogram()
        for chunk in chunks:
            parts.update(chunk)
        assert parts.top == whole.top and np.array_equal(parts.counts, whole.counts)
        for obs in ("max", "mse", "percentile:99.9"):
            assert parts.clip(parse_observer(obs)) == whole.clip(parse_observer(obs))


@pytest.mark.parametrize("p", [50, 99, 99.9, 99.99])
def test_percentile_is_numpys_to_a_bin(p):
    x = _heavy_tailed()
    h = AbsHistogram()
    h.update(x)
    width = h.top / 2048
    assert abs(h.clip(Observer("percentile", p)) - np.percentile(np.abs(x), p)) <= 1.01 * width


def test_mse_clip_is_near_the_brute_force_best():
    x = _heavy_tailed()
    h = AbsHistogram()
    h.update(x)
    chosen = h.clip(Observer("mse"))
    peak = float(np.abs(x).max())
    best = min(_true_error(x, c) for c in np.linspace(peak / 200, peak, 400))
    assert chosen < 0.7 * peak  # the largest outliers saturate
    assert _true_error(x, chosen) <= 1.01 * best
    assert _true_error(x, peak) > 1.5 * best  # max |x| is far from it here


def test_all_zero_input_keeps_scale_one():
    h = AbsHistogram()
    h.update(np.zeros(100, np.float32))
    assert h.clip(Observer("mse")) == 0.0 and h.clip(Observer()) == 0.0


@pytest.mark.parametrize("observer", ["mse", "percentile:99"])
def test_compile_with_an_observer_matches_the_reference(tmp_path, observer):
    module, example = build_model("mlp_block", {"tokens": 17}, seed=0)
    export_to_file(module, example, tmp_path / "m.pt")
    gen = torch.Generator().manual_seed(5)
    calib = torch.randn((3, *example.shape), generator=gen)
    calib[0, 0, :4] *= 40  # outliers in the first layer's input
    np.save(tmp_path / "calib.npy", calib.numpy())

    def scales(obs: str | None) -> dict:
        quant = {"calib": str(tmp_path / "calib.npy"), "out": str(tmp_path / "q.json")}
        if obs:
            quant["observer"] = obs
        program = compile_model(tmp_path / "m.pt", "sta_int8", quant=quant)
        return program, json.loads((tmp_path / "q.json").read_text())["layers"]

    program, chosen = scales(observer)
    _, by_max = scales(None)
    ours = calibrate(module, list(calib), list(chosen), observer)
    assert {k: v["input_scale"] for k, v in ours.items()} == \
        {k: v["input_scale"] for k, v in chosen.items()}
    assert all(chosen[k]["input_scale"] <= by_max[k]["input_scale"] for k in chosen)
    assert any(chosen[k]["input_scale"] < by_max[k]["input_scale"] for k in chosen)
    x = torch.randn(example.shape, generator=torch.Generator().manual_seed(1))
    (name,) = [s.name for s in program.symbols if s.kind == "input"]
    (got,) = run_program(program, {name: x.numpy()}, load_target("sta_int8"),
                         fill=float("nan")).outputs.values()
    with torch.no_grad():
        want = int8_reference(module, chosen)(x).numpy()
    np.testing.assert_array_equal(got, want)


def test_bad_observer_options_are_one_line(tmp_path):
    module, example = build_model("mlp_block", {"tokens": 5}, seed=0)
    export_to_file(module, example, tmp_path / "m.pt")
    np.save(tmp_path / "c.npy", torch.randn((2, *example.shape)).numpy())
    base = ["compile", tmp_path / "m.pt", "-o", tmp_path / "p.bin", "--calib", tmp_path / "c.npy"]
    expect_process_error(run_nmc(*base, "--target", "sta_int8", "--calib-observer", "median"),
                         "--calib-observer", "expected max, mse or percentile:P")
    expect_process_error(run_nmc(*base, "--calib-observer", "mse"),
                         "--calib-observer", "computes in fp32")
    assert not (tmp_path / "p.bin").exists()


def test_the_max_collector_keeps_only_the_maximum():
    x = _heavy_tailed()
    for obs in ("max", "mse", "percentile:99.9"):
        collector = parse_observer(obs).collector()
        collector.update(x[:1000])
        collector.update(x[1000:])
        full = AbsHistogram()
        full.update(x)
        assert collector.clip(parse_observer(obs)) == full.clip(parse_observer(obs))
        assert (collector.counts is None) == (obs == "max")

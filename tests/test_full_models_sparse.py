"""The done-criteria runs of issues 5 and 6 on the full-size models (slow: `make test-all`):
DeiT-tiny and DeiT-small at 224 with 2:4, 1:8 and an ELSA configuration, and swin_tiny with
half its windows and 2:4, each against the PyTorch reference of the same sparse model
(relative max error < 1e-4). The default suite runs the same paths on small configs
(tests/test_nm_sparse.py, tests/test_elsa.py, tests/test_window_prune.py)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from nmc.compiler.driver import compile_model
from nmc.isa.target import load_target
from nmc.models.nm_sparsity import apply_nm
from nmc.models.registry import build_model, export_to_file
from nmc.runtime.emulator import run_program

pytestmark = pytest.mark.slow
TARGET = load_target()


def _patterns(program) -> dict[str, tuple[int, int]]:
    """The N:M pattern of every sparse layer, as the compiler recorded it in META."""
    out = {}
    for name, info in program.meta["layers"].items():
        if info["pattern"] != "dense":
            n, m = info["pattern"].split(":")
            out[name] = (int(n), int(m))
    return out


def _run(program, x):
    (name,) = [s.name for s in program.symbols if s.kind == "input"]
    (got,) = run_program(program, {name: x.numpy()}, TARGET, fill=float("nan")).outputs.values()
    return got


@pytest.mark.parametrize("arch", ["deit_tiny", "deit_small"])
@pytest.mark.parametrize("spec", ["2:4", "1:8", "elsa:speedup=2"])
def test_sparse_deit_224_matches_masked_pytorch(tmp_path, arch, spec):
    module, example = build_model(arch, {}, seed=0)
    export_to_file(module, example, tmp_path / "m.pt")
    program = compile_model(tmp_path / "m.pt", sparsity={"spec": spec})
    config = _patterns(program)
    assert config, "no layer was made sparse"
    if spec.startswith("elsa"):
        assert len(set(config.values())) > 1 or len(config) < 48  # a mixed configuration
    x = torch.randn(example.shape, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        want = apply_nm(module, config)(x).numpy()
    got = _run(program, x)
    assert np.abs(got - want).max() / np.abs(want).max() < 1e-4


def test_swin_tiny_pruned_and_2_4_matches_pytorch(tmp_path):
    module, example = build_model("swin_tiny", {}, seed=0)
    export_to_file(module, example, tmp_path / "m.pt")
    program = compile_model(tmp_path / "m.pt", window={"keep": "0.5"},
                            sparsity={"spec": "2:4"})
    reference = apply_nm(module, _patterns(program))
    reference.set_window_keep(0.5)
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(example.shape, generator=gen) * (
        1 + 8 * torch.rand((1, 1, 7, 7), generator=gen).repeat_interleave(32, 2)
        .repeat_interleave(32, 3))  # regions of different brightness: clear window ranks
    with torch.no_grad():
        want = reference(x).numpy()
    got = _run(program, x)
    assert np.abs(got - want).max() / np.abs(want).max() < 1e-4

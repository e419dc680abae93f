"""`--sparsity N:M` prunes the linears of transformer blocks only, ELSA's choice set
(issue 15, item 2): on Swin, qkv/proj/fc1/fc2 of every block, not the patch-merging
`layers.N.downsample.reduction` nor the head; a FILE.json may name those too; `nmc inspect`
says which layers are pruned. Numerics against the PyTorch model with exactly those
layers masked."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from nmc.cli import main
from nmc.compiler.driver import compile_model
from nmc.isa.container import read_program
from nmc.isa.target import load_target
from nmc.models.nm_sparsity import apply_nm
from nmc.models.registry import build_model, export_to_file
from nmc.runtime.emulator import run_program

pytestmark = pytest.mark.filterwarnings("ignore")


@pytest.fixture(scope="module")
def swin(tmp_path_factory):
    d = tmp_path_factory.mktemp("swin_micro")
    module, example = build_model("swin_micro", {}, seed=0)
    export_to_file(module, example, d / "swin.pt2")
    return d, module, example


def _block_linears(module: torch.nn.Module) -> set[str]:
    """The oracle, from the PyTorch model: every nn.Linear inside a Swin block."""
    return {name for name, m in module.named_modules()
            if isinstance(m, torch.nn.Linear) and ".blocks." in name}


def _sparse_layers(program) -> dict[str, tuple[int, int]]:
    return {name: tuple(int(v) for v in info["pattern"].split(":"))
            for name, info in program.meta["layers"].items() if info["pattern"] != "dense"}


def _matches_masked_pytorch(program, module, example, config) -> None:
    x = torch.randn(example.shape, generator=torch.Generator().manual_seed(1))
    (name,) = [s.name for s in program.symbols if s.kind == "input"]
    (got,) = run_program(program, {name: x.numpy()}, load_target(),
                         fill=float("nan")).outputs.values()
    with torch.no_grad():
        want = apply_nm(module, config)(x).numpy()
    assert np.abs(got - want).max() / np.abs(want).max() < 1e-4


def test_uniform_sparsity_prunes_the_block_linears_only(swin):
    d, module, example = swin
    program = compile_model(d / "swin.pt2", sparsity={"spec": "2:4"})
    blocks = _block_linears(module)
    assert len(blocks) == 16  # 2 stages x 2 blocks x (qkv, proj, fc1, fc2)
    sparse = _sparse_layers(program)
    assert set(sparse) == blocks and set(sparse.values()) == {(2, 4)}
    dense = {n for n, info in program.meta["layers"].items() if info["pattern"] == "dense"}
    assert dense == {"layers.1.downsample.reduction", "head.fc"}
    _matches_masked_pytorch(program, module, example, sparse)


def test_a_json_file_prunes_other_linears_too(swin, tmp_path):
    """The way to include linears outside the blocks: name them in a FILE.json (the
    uniform compile's --sparsity-out is the file to start from)."""
    d, module, example = swin
    out = tmp_path / "s.json"
    assert main(["compile", str(d / "swin.pt2"), "-o", str(tmp_path / "p.bin"), "--sparsity",
                 "2:4", "--sparsity-out", str(out), "-q"]) == 0
    config = json.loads(out.read_text())
    assert set(config) == _block_linears(module)
    config["layers.1.downsample.reduction"] = "2:4"
    out.write_text(json.dumps(config))
    program = compile_model(d / "swin.pt2", sparsity={"spec": str(out)})
    sparse = _sparse_layers(program)
    assert set(sparse) == _block_linears(module) | {"layers.1.downsample.reduction"}
    _matches_masked_pytorch(program, module, example, sparse)


def test_inspect_says_which_layers_are_pruned(swin, tmp_path, capsys):
    d, _module, _example = swin
    program = tmp_path / "p.bin"
    assert main(["compile", str(d / "swin.pt2"), "-o", str(program), "--sparsity", "2:4",
                 "-q"]) == 0
    capsys.readouterr()
    assert main(["inspect", str(program)]) == 0
    out = capsys.readouterr().out
    assert ("pruned      16 of 18 weight layers N:M sparse (16 at 2:4); dense: head.fc, "
            "layers.1.downsample.reduction\n") in out
    assert main(["compile", str(d / "swin.pt2"), "-o", str(program), "-q"]) == 0
    capsys.readouterr()
    assert main(["inspect", str(program)]) == 0
    assert "pruned      none: all 18 weight layers dense\n" in capsys.readouterr().out


def test_elsa_chooses_among_the_block_linears(swin):
    from nmc.compiler.driver import import_nm
    from nmc.compiler.transforms.assign_sparsity import candidates

    d, module, _example = swin
    layers, fixed = candidates(import_nm(d / "swin.pt2"), "flops", load_target())
    assert {c.name for c in layers} == _block_linears(module)
    assert fixed > 0  # the reduction and the head are costed dense


def test_a_model_without_blocks_names_its_linears(tmp_path, capsys):
    class Mlp(torch.nn.Module):  # no residual: no transformer block
        def __init__(self):
            super().__init__()
            self.fc1, self.fc2 = torch.nn.Linear(8, 16), torch.nn.Linear(16, 4)

        def forward(self, x):
            return self.fc2(torch.nn.functional.gelu(self.fc1(x)))

    model = Mlp()
    torch.export.save(torch.export.export(model.eval(), (torch.zeros(1, 2, 8),)),
                      tmp_path / "mlp.pt2")
    assert main(["compile", str(tmp_path / "mlp.pt2"), "-o", str(tmp_path / "p.bin"),
                 "--sparsity", "2:4"]) == 1
    err = capsys.readouterr().err
    assert "--sparsity 2:4 prunes the linears of transformer blocks" in err
    assert "name the linears to prune in a FILE.json (linear layers: fc1, fc2)" in err
    assert not Path(tmp_path / "p.bin").exists()

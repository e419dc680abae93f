"""timm 1.0's own Swin Transformer (tests/timm_swin.py, written as timm writes it) compiles
and runs equal to PyTorch: at a size the window divides, where its unconditional pads are
all zero-wide (identities that raising drops), and at one it does not, where the feature
maps are padded with zero tokens that take part in the window attention, and PatchMerging
pads an odd resolution."""

import numpy as np
import pytest
import torch

from nmc.compiler.dialects.context import make_context
from nmc.compiler.driver import compile_model
from nmc.compiler.frontend import import_model
from nmc.compiler.sparsity.window_rewrite import WindowPruneError
from nmc.compiler.transforms.raise_torch_to_nm import RaiseTorchToNm
from nmc.isa.target import load_target
from nmc.models.registry import export_to_file
from nmc.runtime.emulator import run_program

from timm_swin import SwinTransformer

SIZES = {
    # 16x16 tokens, window 4: every pad of the graph is zero-wide (timm's 224 / window 7)
    "divisible": dict(img_size=64, depths=(2, 2), num_heads=(2, 2), window_size=4),
    # 14x14 tokens, window 4: pads to 16x16 (and 7x7 to 8x8 in the shifted stage); the
    # third stage merges an odd 7x7 map (padded to 8x8) into 4x4 tokens that its blocks,
    # built for timm's 3x3, pad to 6x6 (timm's 256 / window 7 in small)
    "padded": dict(img_size=56, depths=(2, 2, 2), num_heads=(2, 2, 2), window_size=4),
}


def _model(size: str, seed: int = 0) -> SwinTransformer:
    torch.manual_seed(seed)
    return SwinTransformer(**SIZES[size]).eval()


@pytest.mark.parametrize("size", sorted(SIZES))
def test_timm_swin_matches_pytorch(tmp_path, size):
    model = _model(size)
    x = torch.randn(1, 3, SIZES[size]["img_size"], SIZES[size]["img_size"])
    export_to_file(model, x, tmp_path / "swin.pt2")
    ctx = make_context()
    module = import_model(tmp_path / "swin.pt2", ctx)
    pads = [op for op in module.walk() if op.name == "torch.aten.constant_pad_nd"]
    RaiseTorchToNm().apply(ctx, module)
    concats = [op for op in module.walk() if op.name == "nm.concat"]
    if size == "divisible":  # 4 blocks and 1 merging pad by zero: identities
        assert len(pads) == 5 and not concats
    else:  # 6 block pads and the odd merging's: a concatenation with zeros per padded
        # dim (H and W); the even merging's pad (14x14) is zero-wide
        assert len(pads) == 1 and len(concats) == 2 * 7
    program = compile_model(tmp_path / "swin.pt2")
    (name,) = [s.name for s in program.symbols if s.kind == "input"]
    got = next(iter(run_program(program, {name: x.numpy()}, load_target(),
                                fill=float("nan")).outputs.values()))
    with torch.no_grad():
        want = model(x).numpy()
    assert np.abs(got - want).max() <= 1e-4 * np.abs(want).max()


def test_timm_swin_window_pruned_matches_the_reference(tmp_path):
    """--window-keep on timm's Swin (divisible size): the program equals nmc's SparseViT
    reference (models/swin.py) loaded with the same weights, which are timm-named."""
    from nmc.models.swin import SwinTransformer as ReferenceSwin

    cfg = SIZES["divisible"]
    model = _model("divisible")
    reference = ReferenceSwin(img_size=cfg["img_size"], num_classes=10, embed_dim=16,
                              depths=cfg["depths"], num_heads=cfg["num_heads"],
                              window_size=cfg["window_size"]).eval()
    reference.load_state_dict(model.state_dict(), strict=True)
    reference.set_window_keep({"layers.0.blocks.0": 0.5, "layers.0.blocks.1": 0.25,
                               "layers.1.blocks.1": 0.5})
    keep = tmp_path / "keep.json"
    keep.write_text('{"layers.0.blocks.0": 0.5, "layers.0.blocks.1": 0.25, '
                    '"layers.1.blocks.1": 0.5}')
    x = torch.randn(1, 3, cfg["img_size"], cfg["img_size"])
    export_to_file(model, x, tmp_path / "swin.pt2")
    program = compile_model(tmp_path / "swin.pt2", window={"keep": str(keep)})
    (name,) = [s.name for s in program.symbols if s.kind == "input"]
    got = next(iter(run_program(program, {name: x.numpy()}, load_target(),
                                fill=float("nan")).outputs.values()))
    with torch.no_grad():
        want = reference(x).numpy()
        dense = model(x).numpy()
    assert np.abs(got - want).max() <= 1e-4 * np.abs(want).max()
    assert np.abs(dense - want).max() > 1e-2 * np.abs(want).max()  # pruning changed it


def test_padded_timm_swin_window_keep_is_refused(tmp_path):
    model = _model("padded")
    x = torch.randn(1, 3, SIZES["padded"]["img_size"], SIZES["padded"]["img_size"])
    export_to_file(model, x, tmp_path / "swin.pt2")
    with pytest.raises(WindowPruneError, match=r"layers\.0\.blocks\.0, .*\(6 blocks\) pad "
                       "their feature map"):
        compile_model(tmp_path / "swin.pt2", window={"keep": "0.5"})

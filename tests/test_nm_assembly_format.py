"""The custom assembly formats of the nm and win ops (compiler/dialects/nm.py, win.py):
the nm-level IR of a compiled small model prints in them (`nmc opt`, --print-ir-after),
parses back to the same module and prints identically; its generic form (--dump-ir,
--print-op-generic) parses to the same module."""

from __future__ import annotations

from io import StringIO

import pytest
import torch
from xdsl.parser import Parser
from xdsl.printer import Printer

from nmc.compiler.dialects.nm import NM
from nmc.compiler.dialects.win import WIN
from nmc.compiler.frontend import import_model
from nmc.compiler.pipeline import make_context, print_ir, run_pipeline
from nmc.models.registry import build_model, export_to_file

# Up to plan-memory: every nm-level attribute set. fuse-activations is left out so that
# nm.gelu stays; window-prune brings the win ops.
MODELS = {
    "deit": ("deit_tiny", {"img_size": 16, "patch": 8, "dim": 16, "depth": 1, "heads": 2,
                           "num_classes": 4},
             'raise-torch-to-nm,assign-sparsity{spec="2:4"},schedule-tiles,prune-and-pack,'
             'plan-memory'),
    "swin": ("swin_micro", {"img_size": 16, "window": 2, "embed_dim": 8, "num_classes": 2,
                            "in_chans": 1},
             'raise-torch-to-nm,window-prune{keep="0.5"},fuse-activations,'
             'assign-sparsity{spec="2:4"},schedule-tiles,prune-and-pack,plan-memory'),
    "dinov2": ("vit_small_patch14_dinov2", {"img_size": 28, "dim": 16, "depth": 1,
                                            "heads": 2},
               "raise-torch-to-nm,schedule-tiles,plan-memory"),
    "binary": (None, {}, "raise-torch-to-nm,schedule-tiles,plan-memory"),
    "vector": (None, {}, "raise-torch-to-nm,schedule-tiles,plan-memory"),
}


class _Binary(torch.nn.Module):
    """The binary vector ops no registry model uses (nm.sub)."""

    def __init__(self):
        super().__init__()
        self.fc = torch.nn.Linear(8, 8)
        self.shift = torch.nn.Parameter(torch.ones(8))

    def forward(self, x):
        return self.fc(x) - self.shift


class _Vector(torch.nn.Module):
    """The unary vector ops no registry model uses (nm.relu, nm.scale, nm.softmax)."""

    def forward(self, x):
        return torch.softmax(torch.relu(x) * 0.5, dim=-1)


_CUSTOM = {"binary": _Binary, "vector": _Vector}


@pytest.fixture(scope="module", params=sorted(MODELS))
def nm_module(request, tmp_path_factory):
    arch, params, pipeline = MODELS[request.param]
    path = tmp_path_factory.mktemp("format") / f"{request.param}.pt"
    if arch is None:
        module, example = _CUSTOM[request.param]().eval(), torch.randn(1, 4, 8)
    else:
        module, example = build_model(arch, params, seed=0)
    export_to_file(module, example, path)
    ctx = make_context()
    ir = import_model(path, ctx)
    run_pipeline(ir, pipeline, ctx)
    return ir


def _parse(text: str):
    module = Parser(make_context(), text).parse_module()
    module.verify()
    return module


def _generic(module) -> str:
    out = StringIO()
    Printer(stream=out, print_generic_format=True, print_debuginfo=True).print_op(module)
    return out.getvalue()


def test_every_nm_and_win_op_has_a_custom_format():
    assert all(op.assembly_format for op in (*NM.operations, *WIN.operations))


def test_custom_form_prints_parses_and_prints_the_same(nm_module, request):
    text = print_ir(nm_module)
    assert '"nm.' not in text and '"win.' not in text  # no op fell back to generic form
    for name in OPS[request.node.callspec.params["nm_module"]]:
        assert f" = {name} " in text or f" {name} " in text, name
    again = _parse(text)
    assert print_ir(again) == text
    assert again.is_structurally_equivalent(nm_module)


def test_generic_form_parses_to_the_same_module(nm_module):
    text = print_ir(nm_module)
    from_generic = _parse(_generic(nm_module))
    assert from_generic.is_structurally_equivalent(_parse(text))
    assert print_ir(from_generic) == text


# the ops of each model: together every nm and win op (DINOv2's LayerScale: nm.mul)
OPS = {
    "deit": {"nm.param", "nm.patch_embed", "nm.concat", "nm.add", "nm.layer_norm",
             "nm.linear", "nm.attention", "nm.gelu", "nm.select"},
    "dinov2": {"nm.param", "nm.patch_embed", "nm.concat", "nm.add", "nm.layer_norm",
               "nm.linear", "nm.attention", "nm.gelu", "nm.mul", "nm.select"},
    "binary": {"nm.param", "nm.linear", "nm.sub"},
    "vector": {"nm.relu", "nm.scale", "nm.softmax"},
    "swin": {"nm.param", "nm.patch_embed", "nm.reshape", "nm.layer_norm", "nm.permute_rows",
             "nm.linear", "nm.attention", "nm.add", "nm.mean", "win.magnitude", "win.rank",
             "win.gather", "win.scatter"},
}


def test_the_models_hold_every_nm_and_win_op(nm_module, request):
    model = request.node.callspec.params["nm_module"]
    assert {op.name for op in nm_module.walk() if op.name[:3] in ("nm.", "win")} == OPS[model]
    assert set().union(*OPS.values()) == {op.name for op in (*NM.operations, *WIN.operations)}

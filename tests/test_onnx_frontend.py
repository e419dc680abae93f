"""The ONNX frontend's errors: each one line naming what the user must change."""

from __future__ import annotations

import pytest
import torch

from nmc.compiler.driver import compile_model
from nmc.compiler.errors import FrontendError, UnsupportedOpsError
from nmc.models.registry import build_model

from onnx_helpers import DEIT_SMALL, export_onnx

pytest.importorskip("onnxscript")


class _Unsupported(torch.nn.Module):
    def forward(self, x):
        return torch.cumsum(x, -1)


def test_an_op_nmc_cannot_raise_names_the_onnx_op_and_node(tmp_path):
    path = tmp_path / "bad.onnx"
    export_onnx(_Unsupported(), torch.randn(1, 4, 8), path)
    with pytest.raises(UnsupportedOpsError) as e:
        compile_model(path)
    assert "torch.aten.cumsum" in str(e.value) and "ONNX CumSum node 'node_cumsum'" in str(e.value)


def test_a_dynamic_dim_needs_a_shape_and_the_error_says_how(tmp_path):
    module, _ = build_model("deit_tiny", DEIT_SMALL, seed=0)
    path = tmp_path / "dyn.onnx"
    export_onnx(module, torch.randn(2, 3, 32, 32), path, dynamic_batch=True)
    with pytest.raises(FrontendError, match=r"--input-shape x=Nx3x32x32 \(or --batch N"):
        compile_model(path)
    with pytest.raises(FrontendError, match="the model's inputs are 'x'"):
        compile_model(path, input_shapes={"y": (1, 3, 32, 32)})
    with pytest.raises(FrontendError, match="the model fixes its shape"):
        compile_model(path, input_shapes={"x": (1, 3, 16, 32)})


def test_input_shapes_are_for_onnx_models_only(tmp_path):
    from nmc.models.registry import export_to_file

    module, example = build_model("deit_tiny", DEIT_SMALL, seed=0)
    export_to_file(module, example, tmp_path / "m.pt")
    with pytest.raises(FrontendError, match="fix the dynamic dims of ONNX models"):
        compile_model(tmp_path / "m.pt", batch=1)


def test_a_damaged_onnx_file_is_one_error(tmp_path):
    path = tmp_path / "x.onnx"
    path.write_bytes(b"\x08\x07garbage that is no protobuf" * 3)
    with pytest.raises(FrontendError, match="cannot read the ONNX model"):
        compile_model(path)


def test_an_op_torch_mlir_cannot_convert_is_one_error_with_op_and_node(tmp_path):
    import onnx
    from onnx import TensorProto, helper

    node = helper.make_node("DFT", ["x"], ["y"], name="my_dft")
    graph = helper.make_graph(
        [node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 4, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)])
    path = tmp_path / "dft.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 20)]), path)
    with pytest.raises(FrontendError, match="unsupported ONNX operation.*ONNX DFT node 'my_dft'"):
        compile_model(path)


def test_without_module_scopes_layers_are_named_after_their_weights(tmp_path):
    """An ONNX file without torch's metadata (other exporters): a linear's layer name comes
    from the initializer `<layer>.weight` / `.bias` it reads."""
    import onnx

    module, example = build_model("deit_tiny", DEIT_SMALL, seed=0)
    path = tmp_path / "deit.onnx"
    export_onnx(module, example, path)
    model = onnx.load(path)
    for node in model.graph.node:
        del node.metadata_props[:]
    onnx.save(model, path)
    layers = compile_model(path).meta["layers"]
    assert {"blocks.0.attn.qkv", "blocks.1.mlp.fc1", "head"} <= set(layers)


def test_the_elsa_search_says_it_needs_the_pytorch_program(tmp_path):
    module, example = build_model("deit_tiny", DEIT_SMALL, seed=0)
    path = tmp_path / "deit.onnx"
    export_onnx(module, example, path)
    with pytest.raises(FrontendError, match="ELSA search measures the PyTorch program"):
        compile_model(path, sparsity={"spec": "elsa:speedup=1.5", "calib": "", "out": "",
                                      "report": True})

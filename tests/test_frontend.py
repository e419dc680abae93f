"""Frontend: torch.export file -> torch-mlir -> xDSL -> raise-torch-to-nm -> nm dialect."""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from torch import nn
from xdsl.dialects.builtin import Float32Type, ModuleOp
from xdsl.dialects.func import FuncOp, ReturnOp
from xdsl.dialects import test as xdsl_test
from xdsl.parser import Parser
from xdsl.printer import Printer
from xdsl.utils.exceptions import VerifyException

from nmc.compiler.dialects import nm
from nmc.compiler.dialects import torch as tt
from nmc.compiler.dialects.context import make_context
from nmc.compiler.dialects.nm_attrs import input_names, model_path, output_names, param_arg_key
from nmc.compiler.driver import import_nm
from nmc.compiler.frontend import (
    import_model,
    load_exported_program,
    load_weights,
    location_info,
)
from nmc.compiler.transforms.raise_torch_to_nm import RaiseTorchToNm, assign_layer_names
from nmc.models.export import export_model
from nmc.models.mlp_block import MLPBlock

DIM, HIDDEN, TOKENS = 16, 32, 5


def _main(module: ModuleOp) -> FuncOp:
    funcs = [op for op in module.ops if isinstance(op, FuncOp)]
    assert len(funcs) == 1 and funcs[0].sym_name.data == "main"
    return funcs[0]


def _print(module: ModuleOp, *, debuginfo: bool = False) -> str:
    out = io.StringIO()
    Printer(stream=out, print_debuginfo=debuginfo).print_op(module)
    return out.getvalue()


def _shape(value) -> tuple[int, ...]:  # noqa: ANN001
    return tuple(value.type.get_shape())


@pytest.fixture(scope="module")
def mlp() -> MLPBlock:
    torch.manual_seed(0)
    return MLPBlock(DIM, HIDDEN).eval()


@pytest.fixture(scope="module")
def mlp_path(mlp: MLPBlock, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("frontend") / "mlp.pt"
    return export_model(mlp, torch.randn(1, TOKENS, DIM), path)


@pytest.fixture(scope="module")
def nm_module(mlp_path: Path) -> ModuleOp:
    return import_nm(mlp_path)


# ------------------------------------------------------------------------ MLP block


def test_mlp_block_nm_ops(nm_module: ModuleOp) -> None:
    func = _main(nm_module)
    ops = list(func.body.block.ops)
    params = [op for op in ops if isinstance(op, nm.ParamOp)]
    compute = [op for op in ops if isinstance(op, nm.COMPUTE_OPS)]
    assert len(params) + len(compute) + 1 == len(ops)
    assert isinstance(ops[-1], ReturnOp)

    assert {p.param_name.data: _shape(p.result) for p in params} == {
        "norm.weight": (DIM,),
        "norm.bias": (DIM,),
        "fc1.weight": (HIDDEN, DIM),
        "fc1.bias": (HIDDEN,),
        "fc2.weight": (DIM, HIDDEN),
        "fc2.bias": (DIM,),
    }
    assert [(type(op), op.layer_name, _shape(op.results[0])) for op in compute] == [
        (nm.LayerNormOp, "norm", (1, TOKENS, DIM)),
        (nm.LinearOp, "fc1", (1, TOKENS, HIDDEN)),
        (nm.GeluOp, "act", (1, TOKENS, HIDDEN)),
        (nm.LinearOp, "fc2", (1, TOKENS, DIM)),
        (nm.AddOp, "add", (1, TOKENS, DIM)),
    ]
    ln, fc1, gelu, fc2, add = compute
    param = {p.param_name.data: p.result for p in params}
    x = func.body.block.args[0]
    assert (ln.input, ln.gamma, ln.beta) == (x, param["norm.weight"], param["norm.bias"])
    assert ln.eps_value == pytest.approx(1e-6)
    assert (fc1.input, fc1.weight, fc1.bias) == (ln.result, param["fc1.weight"], param["fc1.bias"])
    assert gelu.input == fc1.result and gelu.approximate.data == "none"
    assert (fc2.input, fc2.weight, fc2.bias) == (gelu.result, param["fc2.weight"], param["fc2.bias"])
    assert (add.lhs, add.rhs) == (x, fc2.result)
    assert ops[-1].operands[0] == add.result


def test_only_builtin_func_nm_ops_remain(nm_module: ModuleOp) -> None:
    for op in nm_module.walk():
        assert op.name.split(".")[0] in ("builtin", "func", "nm"), op.name


def test_signature_and_attributes(nm_module: ModuleOp, mlp_path: Path) -> None:
    func = _main(nm_module)
    assert model_path(nm_module) == str(mlp_path.absolute())
    assert input_names(func) == ["x"]
    assert output_names(func) == ["output"]
    assert [tuple(t.get_shape()) for t in func.function_type.inputs.data] == [(1, TOKENS, DIM)]
    assert [tuple(t.get_shape()) for t in func.function_type.outputs.data] == [(1, TOKENS, DIM)]
    assert func.arg_attrs is None


@pytest.mark.parametrize("debuginfo", [False, True])
def test_print_parse_round_trip(nm_module: ModuleOp, debuginfo: bool) -> None:
    text = _print(nm_module, debuginfo=debuginfo)
    reparsed = Parser(make_context(allow_unregistered=False), text).parse_module()
    reparsed.verify()
    assert _print(reparsed, debuginfo=debuginfo) == text
    assert reparsed.is_structurally_equivalent(nm_module)


def test_weights_by_param_name(nm_module: ModuleOp, mlp: MLPBlock, mlp_path: Path) -> None:
    weights = load_weights(mlp_path)
    for op in nm_module.walk():
        if isinstance(op, nm.ParamOp):
            arr = weights[op.param_name.data]
            assert arr.dtype == np.float32
            assert arr.shape == _shape(op.result)
            ref = mlp.state_dict()[op.param_name.data].numpy()
            np.testing.assert_array_equal(arr, ref)


def test_program_and_weights_are_cached(mlp_path: Path) -> None:
    ep = load_exported_program(mlp_path)
    assert load_exported_program(str(mlp_path)) is ep
    w1, w2 = load_weights(mlp_path), load_weights(mlp_path)
    assert w1["fc1.weight"] is w2["fc1.weight"]
    assert not w1["fc1.weight"].flags.writeable
    # A changed file (new mtime) is loaded again.
    st = os.stat(mlp_path)
    os.utime(mlp_path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    assert load_exported_program(mlp_path) is not ep


def test_torch_level_import(mlp_path: Path) -> None:
    module = import_model(mlp_path)
    func = _main(module)
    params = [
        param_arg_key(attrs)
        for attrs in func.arg_attrs.data  # type: ignore[union-attr]
    ]
    assert params == [
        "norm.weight", "norm.bias", "fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias", None
    ]
    linears = [op for op in func.walk() if isinstance(op, tt.AtenLinearOp)]
    assert len(linears) == 2
    assert all(isinstance(a.type, tt.ValueTensorType) for a in func.body.block.args)
    path, source = location_info(linears[0].location)
    assert path == "fc1"
    assert source is not None and source.startswith("mlp_block.py:")
    add = next(op for op in func.walk() if isinstance(op, tt.AtenAddTensorOp))
    assert location_info(add.location)[0] == ""
    # The torch-level module prints (with locations: they carry the module paths) and
    # parses back too, as `nmc opt -p raise-torch-to-nm` on a dump does.
    reparsed = Parser(make_context(), _print(module, debuginfo=True)).parse_module()
    RaiseTorchToNm().apply(make_context(), reparsed)
    assert str(reparsed) == str(import_nm(mlp_path))


def test_pt2_name_and_tanh_gelu(tmp_path: Path) -> None:
    path = export_model(
        MLPBlock(8, 8, eps=1e-5, approximate="tanh"), torch.randn(2, 3, 8), tmp_path / "m.pt2"
    )
    module = import_nm(path)
    gelu = next(op for op in module.walk() if isinstance(op, nm.GeluOp))
    norm = next(op for op in module.walk() if isinstance(op, nm.LayerNormOp))
    assert gelu.approximate.data == "tanh"
    assert norm.eps_value == pytest.approx(1e-5)
    assert _shape(gelu.result) == (2, 3, 8)  # the batch dim stays as exported


# --------------------------------------------------------------- nested module names


class _TwoResiduals(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.mlp1 = MLPBlock(8, 16)
        self.mlp2 = MLPBlock(8, 16)
        self.proj = nn.Linear(8, 8, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.proj(x)
        x = x + self.mlp1(x)
        return x + self.mlp2(x)


class _Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.blocks = nn.ModuleList([_TwoResiduals(), _TwoResiduals()])
        self.head = nn.Linear(8, 4)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        for block in self.blocks:
            x = block(x)
        return self.head(x), x + x


def test_nested_layer_names(tmp_path: Path) -> None:
    module = import_nm(export_model(_Net(), torch.randn(1, 3, 8), tmp_path / "net.pt"))
    layers = [op.layer_name for op in module.walk() if isinstance(op, nm.COMPUTE_OPS)]
    assert len(layers) == len(set(layers))
    assert layers[:14] == [
        "blocks.0.proj",
        "blocks.0.add",
        "blocks.0.mlp1.norm",
        "blocks.0.mlp1.fc1",
        "blocks.0.mlp1.act",
        "blocks.0.mlp1.fc2",
        "blocks.0.mlp1",  # the residual inside MLPBlock: one compute op at that path
        "blocks.0.add_1",
        "blocks.0.mlp2.norm",
        "blocks.0.mlp2.fc1",
        "blocks.0.mlp2.act",
        "blocks.0.mlp2.fc2",
        "blocks.0.mlp2",
        "blocks.0.add_2",
    ]
    assert layers[-2:] == ["head", "add"]
    head = next(op for op in module.walk() if isinstance(op, nm.LinearOp) and op.layer_name == "head")
    proj = next(
        op for op in module.walk() if isinstance(op, nm.LinearOp) and op.layer_name == "blocks.0.proj"
    )
    assert head.bias is not None and proj.bias is None
    func = _main(module)
    assert output_names(func) == ["output_0", "output_1"]


def test_assign_layer_names() -> None:
    assert assign_layer_names(
        [("fc1", "linear"), ("", "add"), ("", "add"), ("b", "add"), ("b", "linear"), ("b", "add")]
    ) == ["fc1", "add", "add_1", "b.add", "b.linear", "b.add_1"]
    # A module literally called "linear" next to a multi-op parent does not collide.
    assert assign_layer_names([("b.linear", "linear"), ("b", "linear"), ("b", "add")]) == [
        "b.linear",
        "b.linear_1",
        "b.add",
    ]


@given(
    st.lists(
        st.tuples(
            st.sampled_from(["", "a", "a.b", "a.add", "add", "a.linear"]),
            st.sampled_from(["linear", "add", "gelu"]),
        ),
        max_size=12,
    )
)
def test_assign_layer_names_unique(entries: list[tuple[str, str]]) -> None:
    names = assign_layer_names(entries)
    assert len(names) == len(entries)
    assert len(set(names)) == len(names)
    assert all(names)


# ------------------------------------------------------------------ dialect checks


def _verify_error(text: str) -> str:
    module = Parser(make_context(), text).parse_module()
    with pytest.raises(VerifyException) as info:
        module.verify()
    return str(info.value)


def _nm_func(body: str, args: str) -> str:
    return f"func.func @main({args}) {{\n{body}\n  func.return\n}}"


def test_nm_verifier_linear_k_mismatch() -> None:
    msg = _verify_error(
        _nm_func(
            '%w = "nm.param"() <{name = "w"}> : () -> tensor<4x7xf32>\n'
            '%y = "nm.linear"(%x, %w) <{layer = "fc"}> : (tensor<2x8xf32>, tensor<4x7xf32>) -> tensor<2x4xf32>',
            "%x: tensor<2x8xf32>",
        )
    )
    assert "nm.linear (fc)" in msg and "K mismatch" in msg


def test_nm_verifier_linear_bias_size() -> None:
    msg = _verify_error(
        _nm_func(
            '%w = "nm.param"() <{name = "w"}> : () -> tensor<4x8xf32>\n'
            '%b = "nm.param"() <{name = "b"}> : () -> tensor<5xf32>\n'
            '%y = "nm.linear"(%x, %w, %b) <{layer = "fc"}> : (tensor<2x8xf32>, tensor<4x8xf32>, tensor<5xf32>) -> tensor<2x4xf32>',
            "%x: tensor<2x8xf32>",
        )
    )
    assert "bias must be [4]" in msg


def test_nm_verifier_layer_norm_param_size() -> None:
    msg = _verify_error(
        _nm_func(
            '%g = "nm.param"() <{name = "g"}> : () -> tensor<8xf32>\n'
            '%b = "nm.param"() <{name = "b"}> : () -> tensor<6xf32>\n'
            '%y = "nm.layer_norm"(%x, %g, %b) <{layer = "norm", eps = 1.0e-06 : f64}> : (tensor<2x8xf32>, tensor<8xf32>, tensor<6xf32>) -> tensor<2x8xf32>',
            "%x: tensor<2x8xf32>",
        )
    )
    assert "beta must be [8]" in msg


def test_nm_verifier_add_shapes_and_gelu_mode() -> None:
    msg = _verify_error(
        _nm_func(
            '%y = "nm.add"(%x, %z) <{layer = "add"}> : (tensor<2x8xf32>, tensor<3x8xf32>) -> tensor<2x8xf32>',
            "%x: tensor<2x8xf32>, %z: tensor<3x8xf32>",
        )
    )
    assert "nm.add (add): rhs [3, 8] does not broadcast to lhs [2, 8]" in msg
    msg = _verify_error(
        _nm_func(
            '%y = "nm.gelu"(%x) <{layer = "act", approximate = "erf"}> : (tensor<2x8xf32>) -> tensor<2x8xf32>',
            "%x: tensor<2x8xf32>",
        )
    )
    assert "approximate must be one of" in msg


def test_nm_verifier_f32_only() -> None:
    msg = _verify_error(
        _nm_func(
            '%y = "nm.gelu"(%x) <{layer = "act", approximate = "none"}> : (tensor<2x8xf16>) -> tensor<2x8xf16>',
            "%x: tensor<2x8xf16>",
        )
    )
    assert "f32" in msg or "f16" in msg


@pytest.mark.parametrize(
    "text",
    [
        "!torch.vtensor<[1,197,192],f32>",
        "!torch.vtensor<[?,8],f32>",
        "!torch.vtensor<*,f32>",
        "!torch.vtensor<[3],si64>",
        "!torch.vtensor",
        "!torch.int",
        "!torch.list<int>",
        "!torch.list<vtensor<[2],f32>>",
        "!torch.optional<list<int>>",
        "!torch.list<qint8>",
        "!torch.list<foo<[1, 2], \"x>\">>",
        "!torch.Device",
    ],
)
def test_torch_types_round_trip(text: str) -> None:
    func = f'"func.func"() <{{function_type = ({text}) -> (), sym_name = "f"}}> ({{\n^bb0(%a : {text}):\n  "func.return"() : () -> ()\n}}) : () -> ()'
    module = Parser(make_context(), f'"builtin.module"() ({{\n{func}\n}}) : () -> ()').parse_module()
    typ = _main_any(module).function_type.inputs.data[0]
    assert str(typ) == text
    if text.startswith("!torch.vtensor<["):
        assert isinstance(typ, tt.ValueTensorType)


def _main_any(module: ModuleOp) -> FuncOp:
    return next(op for op in module.ops if isinstance(op, FuncOp))


def test_torch_op_table() -> None:
    """The table-defined torch ops: class named after the op, operands in torch's order,
    constants round-trip their Python value, and the unranked-operand verifier."""
    for cls in tt.TORCH.operations:
        assert getattr(tt, cls.__name__) is cls, cls.__name__
    assert tt.AtenFlattenUsingIntsOp.name == "torch.aten.flatten.using_ints"
    operands = [n for n, _ in tt.AtenScaledDotProductAttentionOp.get_irdl_definition().operands]
    assert operands == ["query", "key", "value", "attn_mask", "dropout_p", "is_causal",
                        "scale", "enable_gqa"]
    for op_cls, value in ((tt.ConstantIntOp, 3), (tt.ConstantFloatOp, 0.5),
                          (tt.ConstantStrOp, "tanh"), (tt.ConstantBoolOp, True)):
        const = op_cls(value)
        assert const.py_value == value and tt.constant_value(const.result) == value
    unranked = xdsl_test.TestOp(result_types=[tt.ValueTensorType(None, Float32Type())])
    gelu = tt.AtenGeluOp(operands=[unranked.results[0], tt.ConstantStrOp("none").result],
                         result_types=[tt.ValueTensorType([2, 3], Float32Type())])
    with pytest.raises(VerifyException, match="unranked tensor operand"):
        gelu.verify()


def _int_list(values: list[int]) -> tt.PrimListConstructOp:
    consts = [tt.ConstantIntOp(v) for v in values]
    return tt.PrimListConstructOp(operands=[[c.result for c in consts]],
                                  result_types=[tt.ListType(tt.IntType())])


@pytest.mark.parametrize(
    "shape, op, dims, last_two, one_two",
    [
        ([2, 3, 4, 5], "permute", [0, 1, 3, 2], True, False),
        ([2, 3, 4, 5], "permute", [0, 1, -1, -2], True, False),
        ([2, 3, 4, 5], "permute", [0, 2, 1, 3], False, True),
        ([2, 3, 4, 5], "permute", [1, 0, 2, 3], False, False),
        ([2, 3, 4], "permute", [0, 2, 1], True, True),
        ([3, 4], "permute", [1, 0], True, False),
        ([2, 3, 4, 5], "transpose", [-2, -1], True, False),
        ([2, 3, 4, 5], "transpose", [2, 1], False, True),
        ([3, 4], "transpose", [0, 1], True, False),
        ([2, 3, 4, 5], "transpose", [0, 3], False, False),
    ],
)
def test_raise_recognises_dim_swaps(shape: list[int], op: str, dims: list[int],
                                    last_two: bool, one_two: bool) -> None:
    """The head split / merge and k^T tests of raise-torch-to-nm: which transposes and
    permutes swap the last two dims, or dims 1 and 2, keeping the others."""
    from nmc.compiler.transforms.raise_torch_to_nm.reading import swaps_1_2, swaps_last_two

    x = xdsl_test.TestOp(result_types=[tt.ValueTensorType(shape, Float32Type())])
    out = [tt.ValueTensorType(shape, Float32Type())]
    if op == "permute":
        swap = tt.AtenPermuteOp(operands=[x.results[0], _int_list(dims).result],
                                result_types=out)
    else:
        d0, d1 = tt.ConstantIntOp(dims[0]), tt.ConstantIntOp(dims[1])
        swap = tt.AtenTransposeIntOp(operands=[x.results[0], d0.result, d1.result],
                                     result_types=out)
    assert swaps_last_two(swap) is last_two
    assert swaps_1_2(swap) is one_two

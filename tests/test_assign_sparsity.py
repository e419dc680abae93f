"""assign-sparsity (issue 5): the `sparsity` property of nm.linear, the N:M and FILE.json
forms of `--sparsity`, which layers they cover, and their errors."""

from __future__ import annotations

import json
import re

import pytest
from xdsl.utils.exceptions import VerifyException

from nmc.compiler.dialects import nm
from nmc.compiler.frontend import import_model
from nmc.compiler.pipeline import DEFAULT_PIPELINE, make_context, print_ir, run_pipeline
from nmc.compiler.sparsity.spec import SparsityError
from nmc.models.registry import build_model, export_to_file

from robust_helpers import check_one_line, cli

TINY = {"img_size": 32, "patch": 8, "dim": 64, "depth": 2, "heads": 2, "num_classes": 10}
BLOCK_LINEARS = [f"blocks.{i}.{n}" for i in range(2)
                 for n in ("attn.qkv", "attn.proj", "mlp.fc1", "mlp.fc2")]


@pytest.fixture(scope="module")
def deit(tmp_path_factory):
    path = tmp_path_factory.mktemp("sparsity") / "deit.pt"
    module, example = build_model("deit_tiny", TINY, seed=0)
    export_to_file(module, example, path)
    return path


def assign(path, spec: str, **opts) -> dict[str, tuple[int, int] | None]:
    """{layer: sparsity_pattern} of every nm.linear after raise-torch-to-nm + assign-sparsity."""
    ctx = make_context()
    module = import_model(path, ctx)
    options = " ".join(f"{k}={json.dumps(v)}" for k, v in {"spec": spec, **opts}.items())
    run_pipeline(module, f"raise-torch-to-nm,assign-sparsity{{{options}}}", ctx)
    return {op.layer_name: op.sparsity_pattern for op in module.walk()
            if isinstance(op, nm.LinearOp)}


def test_default_pipeline_runs_assign_sparsity_after_raising():
    """On nm ops (after raising), before the tile choice and packing that read `sparsity`."""
    order = DEFAULT_PIPELINE.index
    assert DEFAULT_PIPELINE[0] == "raise-torch-to-nm"
    assert order("assign-sparsity") < order("schedule-tiles") < order("prune-and-pack")


def test_no_spec_is_a_no_op(deit):
    ctx = make_context()
    module = import_model(deit, ctx)
    run_pipeline(module, "raise-torch-to-nm", ctx)
    before = print_ir(module)
    run_pipeline(module, "assign-sparsity", ctx)
    assert print_ir(module) == before
    assert "sparsity = array" not in before


def test_uniform_sets_every_block_linear_and_keeps_the_head_dense(deit):
    got = assign(deit, "2:4")
    assert got == {**{n: (2, 4) for n in BLOCK_LINEARS}, "head": None}


def test_uniform_dense_sets_nothing(deit):
    assert set(assign(deit, "4:4").values()) == {None}
    assert set(assign(deit, "dense").values()) == {None}


def test_json_sets_the_named_layers(deit, tmp_path):
    f = tmp_path / "s.json"
    f.write_text(json.dumps({"blocks.0.attn.qkv": "1:4", "blocks.1.mlp.fc2": "4:8",
                             "blocks.0.mlp.fc1": "dense", "head": "2:4"}))
    got = assign(deit, str(f))
    assert got["blocks.0.attn.qkv"] == (1, 4)
    assert got["blocks.1.mlp.fc2"] == (4, 8)
    assert got["head"] == (2, 4)  # a file may name any linear
    assert all(got[n] is None for n in got if n not in
               ("blocks.0.attn.qkv", "blocks.1.mlp.fc2", "head"))


def test_property_prints_parses_and_verifies(deit):
    ctx = make_context()
    module = import_model(deit, ctx)
    run_pipeline(module, 'raise-torch-to-nm,assign-sparsity{spec="2:8"}', ctx)
    text = print_ir(module)
    assert "sparsity array<i64: 2, 8>" in text  # nm.linear's custom format
    from xdsl.parser import Parser

    again = Parser(make_context(), text).parse_module()
    again.verify()
    assert print_ir(again) == text


def test_verifier_checks_n_and_m(deit):
    ctx = make_context()
    module = import_model(deit, ctx)
    run_pipeline(module, "raise-torch-to-nm", ctx)
    op = next(o for o in module.walk() if isinstance(o, nm.LinearOp))
    for bad in ((5, 4), (0, 4)):
        op.set_sparsity(bad)
        with pytest.raises(VerifyException, match=rf"sparsity N:M = {bad[0]}:{bad[1]} needs "
                                                  r"0 < N <= M"):
            op.verify()
    op.set_sparsity((4, 4))  # N = M is dense, and valid
    op.verify()
    op.set_sparsity(None)
    assert op.sparsity_pattern is None
    op.verify()


@pytest.mark.parametrize("spec, fragments", [
    ("3:4", ["--sparsity: target 'sta_ref' does not support N:M pattern 3:4;",
             "supported: 1:4, 2:4, 1:8, 2:8, 4:8"]),
    ("5:4", ["pattern 5:4 needs 0 < N <= M"]),
    ("2:x", ["'2:x' is not an N:M pattern"]),
    ("sparse", ["expected N:M (like 2:4), FILE.json, elsa:speedup=S or elsa:flops=F"]),
    ("elsa:speed=2", ["expected elsa:speedup=S or elsa:flops=F"]),
    ("elsa:speedup=0.5", ["speedup must be a number >= 1"]),
    ("elsa:flops=abc", ["flops must be a number >= 1, got 'abc'"]),
    ("elsa:speedup=2,rank=best", ["rank must be sum or joint or energy, got 'best'"]),
    ("elsa:speedup=2,2:4", ["unknown option '2:4' after ','; expected rank=sum or "
                            "rank=joint or rank=energy"]),
    ("elsa:speedup=2,", ["unknown option '' after ','"]),
    ("elsa:speedup=2,rank=joint,rank=sum", ["rank is given twice"]),
])
def test_bad_specs(deit, spec, fragments):
    with pytest.raises(SparsityError) as e:
        assign(deit, spec)
    for f in fragments:
        assert f in str(e.value)


@pytest.mark.parametrize("content, fragments", [
    ({"blocks.9.attn.qkv": "2:4"}, ["layer 'blocks.9.attn.qkv'",
                                    "the model has no linear layer of that name",
                                    "blocks.0.attn.qkv"]),
    ({"blocks.0.attn.qkv": "2-4"}, ["layer 'blocks.0.attn.qkv'", "'2-4' is not an N:M"]),
    ({"blocks.0.mlp.fc1": "8:4"}, ["layer 'blocks.0.mlp.fc1'", "8:4 needs 0 < N <= M"]),
    ({"blocks.1.mlp.fc2": "3:8"}, ["layer 'blocks.1.mlp.fc2'", "does not support N:M pattern 3:8;",
                                   "supported: 1:4, 2:4"]),
    ({"blocks.1.mlp.fc2": 2}, ["layer 'blocks.1.mlp.fc2'", "expected a pattern string"]),
    (["2:4"], ["expected a JSON object"]),
])
def test_bad_json(deit, tmp_path, content, fragments):
    f = tmp_path / "s.json"
    f.write_text(json.dumps(content))
    with pytest.raises(SparsityError) as e:
        assign(deit, str(f))
    for frag in fragments:
        assert frag in str(e.value)


def test_json_that_does_not_parse_or_is_missing(deit, tmp_path):
    f = tmp_path / "s.json"
    f.write_text("{not json")
    with pytest.raises(SparsityError, match="not valid JSON"):
        assign(deit, str(f))
    with pytest.raises(SparsityError, match="file not found"):
        assign(deit, str(tmp_path / "missing.json"))


def test_k_not_a_multiple_of_m(tmp_path):
    path = tmp_path / "mlp.pt"
    module, example = build_model("mlp_block", {"dim": 36, "hidden": 48, "tokens": 5})
    export_to_file(module, example, path)
    with pytest.raises(SparsityError, match=r"layer 'fc1' has input dimension K = 36, not a "
                                            r"multiple of M = 8"):
        assign(path, "1:8")
    assert assign(path, "1:4") == {"fc1": (1, 4), "fc2": (1, 4)}


@pytest.mark.parametrize("pattern, fragment", [
    ((3, 4), "layer 'blocks.0.mlp.fc2': target 'sta_ref' does not support N:M pattern 3:4; "
             "supported: 1:4, 2:4, 1:8, 2:8, 4:8"),
    ((1, 16), "layer 'blocks.0.mlp.fc2': target 'sta_ref' does not support N:M pattern "
              "1:16"),
])
def test_a_pattern_the_target_lacks_is_refused_before_schedule_tiles(
        deit, tmp_path, capsys, pattern, fragment):
    """A pattern already in the IR (set by hand, or by an earlier `nmc opt`) is checked
    against the target where patterns are set, assign-sparsity, before schedule-tiles
    costs a tiling for it; schedule-tiles run on its own refuses it the same way."""
    ctx = make_context()
    module = import_model(deit, ctx)
    run_pipeline(module, "raise-torch-to-nm", ctx)
    (op,) = [o for o in module.walk()
             if isinstance(o, nm.LinearOp) and o.layer_name == "blocks.0.mlp.fc2"]
    op.set_sparsity(pattern)
    ran = []
    rest = ",".join(DEFAULT_PIPELINE[1:])
    with pytest.raises(SparsityError, match=re.escape(fragment)):
        run_pipeline(module, rest, ctx, lambda name, _m: ran.append(name))
    assert ran == ["input", "window-prune", "fuse-activations"]

    (tmp_path / "nm.mlir").write_text(print_ir(module))
    rc, out, err = cli(capsys, "opt", "-p", "schedule-tiles", tmp_path / "nm.mlir")
    assert rc == 1 and out == ""
    check_one_line(err, fragment)


def test_cli_errors_are_one_line(capsys, deit, tmp_path):
    out = tmp_path / "p.bin"
    rc, _, err = cli(capsys, "compile", deit, "-o", out, "--sparsity", "3:4")
    assert rc == 1
    check_one_line(err, "--sparsity: target 'sta_ref' does not support N:M pattern 3:4; "
                        "supported: 1:4, 2:4, 1:8, 2:8, 4:8")
    rc, _, err = cli(capsys, "compile", deit, "-o", out, "--calib", tmp_path / "x.npy")
    assert rc == 1
    check_one_line(err, "--calib needs --sparsity")
    rc, _, err = cli(capsys, "compile", deit, "-o", out, "--sparsity", "2:4", "--calib",
                     tmp_path / "x.npy")
    assert rc == 1
    check_one_line(err, "--calib is only used by --sparsity elsa")
    assert not out.exists()


def test_cli_uniform_compiles_and_writes_the_config(capsys, deit, tmp_path):
    out, cfg = tmp_path / "p.bin", tmp_path / "s.json"
    rc, _, err = cli(capsys, "compile", deit, "-o", out, "--sparsity", "2:4",
                     "--sparsity-out", cfg)
    assert rc == 0, err
    assert out.exists()
    assert json.loads(cfg.read_text()) == {n: "2:4" for n in BLOCK_LINEARS}

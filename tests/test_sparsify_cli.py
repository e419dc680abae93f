"""`nmc sparsify` and `nmc eval` end to end on small models: the written model and
configuration compile, the emulator's accuracy is PyTorch's for the same pruned model,
runs resume, bad input is one line with no output file."""

import json
import re

import numpy as np
import pytest
import torch

from nmc.cli import main
from nmc.training import run as run_module
from nmc.isa.container import read_program
from nmc.isa.target import load_target
from nmc.models.datasets import load_dataset
from nmc.models.registry import build_model
from nmc.runtime.evaluate import run_classifier

DEIT = ["--set", "dim=32", "--set", "depth=1", "--set", "heads=2"]
SHORT = ["--pretrain-epochs", "2", "--epochs", "1", "--finetune-epochs", "1", "-q"]


def _weights(path):
    return torch.export.load(str(path)).state_dict


@pytest.fixture(scope="module")
def elsa_run(tmp_path_factory):
    d = tmp_path_factory.mktemp("elsa")
    out = d / "deit.pt"
    assert main(["sparsify", "deit_digits", *DEIT, "--budget", "flops=2.5", *SHORT,
                 "-o", str(out), "--report-json", str(d / "report.json")]) == 0
    return d, out


def test_elsa_writes_a_sparse_model_and_its_configuration(elsa_run, capsys):
    d, out = elsa_run
    config = json.loads((d / "deit.sparsity.json").read_text())
    assert sorted(config) == ["blocks.0.attn.proj", "blocks.0.attn.qkv", "blocks.0.mlp.fc1",
                              "blocks.0.mlp.fc2"]
    weights = _weights(out)
    macs, dense_macs = 0.0, 0.0
    for layer, pattern in config.items():
        w = weights[f"{layer}.weight"]
        n, m = (int(x) for x in pattern.split(":")) if pattern != "dense" else (1, 1)
        groups = (w.reshape(w.shape[0], -1, m) != 0).sum(-1)
        assert int(groups.max()) <= n, layer  # the masks are baked into the weights
        macs += w.numel() * n / m
        dense_macs += w.numel()
    head = weights["head.weight"].numel()  # dense, counted in the budget
    assert (dense_macs + head) / (macs + head) >= 2.5
    report = json.loads((d / "report.json").read_text())
    assert report["method"] == "elsa" and report["flops"] >= 2.5
    assert report["config"] == config


def test_elsa_program_accuracy_on_the_emulator_is_pytorchs(elsa_run, capsys):
    d, out = elsa_run
    prog = d / "prog.bin"
    assert main(["compile", str(out), "--sparsity", str(d / "deit.sparsity.json"),
                 "-o", str(prog), "-q"]) == 0
    capsys.readouterr()
    assert main(["eval", str(prog), "--reference", str(out), "--json", str(d / "e.json"),
                 "-q"]) == 0
    text = capsys.readouterr().out
    result = json.loads((d / "e.json").read_text())
    assert result["images"] == 359 and result["agreeing"] == 359
    assert result["accuracy"] == result["reference_accuracy"]
    report = json.loads((d / "report.json").read_text())
    assert result["accuracy"] == report["accuracy"]["test"]  # what sparsify reported
    assert "emulator top-1 on digits/test" in text and "agree on 359/359" in text
    # independently of nmc eval: the program's predictions against the module's own
    data = load_dataset("digits", 16)
    module = torch.export.load(str(out)).module()
    images = data["test"].images[:20]
    with torch.no_grad():
        want = torch.cat([module(x[None]) for x in images]).argmax(-1).numpy()
    got = run_classifier(read_program(prog), load_target(), images.numpy()).predictions
    np.testing.assert_array_equal(got, want)


def test_a_rerun_resumes_from_the_checkpoint(elsa_run, capsys):
    d, out = elsa_run
    before = (d / "deit.sparsity.json").read_text()
    assert main(["sparsify", "deit_digits", *DEIT, "--budget", "flops=2.5", *SHORT,
                 "-o", str(out)]) == 0
    assert "resuming from" in capsys.readouterr().err
    assert (d / "deit.sparsity.json").read_text() == before


def test_another_budget_reuses_the_supernet_and_matches_a_fresh_run(elsa_run, tmp_path,
                                                                    capsys):
    d, fresh = elsa_run  # flops=2.5 from scratch
    args = ["sparsify", "deit_digits", *DEIT, *SHORT]
    ckpt = tmp_path / "shared.ckpt"
    assert main([*args, "--budget", "flops=2", "-o", str(tmp_path / "a.pt"),
                 "--checkpoint", str(ckpt)]) == 0
    capsys.readouterr()
    out = tmp_path / "b.pt"
    assert main([*args, "--budget", "flops=2.5", "-o", str(out), "--checkpoint",
                 str(ckpt)]) == 0
    err = capsys.readouterr().err
    assert "reusing (made for another budget)" in err and "done pretrain, dense, supernet" in err
    assert "pretrain:" not in err and "supernet:" not in err  # not trained again
    assert "finetune:" in err
    assert (tmp_path / "b.sparsity.json").read_text() == \
        (d / "deit.sparsity.json").read_text()
    got, want = _weights(out), _weights(fresh)
    assert all(torch.equal(got[k], want[k]) for k in want)
    # other shared options (the supernet's epochs) are still refused
    more_epochs = [*args[:args.index("--epochs") + 1], "2", *args[args.index("--epochs") + 2:]]
    assert main([*more_epochs, "--budget", "flops=2", "-o", str(out),
                 "--checkpoint", str(ckpt)]) == 1
    assert "other options" in capsys.readouterr().err


def test_an_interrupted_run_leaves_no_output_and_resumes_to_the_same_result(
        tmp_path, monkeypatch, capsys):
    args = ["sparsify", "deit_digits", *DEIT, "--budget", "flops=2", *SHORT]
    assert main([*args, "-o", str(tmp_path / "whole.pt")]) == 0
    saves = []
    real_save = run_module.Run.save

    def save_then_stop(self):
        real_save(self)
        saves.append(1)
        if len(saves) == 3:  # mid-way: after the second pre-training epoch's save
            raise KeyboardInterrupt

    monkeypatch.setattr(run_module.Run, "save", save_then_stop)
    out = tmp_path / "cut.pt"
    assert main([*args, "-o", str(out)]) == 130
    assert not out.exists() and not (tmp_path / "cut.sparsity.json").exists()
    assert (tmp_path / "cut.ckpt").exists()
    monkeypatch.setattr(run_module.Run, "save", real_save)
    assert main([*args, "-o", str(out)]) == 0
    assert "resuming from" in capsys.readouterr().err
    assert (tmp_path / "cut.sparsity.json").read_text() == \
        (tmp_path / "whole.sparsity.json").read_text()
    whole, cut = _weights(tmp_path / "whole.pt"), _weights(out)
    assert all(torch.equal(whole[k], cut[k]) for k in whole)


def test_sparsevit_searches_keep_ratios_and_the_emulator_agrees(tmp_path, capsys):
    out = tmp_path / "swin.pt"
    assert main(["sparsify", "swin_digits", "--set", "embed_dim=8", "--budget",
                 "latency=0.75", *SHORT, "-o", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "of dense" in printed and "compile with: nmc compile" in printed
    keep = json.loads((tmp_path / "swin.window-keep.json").read_text())
    stages = [[f"layers.0.blocks.{j}" for j in range(2)],
              [f"layers.1.blocks.{j}" for j in range(4)]]
    assert sorted(keep) == sorted(b for s in stages for b in s)
    for stage in stages:  # nested per grid parity: the even blocks, the odd ones
        for parity in (stage[0::2], stage[1::2]):
            ratios = [keep[b] for b in parity]
            assert ratios == sorted(ratios, reverse=True) and all(0 < r <= 1 for r in ratios)
    assert min(keep.values()) < 1.0
    prog = tmp_path / "prog.bin"
    assert main(["compile", str(out), "--window-keep", str(tmp_path / "swin.window-keep.json"),
                 "-o", str(prog), "-q"]) == 0
    # the PyTorch reference of the pruned model: nmc's Swin with the ratios set
    model, _ = build_model("swin_digits", {"embed_dim": 8}, seed=0)
    model.load_state_dict(_weights(out))
    model.set_window_keep(keep)
    images = load_dataset("digits", 32)["test"].images[:40]
    with torch.no_grad():
        want = model(images).argmax(-1).numpy()
    got = run_classifier(read_program(prog), load_target(), images.numpy()).predictions
    np.testing.assert_array_equal(got, want)


def test_a_model_file_is_sparsified_as_it_is(tmp_path, capsys):
    model_pt = tmp_path / "m.pt"
    assert main(["export", "deit_digits", *DEIT, "-o", str(model_pt)]) == 0
    before = _weights(model_pt)
    out = tmp_path / "o.pt"
    assert main(["sparsify", str(model_pt), "--budget", "flops=1.5", "--epochs", "1",
                 "--finetune-epochs", "1", "-q", "-o", str(out)]) == 0
    err = capsys.readouterr().err
    assert "pretrain" not in err  # a model file is not trained from scratch
    after = _weights(out)
    assert set(after) == set(before)
    assert not torch.equal(after["blocks.0.mlp.fc1.weight"], before["blocks.0.mlp.fc1.weight"])
    assert main(["compile", str(out), "--sparsity", str(tmp_path / "o.sparsity.json"),
                 "-o", str(tmp_path / "p.bin"), "-q"]) == 0


def test_lr_and_subset_shape_the_run(tmp_path, capsys):
    """--subset: the stated numbers of images; --lr: a learning rate of ~0 leaves the kept
    weights as they were (the default one moves them: the test above), so the option
    reaches both training stages."""
    model_pt = tmp_path / "m.pt"
    assert main(["export", "deit_digits", *DEIT, "-o", str(model_pt)]) == 0
    before = _weights(model_pt)
    out = tmp_path / "o.pt"
    assert main(["sparsify", str(model_pt), "--budget", "flops=2", "--epochs", "1",
                 "--finetune-epochs", "1", "--lr", "1e-12", "--subset", "train=50",
                 "--subset", "val=20", "--subset", "test=30", "-o", str(out)]) == 0
    assert "(50 train / 20 val / 30 test images" in capsys.readouterr().err
    after = _weights(out)
    config = json.loads((tmp_path / "o.sparsity.json").read_text())
    assert any(p != "dense" for p in config.values())
    for layer in config:
        w0, w1 = before[f"{layer}.weight"], after[f"{layer}.weight"]
        kept = w1 != 0
        torch.testing.assert_close(w1[kept], w0[kept], rtol=0, atol=1e-9)
    # another learning rate or subset is another run: the checkpoint is not reused
    assert main(["sparsify", str(model_pt), "--budget", "flops=2", "--epochs", "1",
                 "--finetune-epochs", "1", "--lr", "1e-3", "--subset", "train=50",
                 "--subset", "val=20", "--subset", "test=30", "-o", str(out)]) == 1
    assert "made with other options" in capsys.readouterr().err


def test_distill_teaches_the_sparse_stages_the_model_files_logits(tmp_path, capsys):
    """--distill: the run records the given model's logits on the train images (the
    teacher the supernet and the fine-tune learn, tests/test_sparsify_training.py shows
    that they do) and is another run than one without it."""
    model_pt = tmp_path / "m.pt"
    assert main(["export", "deit_digits", *DEIT, "-o", str(model_pt)]) == 0
    out = tmp_path / "o.pt"
    command = ["sparsify", str(model_pt), "--budget", "flops=2", "--epochs", "1",
               "--finetune-epochs", "1", "--lr", "1e-3", "--subset", "train=50",
               "--subset", "val=20", "--subset", "test=30", "-o", str(out), "-q"]
    assert main([*command, "--distill"]) == 0
    state = torch.load(out.with_suffix(".ckpt"), map_location="cpu", weights_only=True)
    train = load_dataset("digits", 16).subsets({"train": 50})["train"]  # deit_digits: 16x16
    model = torch.export.load(str(model_pt)).module()
    logits = torch.cat([model(x[None]) for x in train.images])  # exported for batch 1
    torch.testing.assert_close(state["results"]["teacher"], logits, rtol=0, atol=1e-5)
    assert main(command) == 1
    assert "made with other options" in capsys.readouterr().err


def test_sparsity_fine_tunes_a_given_configuration(tmp_path, capsys):
    """--sparsity N:M and --sparsity FILE.json: no supernet, no search; the written model
    has the given patterns baked in, the written configuration is the given one, and the
    kept weights moved (the fine-tune ran)."""
    model_pt = tmp_path / "m.pt"
    assert main(["export", "deit_digits", *DEIT, "-o", str(model_pt)]) == 0
    before = _weights(model_pt)
    common = ["--finetune-epochs", "1", "--lr", "1e-3", "--subset", "train=50",
              "--subset", "val=20", "--subset", "test=30", "-q"]
    out = tmp_path / "u.pt"
    assert main(["sparsify", str(model_pt), "--sparsity", "2:4", *common, "-o", str(out),
                 "--report-json", str(tmp_path / "u.json")]) == 0
    assert "supernet" not in capsys.readouterr().err
    config = json.loads((tmp_path / "u.sparsity.json").read_text())
    assert len(config) == 4 and set(config.values()) == {"2:4"}
    report = json.loads((tmp_path / "u.json").read_text())
    assert report["method"] == "given" and report["config"] == config
    assert report["speedup"] > 1.0  # the timing model's linear cycles (tiny layers: ~1.1x)
    # no supernet is trained, so --epochs does not make it another run: the checkpoint's
    # finished fine-tune is reused
    assert main(["sparsify", str(model_pt), "--sparsity", "2:4", *common, "-o", str(out),
                 "--epochs", "7"]) == 0
    err = capsys.readouterr().err
    assert "resuming from" in err and "finetune" in err.split("resuming from")[1], err
    after = _weights(out)
    for layer in config:
        w = after[f"{layer}.weight"]
        assert int((w.reshape(w.shape[0], -1, 4) != 0).sum(-1).max()) <= 2
        assert not torch.equal(w[w != 0], before[f"{layer}.weight"][w != 0])
    # a file naming some layers: those take its patterns, the others stay dense; the head
    # may be named dense (nmc compile's --sparsity FILE.json may name any linear layer)
    given = tmp_path / "given.json"
    given.write_text(json.dumps({"blocks.0.mlp.fc1": "1:4", "blocks.0.attn.qkv": "dense",
                                 "head": "dense"}))
    out = tmp_path / "f.pt"
    assert main(["sparsify", str(model_pt), "--sparsity", str(given), *common,
                 "-o", str(out)]) == 0
    config = json.loads((tmp_path / "f.sparsity.json").read_text())
    assert config == {"blocks.0.attn.qkv": "dense", "blocks.0.attn.proj": "dense",
                      "blocks.0.mlp.fc1": "1:4", "blocks.0.mlp.fc2": "dense"}
    w = _weights(out)["blocks.0.mlp.fc1.weight"]
    assert int((w.reshape(w.shape[0], -1, 4) != 0).sum(-1).max()) <= 1
    assert bool((_weights(out)["blocks.0.mlp.fc2.weight"] != 0).all())
    assert main(["compile", str(out), "--sparsity", str(tmp_path / "f.sparsity.json"),
                 "-o", str(tmp_path / "f.bin"), "-q"]) == 0
    # the head sparse is refused: nmc sparsify trains the transformer blocks' linears
    capsys.readouterr()
    given.write_text(json.dumps({"blocks.0.mlp.fc1": "1:4", "head": "2:4"}))
    assert main(["sparsify", str(model_pt), "--sparsity", str(given), *common,
                 "-o", str(tmp_path / "h.pt")]) == 1
    err = capsys.readouterr().err
    assert "head is not a layer nmc sparsify trains sparse" in err, err
    assert not (tmp_path / "h.pt").exists()


@pytest.mark.parametrize("args, message", [
    (["deit_digits", "--budget", "speed=2"], "expected speedup=S or flops=F"),
    (["deit_digits", "--budget", "speedup=0.5"], "must be a number >= 1"),
    (["deit_digits", "--budget", "latency=1.5"], "in \\(0, 1\\]"),
    (["deit_digits", "--budget", "speedup=x"], "'x' is not a number"),
    (["vit_huge", "--budget", "speedup=2"], "'vit_huge' is neither a model file nor a built-in"),
    (["mlp_block", "--budget", "speedup=2"], "not an image classifier"),
    (["deit_digits", "--budget", "speedup=2", "--data", "nowhere.npz"],
     "no such file or folder"),
    (["deit_digits", "--budget", "speedup=2", "--epochs", "-1"], "must be >= 0"),
    (["deit_digits", "--budget", "speedup=2", "--lr", "0"], "--lr must be a positive number"),
    (["deit_digits"], "give --budget KIND=VALUE .* or --sparsity"),
    (["deit_digits", "--budget", "speedup=2", "--sparsity", "2:4"], "not both"),
    (["deit_digits", "--sparsity", "elsa:speedup=2"], "--sparsity-out FILE.json"),
    (["deit_digits", "--sparsity", "3:4"], "does not support N:M pattern 3:4"),
    (["deit_digits", "--sparsity", "nowhere.json"], "nowhere.json"),
    (["deit_digits", "--budget", "speedup=2", "--lr", "nan"], "--lr must be a positive number"),
    (["deit_digits", "--budget", "speedup=2", "--subset", "trian=5"],
     "expected SPLIT=N with SPLIT one of train, val, test"),
    (["deit_digits", "--budget", "speedup=2", "--subset", "train=0"], "at least 1"),
    (["deit_digits", "--budget", "speedup=2", "--subset", "val=1.5"], "not a whole number"),
    (["deit_digits", "--budget", "speedup=2", "--subset", "val=5", "--subset", "val=6"],
     "--subset val given twice"),
    (["deit_digits", *DEIT, "--budget", "latency=0.5", *SHORT], "deit_digits is not a Swin"),
    (["deit_digits", *DEIT, "--budget", "speedup=50", *SHORT], "no configuration"),
])
def test_bad_input_is_one_line_and_writes_nothing(tmp_path, capsys, args, message):
    out = tmp_path / "out.pt"
    assert main(["sparsify", *args, "-o", str(out)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) >= 1 and err[-1].startswith("nmc: error: ")
    assert re.search(message, err[-1]), err[-1]
    assert not out.exists() and not (tmp_path / "out.sparsity.json").exists()


def test_model_file_errors(tmp_path, capsys):
    model_pt = tmp_path / "m.pt"
    assert main(["export", "deit_digits", *DEIT, "--set", "num_classes=4", "-o",
                 str(model_pt)]) == 0
    assert main(["sparsify", str(model_pt), "--budget", "flops=2", "-o",
                 str(tmp_path / "o.pt")]) == 1
    assert "has 4 outputs but digits has 10 classes" in capsys.readouterr().err
    assert main(["sparsify", str(model_pt), "--set", "dim=8", "--budget", "flops=2", "-o",
                 str(tmp_path / "o.pt")]) == 1
    assert "--set applies to a built-in architecture" in capsys.readouterr().err
    (tmp_path / "junk.pt").write_bytes(b"not a model")
    assert main(["sparsify", str(tmp_path / "junk.pt"), "--budget", "flops=2", "-o",
                 str(tmp_path / "o.pt")]) == 1
    assert "not a torch.export file" in capsys.readouterr().err


def test_eval_refuses_a_program_that_is_not_an_image_classifier(tmp_path, capsys):
    model_pt, prog = tmp_path / "m.pt", tmp_path / "p.bin"
    assert main(["export", "mlp_block", "--set", "dim=16", "--set", "hidden=32",
                 "--set", "tokens=5", "-o", str(model_pt)]) == 0
    assert main(["compile", str(model_pt), "-o", str(prog), "-q"]) == 0
    capsys.readouterr()
    assert main(["eval", str(prog)]) == 1
    assert "needs a program with one image input" in capsys.readouterr().err
    assert main(["eval", str(prog), "--split", "everything"]) == 1
    assert "--split everything: one of train, val, test" in capsys.readouterr().err


def test_eval_runs_a_batched_program_with_a_padded_last_batch(tmp_path):
    """A program traced at batch 2 runs 5 images as 3 runs (the last padded); the
    predictions are PyTorch's, image by image."""
    from nmc.compiler.driver import compile_model
    from nmc.models.registry import export_to_file

    model, example = build_model("deit_digits", {"dim": 32, "depth": 1, "heads": 2,
                                                 "batch": 2}, seed=3)
    path = tmp_path / "b2.pt"
    export_to_file(model, example, path)
    program = compile_model(path)
    images = load_dataset("digits", 16)["val"].images[:5]
    result = run_classifier(program, load_target(), images.numpy())
    with torch.no_grad():
        want = model(images)
    assert result.batch == 2 and result.logits.shape == (5, 10)
    np.testing.assert_allclose(result.logits, want.numpy(), rtol=1e-4, atol=1e-5)
    np.testing.assert_array_equal(result.predictions, want.argmax(-1).numpy())

"""The searches over a Dask cluster (`nmc compile / sparsify --workers N / --scheduler`):
ELSA's sensitivities and SparseViT's candidate scores spread over a LocalCluster of 2
workers give the serial run's numbers bit for bit, hence the same chosen configuration
and the same files; a worker's error is one line; bad combinations of options are refused;
without the options Dask is not imported."""

import json
import pickle
import subprocess
import sys

import numpy as np
import pytest
import torch

from nmc.cli import main
from nmc.common.cluster import batch_scorer, dask_client, offered
from nmc.common.observer import Observer
from nmc.compiler.driver import compile_model
from nmc.compiler.frontend import import_model
from nmc.compiler.pipeline import make_context, run_pipeline
from nmc.compiler.frontend.weights import WeightStore
from nmc.compiler.sparsity import sensitivity, sparsevit
from nmc.compiler.sparsity.elsa import SearchSize
from nmc.compiler.sparsity.sensitivity import load_calibration
from nmc.compiler.transforms.assign_sparsity import elsa_config
from nmc.isa.container import program_to_bytes
from nmc.isa.target import load_target
from nmc.models.datasets import Dataset, Split, load_dataset
from nmc.models.nm_sparsity import nm_mask
from nmc.models.registry import build_model, export_to_file
from nmc.training import elsa_flow, sparsevit_flow
from nmc.training.run import Epochs, Run
from nmc.training.subject import PortableModule, from_arch, from_file

from cluster_helpers import raising_on_workers

TINY = ["--set", "img_size=32", "--set", "patch=8", "--set", "dim=64", "--set", "depth=2",
        "--set", "heads=2", "--set", "num_classes=10"]


@pytest.fixture(scope="module")
def client():
    with dask_client(workers=2) as c:
        yield c


@pytest.fixture(scope="module")
def deit(tmp_path_factory):
    """A tiny DeiT (8 block linears) as a torch.export file."""
    path = tmp_path_factory.mktemp("dsearch") / "deit.pt"
    assert main(["export", "deit_tiny", *TINY, "-o", str(path)]) == 0
    return path


def _compile(path, name, *extra, spec="elsa:speedup=1.5"):
    prog, cfg = path.with_name(f"{name}.bin"), path.with_name(f"{name}.json")
    assert main(["compile", str(path), "-o", str(prog), "--sparsity", spec,
                 "--sparsity-out", str(cfg), "-q", *extra]) == 0
    return prog.read_bytes(), cfg.read_text()


def test_compile_elsa_with_workers_2_writes_the_serial_files(deit, capsys):
    path = deit
    serial = _compile(path, "serial")
    serial_table = capsys.readouterr().out
    spread = _compile(path, "workers", "--workers", "2")
    assert spread == serial  # prog.bin and the sparsity JSON, byte for byte
    assert capsys.readouterr().out == serial_table  # the errors the table prints too
    assert any(p != "dense" for p in json.loads(serial[1]).values())


def test_compile_int8_elsa_over_the_cluster_writes_the_serial_files(deit, client, capsys):
    """On an int8 target the workers measure the quantized model: the int8 layers and the
    calibration observer travel with the program."""
    path = deit
    calib = path.with_name("calib.npy")
    np.save(calib, np.random.default_rng(0).standard_normal((3, 1, 3, 32, 32), np.float32))
    options = ["--target", "sta_int8", "--calib", str(calib), "--calib-observer", "mse"]
    serial = _compile(path, "int8-serial", *options)
    serial_table = capsys.readouterr().out
    spread = _compile(path, "int8-spread", *options, "--scheduler", client.scheduler.address)
    assert spread == serial and capsys.readouterr().out == serial_table


def test_compile_elsa_rank_joint_over_the_cluster_writes_the_serial_files(deit, client,
                                                                          capsys):
    """rank=joint: the workers score whole configurations (joint errors), a generation
    at a time; the search's choice, and so the files, are the serial ones."""
    serial = _compile(deit, "joint-serial", spec="elsa:speedup=1.5,rank=joint")
    serial_table = capsys.readouterr().out
    spread = _compile(deit, "joint-spread", "--scheduler", client.scheduler.address,
                      spec="elsa:speedup=1.5,rank=joint")
    assert spread == serial and capsys.readouterr().out == serial_table
    assert "joint error" in serial_table


def _elsa_rows(path):
    ctx = make_context()
    module = import_model(path, ctx)
    run_pipeline(module, "raise-torch-to-nm", ctx)
    return elsa_config(module, "speedup", 1.5, "", load_target())[1]


def test_sensitivities_over_the_cluster_are_the_serial_ones_and_pytorchs(deit, client):
    path = deit
    serial = _elsa_rows(path)
    inputs = load_calibration("", (1, 3, 32, 32))  # the default ones: what compile uses
    with offered(scheduler=client.scheduler.address):
        spread = _elsa_rows(path)
        # and what the workers measure is PyTorch's error: a layer's most harmful pattern
        # (the probe of `sensitivity`, measured exactly) masked in the PyTorch model
        layer, patterns = "blocks.1.mlp.fc1", [None, (2, 4), (1, 4), (1, 8)]
        store = WeightStore.from_file(path)
        with batch_scorer(lambda: None,
                          lambda: sensitivity.remote(store, inputs, None, Observer()),
                          desc="test") as errors_of:
            (errors,) = errors_of([(f"{layer}.weight", patterns)])
    assert spread == serial  # every layer's error, bit for bit
    assert errors[0] == 0.0 and min(errors[1:]) > 0
    probe = patterns[int(np.argmax(errors))]
    module = torch.export.load(str(path)).module()
    w = dict(module.named_parameters())[f"{layer}.weight"]
    with torch.no_grad():
        want = torch.cat([module(x) for x in inputs])
        w.mul_(nm_mask(w, *probe).float())
        got = torch.cat([module(x) for x in inputs])
    exact = float((got - want).double().norm() / want.double().norm())
    assert max(errors) == pytest.approx(exact, rel=1e-4)


def test_compile_window_search_over_the_cluster_writes_the_serial_files(client, tmp_path,
                                                                        monkeypatch):
    monkeypatch.setattr(sparsevit, "GENERATIONS", 2)  # the search runs here: its sizes too
    monkeypatch.setattr(sparsevit, "POPULATION", 8)
    module, example = build_model("swin_micro", {}, seed=0)
    export_to_file(module, example, tmp_path / "swin.pt")
    runs = []
    for cluster in ({}, {"scheduler": client.scheduler.address}):
        out = tmp_path / f"keep{len(runs)}.json"
        with offered(**cluster):
            program = compile_model(tmp_path / "swin.pt", window={
                "keep": "sparsevit:latency=0.8", "out": str(out)})
        runs.append((program_to_bytes(program), out.read_text()))
    assert runs[1] == runs[0]
    assert min(json.loads(runs[0][1]).values()) < 1.0


def test_sparsify_elsa_over_the_cluster_chooses_the_serial_configuration(client, tmp_path,
                                                                         monkeypatch):
    monkeypatch.setattr(elsa_flow, "SEARCH_SIZE", SearchSize(8, 3, 4, 3, 3))  # it runs here
    outputs = []
    for extra in ([], ["--scheduler", client.scheduler.address]):
        out = tmp_path / f"o{len(outputs)}.pt"
        assert main(["sparsify", "deit_digits", "--set", "dim=32", "--set", "depth=1",
                     "--set", "heads=2", "--budget", "flops=2", "--pretrain-epochs", "0",
                     "--epochs", "0", "--finetune-epochs", "0", "-q", "-o", str(out),
                     *extra]) == 0
        search = torch.load(out.with_suffix(".ckpt"), weights_only=True)["results"]["search"]
        outputs.append((out.with_name(out.stem + ".sparsity.json").read_text(), search,
                        out.read_bytes()))
    (config, search, model), (config2, search2, model2) = outputs
    assert config2 == config and search2 == search  # the choice, its val score, the sensitivity
    assert model2 == model  # the model file (masks baked in), byte for byte
    assert search["evaluated"] > 8 and any(p != "dense" for p in json.loads(config).values())


def test_a_model_file_travels_to_the_workers_with_its_current_weights(tmp_path):
    """What a worker builds from `PortableModule` (pickled, as Dask sends it) computes
    what the module it was taken from computes: a torch.export file's graph, from the
    file's bytes, with the weights as training left them."""
    model = tmp_path / "m.pt"
    assert main(["export", "deit_digits", "--set", "dim=32", "--set", "depth=1", "--set",
                 "heads=2", "-o", str(model)]) == 0
    subject = from_file(model)
    with torch.no_grad():
        for p in subject.module.parameters():
            p.add_(0.01 * torch.randn(p.shape, generator=torch.Generator().manual_seed(1)))
    portable = pickle.loads(pickle.dumps(PortableModule.of(subject.origin, subject.module)))
    model.unlink()  # the workers need no file
    rebuilt = portable.module()
    images = load_dataset("digits", subject.img_size)["val"].images[:5]
    with torch.no_grad():
        assert torch.equal(rebuilt(images), subject.module(images))


def test_sparsevit_search_over_the_cluster_chooses_the_serial_configuration(client,
                                                                            monkeypatch):
    monkeypatch.setattr(sparsevit, "GENERATIONS", 2)
    monkeypatch.setattr(sparsevit, "POPULATION", 8)
    data = load_dataset("digits", 32)
    small = Dataset(data.name, data.classes, data.img_size,
                    {s: Split(data[s].images[:48], data[s].labels[:48]) for s in data.splits})
    subject = from_arch("swin_digits", {"embed_dim": 8}, data.num_classes, 0)
    latency, stages = sparsevit_flow.window_latency(subject, load_target())
    results = []
    for cluster in ({}, {"scheduler": client.scheduler.address}):
        run = Run(subject.module, None, {}, 0, log=lambda s: None)
        adapted = sparsevit_flow.Adapted(subject.module, latency, stages, {},
                                         origin=subject.origin)
        with offered(**cluster):
            outcome = sparsevit_flow.search_and_finetune(run, adapted, small, 0.75,
                                                         Epochs(0, 0, 0), log=lambda s: None)
        results.append((outcome.config, run.result("search")))
    assert results[1] == results[0]
    assert min(results[0][0].values()) < 1.0


def test_a_worker_error_is_one_line_and_writes_nothing(deit, client, capsys):
    path = deit
    prog = path.with_name("failed.bin")
    with raising_on_workers(client, "nmc.compiler.sparsity.sensitivity.Sensitivity.errors",
                            RuntimeError("out of luck\nsecond line")):
        status = main(["compile", str(path), "-o", str(prog), "--sparsity",
                       "elsa:speedup=1.5", "--scheduler", client.scheduler.address])
    err = capsys.readouterr().err
    assert status == 1 and not prog.exists()
    assert err.startswith("nmc: error: layer sensitivity of blocks.") and err.count("\n") == 1
    assert "failed on a Dask worker: RuntimeError: out of luck second line" in err
    assert "Traceback" not in err


@pytest.mark.parametrize("args, message", [
    (["compile", "{d}/deit.pt", "-o", "{d}/x.bin", "--sparsity", "elsa:speedup=1.5",
      "--workers", "2", "--scheduler", "tcp://127.0.0.1:8786"], "not both"),
    (["compile", "{d}/deit.pt", "-o", "{d}/x.bin", "--sparsity", "2:4", "--workers", "2"],
     "this compile runs neither"),
    (["sparsify", "deit_digits", "--budget", "flops=2", "-o", "{d}/x.pt", "--workers", "2",
      "--scheduler", "tcp://127.0.0.1:8786"], "not both"),
    (["sparsify", "deit_digits", "--budget", "flops=2", "-o", "{d}/x.pt", "--workers", "2",
      "--nproc", "2"], "give --nproc N or --workers/--scheduler, not both"),
])
def test_bad_cluster_options_are_one_line(deit, capsys, args, message):
    d = deit.parent
    assert main([a.format(d=d) for a in args]) == 1
    err = capsys.readouterr().err
    assert err.startswith("nmc: error: ") and message in err and err.count("\n") == 1
    assert not (d / "x.bin").exists() and not (d / "x.pt").exists()


def test_a_serial_search_imports_no_dask(deit, tmp_path):
    code = ("import sys; from nmc.cli import main; "
            f"assert main(['compile', {str(deit)!r}, '-o', 'p.bin', '--sparsity', "
            "'elsa:speedup=1.5', '-q']) == 0; "
            "assert not [m for m in sys.modules if m.split('.')[0] in ('dask', 'distributed')]")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=tmp_path,
                   stdout=subprocess.DEVNULL)

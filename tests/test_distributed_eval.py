"""`nmc eval --workers N / --scheduler`: the data set sharded over a Dask LocalCluster gives
the predictions of the serial run, in data-set order (and PyTorch's); a worker killed
mid-run loses nothing; a worker's error is one line; without the options nothing starts."""

import json
import os
import signal
import subprocess
import sys

import cloudpickle
import numpy as np
import pytest
import torch
from distributed import WorkerPlugin

from nmc.cli import main
from nmc.common.cluster import dask_client
from nmc.compiler.driver import compile_model
from nmc.isa.container import program_to_bytes, read_program, write_program
from nmc.isa.target import load_target
from nmc.models.datasets import load_dataset
from nmc.models.registry import build_model, export_to_file
from nmc.runtime.distributed_eval import run_classifier_sharded, shard_bounds
from nmc.runtime.evaluate import run_classifier

from cluster_helpers import raising_on_workers

# the worker plugins below travel to the worker processes by value (they cannot import tests/)
cloudpickle.register_pickle_by_value(sys.modules[__name__])

IMAGES = 37  # with batch 2: shards of even length and a padded last batch


@pytest.fixture(scope="module")
def classifier(tmp_path_factory):
    """A digits DeiT traced at batch 2, compiled: (its module, prog.bin path)."""
    d = tmp_path_factory.mktemp("dist")
    model, example = build_model("deit_digits", {"dim": 32, "depth": 1, "heads": 2,
                                                 "batch": 2}, seed=5)
    export_to_file(model, example, d / "m.pt")
    write_program(compile_model(d / "m.pt"), d / "p.bin")
    return model, d / "p.bin"


@pytest.fixture(scope="module")
def client():
    with dask_client(workers=2) as c:
        yield c


def _images(n=IMAGES):
    data = load_dataset("digits", 16)["test"]
    return data.images[:n].numpy(), data.labels[:n].numpy()


def test_shards_are_contiguous_batch_multiples_covering_every_image():
    for count, batch, shards in [(37, 2, 8), (5, 4, 8), (1, 1, 4), (100, 1, 3), (8, 8, 2)]:
        bounds = shard_bounds(count, batch, shards)
        assert bounds[0][0] == 0 and bounds[-1][1] == count and len(bounds) <= shards
        assert all(hi == lo for (_, hi), (lo, _) in zip(bounds, bounds[1:]))
        assert all((hi - lo) % batch == 0 for lo, hi in bounds[:-1])
    assert shard_bounds(0, 2, 4) == []


def test_sharded_logits_are_the_serial_ones_bit_for_bit(classifier, client):
    model, prog = classifier
    program, target = read_program(prog), load_target()
    images, _ = _images()
    serial = run_classifier(program, target, images)
    sharded = run_classifier_sharded(client, program, program_to_bytes(program), target, images)
    assert sharded.logits.tobytes() == serial.logits.tobytes()
    assert sharded.cycles_per_run == serial.cycles_per_run and sharded.batch == 2
    with torch.no_grad():  # and they are PyTorch's predictions, in data-set order
        want = model(torch.from_numpy(np.concatenate([images, images[:1]]))).argmax(-1)
    np.testing.assert_array_equal(sharded.predictions, want.numpy()[:IMAGES])


def test_eval_workers_2_records_the_predictions_of_workers_1(classifier, tmp_path, capsys):
    _, prog = classifier
    runs = {}
    for workers in ("1", "2"):
        out = tmp_path / f"w{workers}.json"
        assert main(["eval", str(prog), "--limit", str(IMAGES), "--workers", workers,
                     "--json", str(out), "-q"]) == 0
        runs[workers] = json.loads(out.read_text())
    assert runs["1"] == runs["2"]
    predictions = runs["1"]["predictions"]
    _, labels = _images()
    assert len(predictions) == IMAGES
    assert runs["1"]["accuracy"] == float(np.mean(np.array(predictions) == labels))


class KillOnce(WorkerPlugin):
    """Kills the worker process (SIGKILL, no clean-up) as it starts its first eval task;
    the marker file makes it happen once in the whole cluster."""

    def __init__(self, marker):
        self.marker = str(marker)

    def transition(self, key, start, finish, **kwargs):
        if finish == "executing" and str(key).startswith("nmc-eval"):
            try:
                fd = os.open(self.marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            except FileExistsError:
                return
            os.close(fd)
            os.kill(os.getpid(), signal.SIGKILL)


def test_a_worker_killed_mid_run_loses_nothing(classifier, client, tmp_path, capsys):
    _, prog = classifier
    marker = tmp_path / "killed"
    client.register_plugin(KillOnce(marker), name="kill-once")
    try:
        out = tmp_path / "e.json"
        assert main(["eval", str(prog), "--limit", str(IMAGES), "--json", str(out), "-q",
                     "--scheduler", client.scheduler.address]) == 0
    finally:
        client.unregister_worker_plugin("kill-once")
    assert marker.exists()  # a worker did die running a shard
    program = read_program(prog)
    serial = run_classifier(program, load_target(), _images()[0])
    assert json.loads(out.read_text())["predictions"] == serial.predictions.tolist()


@pytest.mark.parametrize("error, message", [
    (RuntimeError("disk on fire\nsecond line"),
     "failed on a Dask worker: RuntimeError: disk on fire second line"),
    (None, "input 'x' has NaN"),  # an EmulatorError: nmc's own message, as it is
])
def test_a_worker_error_is_one_line(classifier, client, tmp_path, capsys, error, message):
    from nmc.runtime.errors import EmulatorError

    _, prog = classifier
    error = error if error is not None else EmulatorError("input 'x' has NaN")
    out = tmp_path / "e.json"
    with raising_on_workers(client, "nmc.runtime.emulator.LoadedProgram.run", error):
        status = main(["eval", str(prog), "--limit", "9", "--json", str(out),
                       "--scheduler", client.scheduler.address])
    err = capsys.readouterr().err
    assert status == 1 and not out.exists()
    assert err.startswith("nmc: error: ") and err.count("\n") == 1, err
    assert message in err and "Traceback" not in err


def test_a_task_that_kills_every_worker_is_one_line(classifier, client, tmp_path, capsys):
    """Dask gives up on a task after its workers died allowed-failures + 1 times (here 0)."""
    _, prog = classifier
    scheduler = client.cluster.scheduler
    allowed, scheduler.allowed_failures = scheduler.allowed_failures, 0
    client.register_plugin(KillOnce(tmp_path / "killed"), name="kill-once")
    try:
        status = main(["eval", str(prog), "--limit", "9", "--scheduler",
                       client.scheduler.address])
    finally:
        client.unregister_worker_plugin("kill-once")
        scheduler.allowed_failures = allowed
    err = capsys.readouterr().err
    assert status == 1 and err.count("\n") == 1, err
    assert err.startswith("nmc: error: images ") and "Dask workers died" in err


def test_bad_cluster_options_are_one_line(classifier, capsys):
    _, prog = classifier
    for args, message in [
        (["--workers", "2", "--scheduler", "tcp://127.0.0.1:8786"], "not both"),
        (["--scheduler", "localhost:8786"], "as tcp://HOST:PORT"),
    ]:
        assert main(["eval", str(prog), *args]) == 1
        err = capsys.readouterr().err
        assert err.startswith("nmc: error: ") and message in err and err.count("\n") == 1
    with pytest.raises(SystemExit) as e:  # argparse's own check: status 2
        main(["eval", str(prog), "--workers", "0"])
    assert e.value.code == 2 and "must be a positive integer" in capsys.readouterr().err


def test_workers_1_starts_no_cluster(classifier, tmp_path):
    """Without --workers N > 1 / --scheduler, Dask is not even imported."""
    _, prog = classifier
    code = ("import sys; from nmc.cli import main; "
            f"assert main(['eval', {str(prog)!r}, '--limit', '3', '-q']) == 0; "
            "assert not [m for m in sys.modules if m.split('.')[0] in ('dask', 'distributed')]")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=tmp_path)


def test_an_unreachable_scheduler_is_one_line(classifier, monkeypatch, capsys):
    import socket

    from nmc.common import cluster

    monkeypatch.setattr(cluster, "CONNECT_TIMEOUT_S", 1)
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    _, prog = classifier
    assert main(["eval", str(prog), "--scheduler", f"tcp://127.0.0.1:{port}"]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"nmc: error: cannot reach the Dask scheduler at tcp://127.0.0.1:"
                          f"{port}: ") and err.count("\n") == 1

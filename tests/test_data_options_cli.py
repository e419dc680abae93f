"""`--data` / `--normalize` of `nmc eval` and `nmc sparsify`: an IDX folder (the format of
Fashion-MNIST) is resized to the model's input and normalised with ImageNet's statistics
when asked; the images the emulator gets are computed here from the files' bytes; a missing
data set or a bad option is one error line."""

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import nmc.models.datasets as datasets
import nmc.runtime.evaluate as evaluate
from nmc.cli import main
from nmc.models.registry import build_model, export_to_file
from test_datasets_idx import make_idx_set

TINY = {"dim": 32, "depth": 1, "heads": 2, "num_classes": 3}
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def expected_images(raw: np.ndarray, size: int) -> torch.Tensor:
    """uint8 [n, h, w] -> what a pretrained model takes: [0, 1], bilinear resize to size,
    3 channels, ImageNet mean / std."""
    x = torch.from_numpy(raw.astype(np.float32) / 255)[:, None]
    x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
    x = x.expand(-1, 3, -1, -1)
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    return (x - mean) / std


@pytest.fixture(scope="module")
def compiled(tmp_path_factory):
    d = tmp_path_factory.mktemp("idx_eval")
    arrays = make_idx_set(d / "idx", n_train=72, n_test=21, size=6, compress=True)
    model, example = build_model("deit_digits", TINY, seed=5)
    export_to_file(model, example, d / "m.pt")
    assert main(["compile", str(d / "m.pt"), "-o", str(d / "p.bin"), "-q"]) == 0
    return d, arrays, model


def test_eval_on_an_idx_folder_with_imagenet_normalisation(compiled, monkeypatch):
    d, arrays, model = compiled
    seen = []
    run = evaluate.run_classifier

    def spy(program, target, images):
        seen.append(images)
        return run(program, target, images)

    monkeypatch.setattr(evaluate, "run_classifier", spy)
    assert main(["eval", str(d / "p.bin"), "--data", str(d / "idx"), "--normalize",
                 "imagenet", "--reference", str(d / "m.pt"), "--json",
                 str(d / "r.json"), "-q"]) == 0
    want = expected_images(arrays["t10k-images-idx3-ubyte"], 16)
    np.testing.assert_allclose(seen[0], want.numpy(), atol=1e-5)
    with torch.no_grad():
        predictions = model(want).argmax(-1).numpy()
    labels = arrays["t10k-labels-idx1-ubyte"]
    report = json.loads((d / "r.json").read_text())
    assert report["images"] == 21 and report["normalize"] == "imagenet"
    assert report["accuracy"] == pytest.approx(np.mean(predictions == labels))
    assert report["agreeing"] == 21


def test_eval_without_normalize_uses_the_training_split_statistics(compiled, monkeypatch):
    d, arrays, _ = compiled
    seen = []
    run = evaluate.run_classifier
    monkeypatch.setattr(evaluate, "run_classifier",
                        lambda p, t, images: seen.append(images) or run(p, t, images))
    assert main(["eval", str(d / "p.bin"), "--data", str(d / "idx"), "-q"]) == 0
    imagenet = expected_images(arrays["t10k-images-idx3-ubyte"], 16).numpy()
    assert not np.allclose(seen[0], imagenet, atol=1e-2)
    # normalised by the train split: its images have mean ~0 per channel
    train = datasets.load_dataset(str(d / "idx"), 16)["train"].images
    assert abs(float(train.mean())) < 1e-4


def test_a_missing_fashion_mnist_is_one_error_line(compiled, monkeypatch, capsys):
    d, _, _ = compiled
    monkeypatch.setattr(datasets, "FASHION_MNIST_DIR", d / "absent")
    for argv in (["eval", str(d / "p.bin"), "--data", "fashion-mnist"],
                 ["sparsify", "deit_digits", "--data", "fashion-mnist", "--budget",
                  "flops=2", "-o", str(d / "never.pt")]):
        capsys.readouterr()
        assert main(argv) == 1
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("nmc: error: --data fashion-mnist: ")
        assert "apt-get install dataset-fashion-mnist" in err[0]
    assert not (d / "never.pt").exists()


def test_a_bad_normalize_is_one_error_line(compiled, capsys):
    d, _, _ = compiled
    assert main(["eval", str(d / "p.bin"), "--data", str(d / "idx"), "--normalize",
                 "imagenette"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["nmc: error: --normalize imagenette: expected one of dataset, imagenet"]


def test_sparsify_reads_an_idx_folder_normalised_as_asked(tmp_path, monkeypatch, capsys):
    make_idx_set(tmp_path / "idx", n_train=72, n_test=21, size=6)
    calls = []
    load = datasets.load_dataset
    monkeypatch.setattr(datasets, "load_dataset",
                        lambda *a, **k: calls.append((a, k)) or load(*a, **k))
    out = tmp_path / "o.pt"
    args = ["sparsify", "deit_digits", "--set", "dim=32", "--set", "depth=1", "--set",
            "heads=2", "--data", str(tmp_path / "idx"), "--budget", "flops=1.5",
            "--pretrain-epochs", "1", "--epochs", "1", "--finetune-epochs", "1", "-q"]
    assert main([*args, "--normalize", "imagenet", "-o", str(out)]) == 0
    assert calls[0][0] == (str(tmp_path / "idx"), 16, "imagenet")
    assert "(60 train / 12 val / 21 test images, 16x16)" in capsys.readouterr().err
    assert out.exists() and (tmp_path / "o.sparsity.json").exists()
    # the normalisation is part of the run: its checkpoint does not resume under another
    assert main([*args, "-o", str(out)]) == 1
    assert "made with other options" in capsys.readouterr().err

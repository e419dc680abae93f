"""IDX data sets (the MNIST family's format; Fashion-MNIST): the test writes its own small
IDX files byte by byte, from the format's definition, and checks what load_dataset makes of
them; large sets are resized batch by batch with the same values."""

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

import nmc.models.datasets as datasets
from nmc.models.datasets import DatasetError, load_dataset, read_idx


def write_idx(path: Path, array: np.ndarray, compress: bool = False) -> None:
    """IDX: 0x00 0x00, type 0x08 (uint8), number of dims, each dim big-endian uint32."""
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim)
    header += b"".join(struct.pack(">I", d) for d in array.shape)
    data = header + array.astype(np.uint8).tobytes()
    if compress:
        path = path.with_name(path.name + ".gz")
        data = gzip.compress(data)
    path.write_bytes(data)


def make_idx_set(folder: Path, n_train: int = 72, n_test: int = 21, size: int = 6,
                 compress: bool = False, seed: int = 0, classes: int = 3
                 ) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    arrays = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (n_train, size, size)),
        "train-labels-idx1-ubyte": np.arange(n_train) % classes,
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (n_test, size, size)),
        "t10k-labels-idx1-ubyte": np.arange(n_test) % classes,
    }
    folder.mkdir(parents=True, exist_ok=True)
    for name, array in arrays.items():
        write_idx(folder / name, array, compress)
    return arrays


@pytest.mark.parametrize("compress", [False, True])
def test_idx_folder_keeps_its_own_test_set(tmp_path, compress):
    arrays = make_idx_set(tmp_path, compress=compress)
    d = load_dataset(str(tmp_path), img_size=6)
    assert d.num_classes == 3
    assert len(d["test"]) == 21 and len(d["train"]) + len(d["val"]) == 72
    # val: a sixth of the training set, stratified (4 of each class's 24)
    assert torch.bincount(d["val"].labels, minlength=3).tolist() == [4, 4, 4]
    # the test split is the t10k files, in order: undo the normalisation to compare pixels
    test = d["test"].images[:, 0]
    pixels = arrays["t10k-images-idx3-ubyte"].astype(np.float32) / 255
    scale = (test[1] - test[0]).flatten() / torch.from_numpy(pixels[1] - pixels[0]).flatten()
    scale = scale[torch.isfinite(scale)].median()
    shift = test[0, 0, 0] - scale * pixels[0, 0, 0]
    np.testing.assert_allclose(test.numpy(), scale.item() * pixels + shift.item(), atol=1e-4)
    np.testing.assert_array_equal(d["test"].labels.numpy(), arrays["t10k-labels-idx1-ubyte"])


def test_imagenet_normalisation_of_a_grey_image(tmp_path):
    arrays = make_idx_set(tmp_path)
    d = load_dataset(str(tmp_path), img_size=6, normalization="imagenet")
    pixel = arrays["t10k-images-idx3-ubyte"][0, 2, 3] / 255
    got = d["test"].images[0, :, 2, 3]
    want = [(pixel - m) / s for m, s in ((0.485, 0.229), (0.456, 0.224), (0.406, 0.225))]
    np.testing.assert_allclose(got.numpy(), want, rtol=1e-5)


@pytest.mark.parametrize("normalization", ["dataset", "imagenet"])
def test_lazy_resizing_gives_the_same_images(tmp_path, monkeypatch, normalization):
    make_idx_set(tmp_path)
    eager = load_dataset(str(tmp_path), img_size=12, normalization=normalization)
    monkeypatch.setattr(datasets, "MAX_RESIZED_BYTES", 0)
    lazy = load_dataset(str(tmp_path), img_size=12, normalization=normalization)
    assert isinstance(lazy["train"].images, datasets.LazyImages)
    for split in ("train", "val", "test"):
        assert lazy[split].images.shape == eager[split].images.shape
        np.testing.assert_allclose(lazy[split].images[:].numpy(),
                                   eager[split].images.numpy(), atol=1e-5)
    index = torch.tensor([3, 0, 7])
    np.testing.assert_allclose(lazy["train"].images[index].numpy(),
                               eager["train"].images[index].numpy(), atol=1e-5)


def test_missing_fashion_mnist_says_how_to_get_it(monkeypatch, tmp_path):
    monkeypatch.setattr(datasets, "FASHION_MNIST_DIR", tmp_path / "absent")
    with pytest.raises(DatasetError, match="apt-get install dataset-fashion-mnist"):
        load_dataset("fashion-mnist", img_size=28)


def test_fashion_mnist_reads_the_debian_package_folder(monkeypatch, tmp_path):
    make_idx_set(tmp_path, n_train=120, n_test=30, compress=True, classes=10)
    monkeypatch.setattr(datasets, "FASHION_MNIST_DIR", tmp_path)
    d = load_dataset("fashion-mnist", img_size=6)
    assert d.classes[:2] == ["T-shirt/top", "Trouser"] and len(d["test"]) == 30


@pytest.mark.parametrize("damage, message", [
    (lambda b: b"\x01" + b[1:], "not an IDX file"),
    (lambda b: b[:2] + b"\x0d" + b[3:], "element type 0x0d"),
    (lambda b: b[:-1], "holds"),
    (lambda b: b[:6], "truncated IDX header"),
])
def test_damaged_idx_files_are_one_line_errors(tmp_path, damage, message):
    make_idx_set(tmp_path)
    f = tmp_path / "train-images-idx3-ubyte"
    f.write_bytes(damage(f.read_bytes()))
    with pytest.raises(DatasetError, match=message) as info:
        load_dataset(str(tmp_path), img_size=6)
    assert "\n" not in str(info.value)


def test_a_missing_idx_file_is_named(tmp_path):
    make_idx_set(tmp_path)
    (tmp_path / "t10k-labels-idx1-ubyte").unlink()
    with pytest.raises(DatasetError, match="t10k-labels-idx1-ubyte"):
        load_dataset(str(tmp_path), img_size=6)


def test_read_idx_reads_the_header_dims(tmp_path):
    write_idx(tmp_path / "x", np.arange(24).reshape(2, 3, 4))
    got = read_idx(tmp_path / "x")
    assert got.shape == (2, 3, 4) and got[1, 2, 3] == 23

"""models/datasets.py: digits, ImageFolder trees and .npz files become the same split,
normalised data set; bad input is a one-line DatasetError."""

import numpy as np
import pytest
import torch
from PIL import Image

from nmc.models.datasets import DatasetError, load_dataset, stratified_split


def test_digits_split_is_stratified_disjoint_and_fixed():
    from sklearn.datasets import load_digits

    d = load_dataset("digits", img_size=16)
    assert d.num_classes == 10 and d.img_size == 16
    sizes = {s: len(d[s]) for s in ("train", "val", "test")}
    assert sum(sizes.values()) == 1797 and sizes == {"train": 1079, "val": 359, "test": 359}
    assert d["train"].images.shape == (1079, 3, 16, 16)
    # the training split is normalised per channel; grey is repeated over channels
    mean = d["train"].images.mean(dim=(0, 2, 3))
    assert torch.allclose(mean, torch.zeros(3), atol=1e-4)
    assert torch.equal(d["test"].images[:, 0], d["test"].images[:, 2])
    # every class in each split, in about the same proportion
    for s in ("train", "val", "test"):
        counts = torch.bincount(d[s].labels, minlength=10).float()
        assert counts.min() > 0 and counts.max() / counts.min() < 1.2
    # split indices are disjoint, cover everything, and do not depend on a run's seed
    labels = load_digits().target
    idx = stratified_split(labels)
    all_idx = np.concatenate(list(idx.values()))
    assert len(np.unique(all_idx)) == len(labels) == len(all_idx)
    again = load_dataset("digits", img_size=16)
    assert torch.equal(again["test"].images, d["test"].images)
    # labels follow their images: the test split's labels are the digits' own
    np.testing.assert_array_equal(d["test"].labels.numpy(), labels[idx["test"]])


def test_upsampling_keeps_the_picture():
    """The 16x16 image is the 8x8 digit upsampled: pooling it back gives nearly the
    original (up to the normalisation and bilinear blur), so the models see the digit."""
    from sklearn.datasets import load_digits

    d = load_dataset("digits", img_size=16)
    raw = torch.from_numpy(load_digits().images[stratified_split(load_digits().target)["val"]])
    pooled = torch.nn.functional.avg_pool2d(d["val"].images[:, :1], 2)[:, 0]
    def corr(a, b):
        return np.corrcoef(a.flatten().numpy(), b.flatten().numpy())[0, 1]

    assert corr(pooled, raw) > 0.97
    assert corr(pooled, raw.roll(1, dims=0)) < 0.6  # another image each: not alike


def _blobs(n_per_class=6, size=10):
    """Class 0: bright top half; class 1: bright bottom half."""
    images, labels = [], []
    for c in range(2):
        for i in range(n_per_class):
            img = np.full((size, size), 20, np.uint8)
            rows = slice(0, size // 2) if c == 0 else slice(size // 2, size)
            img[rows] = 200 + i
            images.append(img)
            labels.append(c)
    return np.stack(images), np.array(labels)


def test_image_folder_and_npz_agree(tmp_path):
    images, labels = _blobs()
    root = tmp_path / "folder"
    for c, name in enumerate(("bottom_is_dark", "top_is_dark")):
        (root / name).mkdir(parents=True)
        for i, img in enumerate(images[labels == c]):
            Image.fromarray(img).save(root / name / f"{i}.png")
    np.savez(tmp_path / "d.npz", images=images, labels=labels)
    a = load_dataset(root, img_size=8)
    b = load_dataset(tmp_path / "d.npz", img_size=8)
    assert a.classes == ["bottom_is_dark", "top_is_dark"] and b.classes == ["0", "1"]
    for s in ("train", "val", "test"):
        assert torch.allclose(a[s].images, b[s].images, atol=1e-5)
        assert torch.equal(a[s].labels, b[s].labels)
    # NHWC colour arrays are read as such
    rgb = np.repeat(images[..., None], 3, axis=-1)
    np.savez(tmp_path / "rgb.npz", images=rgb, labels=labels)
    c = load_dataset(tmp_path / "rgb.npz", img_size=8)
    assert torch.allclose(c["test"].images, b["test"].images, atol=1e-5)


@pytest.mark.parametrize("name, make, message", [
    ("missing.npz", lambda p: None, "no such file or folder"),
    ("data.txt", lambda p: p.write_text("x"), "not a folder or an .npz"),
    ("data.npz", lambda p: np.savez(p, x=np.zeros(3)), "missing array images, labels"),
    ("data.npz", lambda p: np.savez(p, images=np.zeros((4, 5, 5)), labels=np.zeros(3, int)),
     "do not match"),
    ("data.npz", lambda p: np.savez(p, images=np.zeros((4, 2, 5, 5)),
                                    labels=np.zeros(4, int)), "expected \\[n, H, W\\]"),
    ("data.npz", lambda p: np.savez(p, images=np.zeros((4, 5, 5)), labels=np.zeros(4, int)),
     "at least 2 classes"),
    ("data.npz", lambda p: np.savez(p, images=np.zeros((4, 5, 5)),
                                    labels=np.array([0, 1, -1, 0])), "labels must be >= 0"),
    ("data.npz", lambda p: p.write_bytes(b"PK\x03\x04garbage"), "cannot read it as .npz"),
])
def test_bad_data_is_a_clear_error(tmp_path, name, make, message):
    path = tmp_path / name
    make(path)
    with pytest.raises(DatasetError, match=message):
        load_dataset(path, img_size=8)


def test_empty_image_folder(tmp_path):
    (tmp_path / "a").mkdir()
    with pytest.raises(DatasetError, match="hold no image files"):
        load_dataset(tmp_path, img_size=8)
    with pytest.raises(DatasetError, match="no class sub-folders"):
        load_dataset(tmp_path / "a", img_size=8)


@pytest.mark.parametrize("lazy", [False, True])
def test_subset_keeps_each_class_in_proportion_and_order(tmp_path, monkeypatch, lazy):
    """`Dataset.subsets` (`nmc sparsify --subset`): per class, its first images in the
    split's order, in the class's share of n; counted here from the labels alone. A class-
    sorted set shows why a plain prefix would not do."""
    import nmc.models.datasets as datasets

    labels = np.repeat([0, 1, 2], (12, 6, 3))  # sorted by class, as a folder of classes is
    images = np.arange(len(labels) * 16, dtype=np.uint8).reshape(-1, 4, 4)
    np.savez(tmp_path / "set.npz", images=images, labels=labels)
    if lazy:
        monkeypatch.setattr(datasets, "MAX_RESIZED_BYTES", 0)
    d = load_dataset(str(tmp_path / "set.npz"), img_size=4)
    train = d["train"]
    labels = train.labels.numpy()
    small = d.subsets({"train": 7, "test": 1000})
    assert small["test"] is d["test"] and small["val"] is d["val"]  # n >= size: unchanged
    got = small["train"]
    assert len(got) == 7 and isinstance(got.images, datasets.LazyImages) == lazy
    shares = np.bincount(labels) * 7 / len(labels)
    counts = np.bincount(got.labels.numpy(), minlength=3)
    assert counts.sum() == 7 and (np.abs(counts - shares) < 1).all()
    want = np.sort(np.concatenate([np.flatnonzero(labels == c)[:k]
                                   for c, k in enumerate(counts)]))
    np.testing.assert_array_equal(got.labels.numpy(), labels[want])
    np.testing.assert_array_equal(got.images[:].numpy(), train.images[:][want].numpy())

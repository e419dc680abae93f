"""Labelled image data sets that work offline, for `nmc sparsify` and `nmc eval`.

    load_dataset("digits", img_size=16)            scikit-learn's handwritten digits
    load_dataset("my_images/", img_size=32)        an ImageFolder tree: my_images/<class>/*.png
    load_dataset("data.npz", img_size=32)          arrays `images` and `labels`
    load_dataset("fashion-mnist", img_size=224, normalization="imagenet")
    load_dataset("idx_dir/", img_size=28)          the four IDX files of an MNIST-family set

Every source becomes the same `Dataset`: float32 images [n, 3, S, S] (grey images are
repeated over the three channels, so one model serves grey and colour data), resized to
S x S with bilinear interpolation, scaled to [0, 1] and normalised per channel: with the
training split's mean and standard deviation (`normalization="dataset"`, for models trained
here), or with ImageNet's (`"imagenet"`, what pretrained ViTs such as DINOv2 expect); int64
labels in 0..classes-1. A set too large to hold resized in memory (Fashion-MNIST at 224 x 224
would take 42 GB) keeps its original pixels and resizes each batch when it is read
(`LazyImages`); the values are the same either way.

The split into train / val / test is stratified (every class in the same proportions in
each split) and fixed: it depends only on the data and SPLIT_SEED, never on a training
seed, so every run and every seed is scored on the same held-out images. `val` is what the
searches select by; `test` is what is reported.

- digits: `sklearn.datasets.load_digits`, 1,797 real 8x8 grey images of the digits 0..9
  (values 0..16), shipped inside scikit-learn, so no download.
- a folder: one sub-folder per class (sorted names are the classes), image files inside
  (anything Pillow reads; grey, RGB, RGBA). Like torchvision's ImageFolder.
- fashion-mnist: Zalando's Fashion-MNIST (60,000 train + 10,000 test 28x28 grey images of
  10 kinds of clothing), from the Debian package `dataset-fashion-mnist`
  (/usr/share/datasets/fashion-mnist/), never downloaded by nmc.
- an IDX folder: the four files of the MNIST family's format (`train-images-idx3-ubyte`,
  `train-labels-idx1-ubyte`, `t10k-images-idx3-ubyte`, `t10k-labels-idx1-ubyte`, each
  optionally gzipped). Their own test set is the `test` split; `val` is a stratified sixth
  of their training set.
- .npz: `images` [n, H, W] (grey), [n, H, W, C] or [n, C, H, W] with C in (1, 3), any
  numeric dtype (uint8 is taken as 0..255), and `labels` [n] of integers; optional
  `classes` (names). The split is made as for the other sources.
"""

from __future__ import annotations

import gzip
import os
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from nmc.common.images import IMAGENET_MEAN, IMAGENET_STD
from nmc.models.errors import ModelError

DEFAULT_DATASET = "digits"
FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
IDX_FILES = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
             "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}
IDX_VAL_FRACTION = 1 / 6  # of the IDX training set: 10,000 of Fashion-MNIST's 60,000
FASHION_MNIST_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal",
                         "Shirt", "Sneaker", "Bag", "Ankle boot"]
NORMALIZATIONS = ("dataset", "imagenet")
MAX_RESIZED_BYTES = 1 << 30  # above this, images are resized batch by batch when read
SPLIT_SEED = 0
SPLIT_FRACTIONS = (0.6, 0.2, 0.2)  # train, val, test
SPLITS = ("train", "val", "test")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm",
                  ".pgm")


class DatasetError(ModelError):
    """A data set that cannot be read or used (missing, malformed, too small)."""


class LazyImages:
    """Images kept at their original size and resized + normalised when indexed: `images[i]`,
    `images[a:b]` and `images[index_tensor]` give float32 [k, 3, S, S] as a resized tensor
    would. For sets too large to hold resized in memory."""

    def __init__(self, raw: torch.Tensor, img_size: int, mean: torch.Tensor,
                 std: torch.Tensor) -> None:
        self.raw, self.img_size, self.mean, self.std = raw, img_size, mean, std

    @property
    def shape(self) -> tuple[int, ...]:
        return (self.raw.shape[0], 3, self.img_size, self.img_size)

    def __len__(self) -> int:
        return int(self.raw.shape[0])

    def __getitem__(self, index) -> torch.Tensor:
        batch = self.raw[index]
        if batch.dim() == 3:  # a single integer index
            batch = batch[None]
        return (_resize(batch.numpy(), self.img_size) - self.mean) / self.std

    def select(self, index: torch.Tensor) -> LazyImages:
        """The images at `index`, still resized when read."""
        return LazyImages(self.raw[index], self.img_size, self.mean, self.std)


@dataclass
class Split:
    images: torch.Tensor | LazyImages  # [n, 3, S, S] float32, normalised
    labels: torch.Tensor  # [n] int64

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def subset(self, n: int) -> Split:
        """n of the split's images (all of them if it has fewer), every class in its
        proportion (largest remainders): of each class its first images, in the split's
        order. Not a plain prefix: a folder of class sub-folders is ordered by class."""
        if n >= len(self):
            return self
        labels = self.labels.numpy()
        classes, counts = np.unique(labels, return_counts=True)
        quota = counts * n / len(labels)
        take = np.floor(quota).astype(np.int64)
        by_remainder = np.argsort(-(quota - take), kind="stable")
        take[by_remainder[:n - int(take.sum())]] += 1
        index = torch.from_numpy(np.sort(np.concatenate(
            [np.flatnonzero(labels == c)[:k] for c, k in zip(classes, take)])))
        images = self.images.select(index) if isinstance(self.images, LazyImages) else \
            self.images[index]
        return Split(images, self.labels[index])


@dataclass
class Dataset:
    name: str
    classes: list[str]
    img_size: int
    splits: dict[str, Split] = field(default_factory=dict)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def __getitem__(self, split: str) -> Split:
        return self.splits[split]

    def subsets(self, sizes: dict[str, int]) -> Dataset:
        """The data set with sizes[s] images of split s (`Split.subset`; `nmc sparsify
        --subset`): a shorter run at a stated scale. The normalisation stays the whole
        set's."""
        return Dataset(self.name, self.classes, self.img_size,
                       {s: split.subset(sizes[s]) if s in sizes else split
                        for s, split in self.splits.items()})


def load_dataset(source: str | os.PathLike = DEFAULT_DATASET, img_size: int = 16,
                 normalization: str = "dataset") -> Dataset:
    """The data set `source` (module docstring) at img_size x img_size, split and
    normalised. Raises DatasetError with a one-line reason for bad input."""
    text = os.fspath(source)
    if img_size < 1:
        raise DatasetError(f"--data {text}: image size {img_size} must be positive")
    if normalization not in NORMALIZATIONS:
        raise DatasetError(f"--normalize {normalization}: expected one of "
                           f"{', '.join(NORMALIZATIONS)}")
    index = None
    if text == "digits":
        raw, labels, classes = _digits()
    elif text == "fashion-mnist":
        if not FASHION_MNIST_DIR.is_dir():
            raise DatasetError(
                f"--data fashion-mnist: the data set is not installed ({FASHION_MNIST_DIR} is "
                f"missing); install the Debian package with `apt-get install "
                f"dataset-fashion-mnist`, or pass --data DIR holding its four IDX files")
        raw, labels, classes, index = _idx_folder(FASHION_MNIST_DIR, FASHION_MNIST_CLASSES)
    else:
        path = Path(text)
        if not path.exists():
            raise DatasetError(f"--data {text}: no such file or folder (expected 'digits', "
                               f"'fashion-mnist', a folder of class sub-folders or of IDX "
                               f"files, or an .npz of images and labels)")
        if path.is_dir() and _idx_file(path, IDX_FILES["train"][0]) is not None:
            raw, labels, classes, index = _idx_folder(path)
        elif path.is_dir():
            raw, labels, classes = _image_folder(path)
        elif path.suffix.lower() == ".npz":
            raw, labels, classes = _npz(path)
        else:
            raise DatasetError(f"--data {text}: not a folder or an .npz file")
    return _build(text, raw, labels, classes, img_size, normalization, index)


def _idx_file(folder: Path, stem: str) -> Path | None:
    for name in (stem, stem + ".gz"):
        if (folder / name).is_file():
            return folder / name
    return None


def read_idx(path: Path) -> np.ndarray:
    """An IDX file (the MNIST family's format, optionally gzipped): a big-endian header of
    two zero bytes, the element type code, the number of dims and each dim as uint32, then
    the data. Only unsigned bytes (type 0x08) are used by these data sets."""
    try:
        opener = gzip.open if path.suffix == ".gz" else open
        with opener(path, "rb") as f:
            data = f.read()
    except (OSError, EOFError) as e:
        raise DatasetError(f"cannot read IDX file {path}: {e}") from None
    if len(data) < 4 or data[0] != 0 or data[1] != 0:
        raise DatasetError(f"{path}: not an IDX file (bad magic number)")
    if data[2] != 0x08:
        raise DatasetError(f"{path}: IDX element type 0x{data[2]:02x}; only unsigned bytes "
                           f"(0x08) are supported")
    ndim = data[3]
    header = 4 + 4 * ndim
    if ndim == 0 or len(data) < header:
        raise DatasetError(f"{path}: truncated IDX header")
    shape = tuple(int.from_bytes(data[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim))
    count = int(np.prod(shape))
    if len(data) - header != count:
        raise DatasetError(f"{path}: IDX header says {list(shape)} ({count} bytes) but the "
                           f"file holds {len(data) - header} data bytes")
    return np.frombuffer(data, np.uint8, count, header).reshape(shape)


def _idx_folder(folder: Path, classes: list[str] | None = None):
    """Images [n, 1, H, W] uint8, labels, class names and the split indices (the files'
    own test set; val a stratified part of their training set)."""
    parts = {}
    for split, (images_stem, labels_stem) in IDX_FILES.items():
        files = [_idx_file(folder, stem) for stem in (images_stem, labels_stem)]
        missing = [stem for stem, f in zip((images_stem, labels_stem), files) if f is None]
        if missing:
            raise DatasetError(f"--data {folder}: missing IDX file(s) {', '.join(missing)} "
                               f"(optionally .gz)")
        images, labels = (read_idx(f) for f in files)
        if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
            raise DatasetError(f"--data {folder}: {split} images {list(images.shape)} and "
                               f"labels {list(labels.shape)} do not match (expected [n, H, W] "
                               f"and [n])")
        parts[split] = (images, labels)
    (train_x, train_y), (test_x, test_y) = parts["train"], parts["test"]
    if train_x.shape[1:] != test_x.shape[1:]:
        raise DatasetError(f"--data {folder}: train images {list(train_x.shape[1:])} and test "
                           f"images {list(test_x.shape[1:])} differ in size")
    labels = np.concatenate([train_y, test_y]).astype(np.int64)
    n_classes = int(labels.max()) + 1
    classes = classes or [str(c) for c in range(n_classes)]
    if len(classes) < n_classes:
        raise DatasetError(f"--data {folder}: label {n_classes - 1} but {len(classes)} classes")
    inner = stratified_split(train_y.astype(np.int64), (1 - IDX_VAL_FRACTION, IDX_VAL_FRACTION,
                                                         0.0))
    index = {"train": inner["train"], "val": inner["val"],
             "test": np.arange(len(train_y), len(labels))}
    images = np.concatenate([train_x, test_x])[:, None]
    return images, labels, classes, index


def _digits() -> tuple[np.ndarray, np.ndarray, list[str]]:
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = digits.images.astype(np.float32) / 16.0  # 0..16 -> 0..1
    return images[:, None], digits.target.astype(np.int64), [str(c) for c in range(10)]


def _image_folder(root: Path) -> tuple[list[np.ndarray], np.ndarray, list[str]]:
    from PIL import Image, UnidentifiedImageError

    classes = sorted(d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    if not classes:
        raise DatasetError(f"--data {root}: no class sub-folders (expected {root}/<class>/"
                           f"<image files>)")
    images, labels = [], []
    for label, name in enumerate(classes):
        files = sorted(f for f in (root / name).iterdir()
                       if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES)
        for f in files:
            try:
                with Image.open(f) as im:
                    im = im.convert("L") if im.mode in ("1", "L", "LA", "I", "I;16", "F") \
                        else im.convert("RGB")
                    arr = np.asarray(im, dtype=np.float32) / 255.0
            except (UnidentifiedImageError, OSError) as e:
                raise DatasetError(f"--data {root}: cannot read image {f} ({e})") from None
            images.append(arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1))
            labels.append(label)
    if not images:
        raise DatasetError(f"--data {root}: the class folders hold no image files "
                           f"({', '.join(IMAGE_SUFFIXES)})")
    return images, np.asarray(labels, np.int64), classes


def _npz(path: Path) -> tuple[np.ndarray, np.ndarray, list[str]]:
    try:
        with np.load(path, allow_pickle=False) as f:
            arrays = {k: f[k] for k in f.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
        raise DatasetError(f"--data {path}: cannot read it as .npz ({str(e).splitlines()[0]})") \
            from None
    missing = [k for k in ("images", "labels") if k not in arrays]
    if missing:
        raise DatasetError(f"--data {path}: missing array {', '.join(missing)} (it has "
                           f"{', '.join(arrays) or 'none'}; expected 'images' and 'labels')")
    images, labels = arrays["images"], arrays["labels"]
    if images.dtype.kind not in "fiub" or labels.dtype.kind not in "iu":
        raise DatasetError(f"--data {path}: images must be numeric and labels integers "
                           f"(got {images.dtype} and {labels.dtype})")
    if labels.ndim != 1 or images.shape[0] != labels.shape[0]:
        raise DatasetError(f"--data {path}: images {list(images.shape)} and labels "
                           f"{list(labels.shape)} do not match (expected [n, ...] and [n])")
    scale = 255.0 if images.dtype == np.uint8 else 1.0
    images = images.astype(np.float32) / scale
    if images.ndim == 3:
        images = images[:, None]
    elif images.ndim == 4 and images.shape[-1] in (1, 3) and images.shape[1] not in (1, 3):
        images = images.transpose(0, 3, 1, 2)
    if images.ndim != 4 or images.shape[1] not in (1, 3):
        raise DatasetError(f"--data {path}: images of shape {list(arrays['images'].shape)}; "
                           f"expected [n, H, W], [n, H, W, C] or [n, C, H, W] with C 1 or 3")
    if not np.all(np.isfinite(images)):
        raise DatasetError(f"--data {path}: images hold NaN or infinite values")
    if labels.size and labels.min() < 0:
        raise DatasetError(f"--data {path}: labels must be >= 0")
    n_classes = int(labels.max()) + 1 if labels.size else 0
    classes = [str(c) for c in arrays["classes"]] if "classes" in arrays \
        else [str(c) for c in range(n_classes)]
    if len(classes) < n_classes:
        raise DatasetError(f"--data {path}: label {n_classes - 1} but only {len(classes)} "
                           f"class names")
    return images, labels.astype(np.int64), classes


def stratified_split(labels: np.ndarray, fractions=SPLIT_FRACTIONS,
                     seed: int = SPLIT_SEED) -> dict[str, np.ndarray]:
    """Indices of each split: every class is shuffled (fixed seed) and cut in the
    proportions `fractions`, so each split holds each class in the same proportion."""
    rng = np.random.default_rng(seed)
    parts: dict[str, list[np.ndarray]] = {s: [] for s in SPLITS}
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        n = len(idx)
        n_val = int(round(n * fractions[1]))
        n_test = int(round(n * fractions[2]))
        n_train = n - n_val - n_test
        parts["train"].append(idx[:n_train])
        parts["val"].append(idx[n_train:n_train + n_val])
        parts["test"].append(idx[n_train + n_val:])
    return {s: np.sort(np.concatenate(p)) for s, p in parts.items()}


def _resize(images, img_size: int) -> torch.Tensor:
    """[n] images [C, H, W] (or one [n, C, H, W] array; uint8 is taken as 0..255) ->
    [n, 3, S, S]."""
    out = []
    batch = [images] if isinstance(images, np.ndarray) else [a[None] for a in images]
    for arr in batch:
        if arr.dtype == np.uint8:
            arr = arr.astype(np.float32) / 255.0
        t = torch.from_numpy(np.ascontiguousarray(arr, dtype=np.float32))
        if t.shape[1] == 1:
            t = t.expand(-1, 3, -1, -1)
        if tuple(t.shape[-2:]) != (img_size, img_size):
            t = F.interpolate(t, size=(img_size, img_size), mode="bilinear",
                              align_corners=False)
        out.append(t.contiguous())
    return torch.cat(out)


def _build(name: str, raw, labels: np.ndarray, classes: list[str], img_size: int,
           normalization: str = "dataset", index: dict[str, np.ndarray] | None = None
           ) -> Dataset:
    counts = np.bincount(labels, minlength=len(classes))
    if len(classes) < 2 or (counts < 3).any():
        raise DatasetError(f"--data {name}: needs at least 2 classes with 3 images each (one "
                           f"per split); got {len(classes)} classes, the smallest with "
                           f"{int(counts.min()) if counts.size else 0} images")
    index = index if index is not None else stratified_split(labels)
    if len(labels) * 3 * img_size * img_size * 4 > MAX_RESIZED_BYTES:
        return _build_lazy(name, raw, labels, classes, img_size, normalization, index)
    images = _resize(raw, img_size)
    if normalization == "imagenet":
        mean, std = _imagenet_stats()
    else:
        train = images[torch.from_numpy(index["train"])]
        mean = train.mean(dim=(0, 2, 3), keepdim=True)
        std = train.std(dim=(0, 2, 3), keepdim=True).clamp_min(1e-6)
    images = (images - mean) / std
    splits = {s: Split(images[torch.from_numpy(i)].contiguous(),
                       torch.from_numpy(labels[i]).contiguous()) for s, i in index.items()}
    return Dataset(name, classes, img_size, splits)


def _imagenet_stats() -> tuple[torch.Tensor, torch.Tensor]:
    return (torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1),
            torch.tensor(IMAGENET_STD).view(1, 3, 1, 1))


def _build_lazy(name: str, raw, labels: np.ndarray, classes: list[str], img_size: int,
                normalization: str, index: dict[str, np.ndarray]) -> Dataset:
    """As _build, with the images resized when read (LazyImages). The dataset statistics
    are those of the training split, resized in chunks."""
    if not isinstance(raw, np.ndarray):
        raise DatasetError(f"--data {name}: {len(labels)} images of different sizes are too "
                           f"many to resize to {img_size}x{img_size} in memory")
    raw_t = torch.from_numpy(np.ascontiguousarray(raw))
    if normalization == "imagenet":
        mean, std = _imagenet_stats()
    else:
        total, total_sq, count = torch.zeros(3, dtype=torch.float64), \
            torch.zeros(3, dtype=torch.float64), 0
        for start in range(0, len(index["train"]), 256):
            chunk = _resize(raw[index["train"][start:start + 256]], img_size).double()
            total += chunk.sum(dim=(0, 2, 3))
            total_sq += (chunk * chunk).sum(dim=(0, 2, 3))
            count += chunk.shape[0] * img_size * img_size
        mean = (total / count).float().view(1, 3, 1, 1)
        var = (total_sq - count * (total / count) ** 2) / max(count - 1, 1)
        std = var.clamp_min(0).sqrt().float().view(1, 3, 1, 1).clamp_min(1e-6)
    splits = {s: Split(LazyImages(raw_t[torch.from_numpy(i)], img_size, mean, std),
                       torch.from_numpy(labels[i]).contiguous()) for s, i in index.items()}
    return Dataset(name, classes, img_size, splits)

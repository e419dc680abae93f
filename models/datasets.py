"""Labelled image data sets that work offline, for `nmc sparsify` and `nmc eval`.

    load_dataset("digits", img_size=16)            scikit-learn's handwritten digits
    load_dataset("my_images/", img_size=32)        an ImageFolder tree: my_images/<class>/*.png
    load_dataset("data.npz", img_size=32)          arrays `images` and `labels`

Every source becomes the same `Dataset`: float32 images [n, 3, S, S] (grey images are
repeated over the three channels, so one model serves grey and colour data), resized to
S x S with bilinear interpolation, scaled to [0, 1] and normalised per channel with the
training split's mean and standard deviation; int64 labels in 0..classes-1.

The split into train / val / test is stratified (every class in the same proportions in
each split) and fixed: it depends only on the data and SPLIT_SEED, never on a training
seed, so every run and every seed is scored on the same held-out images. `val` is what the
searches select by; `test` is what is reported.

- digits: `sklearn.datasets.load_digits`, 1,797 real 8x8 grey images of the digits 0..9
  (values 0..16), shipped inside scikit-learn, so no download.
- a folder: one sub-folder per class (sorted names are the classes), image files inside
  (anything Pillow reads; grey, RGB, RGBA). Like torchvision's ImageFolder.
- .npz: `images` [n, H, W] (grey), [n, H, W, C] or [n, C, H, W] with C in (1, 3), any
  numeric dtype (uint8 is taken as 0..255), and `labels` [n] of integers; optional
  `classes` (names). The split is made as for the other sources.
"""

from __future__ import annotations

import os
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from nmc.models.errors import ModelError

DEFAULT_DATASET = "digits"
SPLIT_SEED = 0
SPLIT_FRACTIONS = (0.6, 0.2, 0.2)  # train, val, test
SPLITS = ("train", "val", "test")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm",
                  ".pgm")


class DatasetError(ModelError):
    """A data set that cannot be read or used (missing, malformed, too small)."""


@dataclass
class Split:
    images: torch.Tensor  # [n, 3, S, S] float32, normalised
    labels: torch.Tensor  # [n] int64

    def __len__(self) -> int:
        return int(self.labels.shape[0])


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


def load_dataset(source: str | os.PathLike = DEFAULT_DATASET, img_size: int = 16) -> Dataset:
    """The data set `source` (module docstring) at img_size x img_size, split and
    normalised. Raises DatasetError with a one-line reason for bad input."""
    text = os.fspath(source)
    if img_size < 1:
        raise DatasetError(f"--data {text}: image size {img_size} must be positive")
    if text == "digits":
        raw, labels, classes = _digits()
    else:
        path = Path(text)
        if not path.exists():
            raise DatasetError(f"--data {text}: no such file or folder (expected 'digits', a "
                               f"folder of class sub-folders, or an .npz of images and labels)")
        if path.is_dir():
            raw, labels, classes = _image_folder(path)
        elif path.suffix.lower() == ".npz":
            raw, labels, classes = _npz(path)
        else:
            raise DatasetError(f"--data {text}: not a folder or an .npz file")
    return _build(text, raw, labels, classes, img_size)


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
    """[n] images [C, H, W] (or one [n, C, H, W] array) -> [n, 3, S, S]."""
    out = []
    batch = [images] if isinstance(images, np.ndarray) else [a[None] for a in images]
    for arr in batch:
        t = torch.from_numpy(np.ascontiguousarray(arr, dtype=np.float32))
        if t.shape[1] == 1:
            t = t.expand(-1, 3, -1, -1)
        if tuple(t.shape[-2:]) != (img_size, img_size):
            t = F.interpolate(t, size=(img_size, img_size), mode="bilinear",
                              align_corners=False)
        out.append(t.contiguous())
    return torch.cat(out)


def _build(name: str, raw, labels: np.ndarray, classes: list[str], img_size: int) -> Dataset:
    counts = np.bincount(labels, minlength=len(classes))
    if len(classes) < 2 or (counts < 3).any():
        raise DatasetError(f"--data {name}: needs at least 2 classes with 3 images each (one "
                           f"per split); got {len(classes)} classes, the smallest with "
                           f"{int(counts.min()) if counts.size else 0} images")
    images = _resize(raw, img_size)
    index = stratified_split(labels)
    train = images[torch.from_numpy(index["train"])]
    mean = train.mean(dim=(0, 2, 3), keepdim=True)
    std = train.std(dim=(0, 2, 3), keepdim=True).clamp_min(1e-6)
    images = (images - mean) / std
    splits = {s: Split(images[torch.from_numpy(i)].contiguous(),
                       torch.from_numpy(labels[i]).contiguous()) for s, i in index.items()}
    return Dataset(name, classes, img_size, splits)

"""A demo input image: a real photograph when one is installed, otherwise a generated one.

No image ships with nmc's own dependencies. scikit-image, when present, carries real
photographs (`skimage.data.chelsea`, a cat); without it a deterministic synthetic scene is
drawn (sky gradient, sun, hills, a striped object), so the demo runs on any machine.

Used by `nmc demo` and by the compiler (the default calibration input of the ELSA
sensitivity), so it lives here rather than beside the reference models.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def _photograph() -> tuple[np.ndarray, str] | None:
    try:
        from skimage import data  # optional: not a dependency of nmc
    except ImportError:
        return None
    return data.chelsea(), "skimage.data.chelsea (photograph)"


def _generated(size: int) -> np.ndarray:
    y, x = np.mgrid[0:size, 0:size] / size
    img = np.zeros((size, size, 3))
    img[...] = np.stack([0.35 + 0.3 * y, 0.55 + 0.3 * y, 0.9 - 0.1 * y], -1)  # sky
    sun = (x - 0.75) ** 2 + (y - 0.2) ** 2 < 0.01
    img[sun] = (1.0, 0.85, 0.3)
    hills = y > 0.65 + 0.08 * np.sin(9 * x)
    img[hills] = np.stack([0.2 + 0.1 * x, 0.5 + 0.1 * np.sin(20 * x), 0.2 + 0 * x], -1)[hills]
    body = ((x - 0.4) / 0.22) ** 2 + ((y - 0.6) / 0.12) ** 2 < 1
    stripes = (np.sin(60 * x) > 0)
    img[body & stripes] = (0.9, 0.55, 0.2)
    img[body & ~stripes] = (0.3, 0.2, 0.1)
    return (img * 255).astype(np.uint8)


def demo_image(size: int = 224) -> tuple[torch.Tensor, str]:
    """([1, 3, size, size] float32 normalised as for ImageNet models, where it came from)."""
    found = _photograph()
    rgb, source = found if found else (_generated(size), "generated scene (no photograph installed)")
    t = torch.from_numpy(np.ascontiguousarray(rgb)).permute(2, 0, 1)[None].float() / 255
    t = F.interpolate(t, size=(size, size), mode="bilinear", align_corners=False)
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    return ((t - mean) / std).contiguous(), source

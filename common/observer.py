"""How calibration turns the activations a quantized matmul sees into its input scale.

The int8 contract (nmc.common.quant, docs/INT8.md) quantises a matmul's input per tensor,
symmetric: s_x = clip / 127, values beyond +-clip saturate. The observer chooses the clip
from the calibration inputs:

- `max` (the default): the largest |x| seen. Nothing saturates; one outlier activation
  coarsens the grid for every other value (DINOv2's MLP inputs have such outliers).
- `percentile:P`: the P-th percentile of |x| (0 < P <= 100), clipped to the max.
- `mse`: the clip, among 512 candidates up to the max, that minimises the expected squared
  error: values inside the range are rounded (uniform error, s_x^2 / 12 each), values beyond
  it saturate ((|x| - clip)^2 each), as PyTorch's HistogramObserver estimates it.

`AbsHistogram` collects |x| of every calibration input in one pass with bounded memory (a
DeiT-base MLP input over 32 images is 19 M values): the exact maximum and a histogram of
2048 equal bins over [0, 2^e), e the smallest with max < 2^e; when a value reaches 2^e the
range doubles and pairs of bins merge, so counts stay exact integers and the result does
not depend on how the inputs are batched. The percentile and the error are read from the
bins (bin centres), to within a bin's width (2^e / 2048) of the raw values'. For `max`,
`Observer.collector` keeps only the maximum: the default calibration does no per-value
work beyond it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from nmc.common.errors import NmcError

BINS = 2048
MSE_CANDIDATES = 512
KINDS = ("max", "mse", "percentile")


class ObserverError(NmcError):
    """A calibration observer that does not parse."""


@dataclass(frozen=True)
class Observer:
    """A parsed observer: `kind` in KINDS, `percentile` for kind "percentile"."""

    kind: str = "max"
    percentile: float = 100.0

    def __str__(self) -> str:
        return f"percentile:{self.percentile:g}" if self.kind == "percentile" else self.kind

    def collector(self) -> AbsHistogram:
        """What calibration feeds |x| to for this observer: `max` needs no histogram."""
        return AbsHistogram(histogram=self.kind != "max")


def parse_observer(text: str) -> Observer:
    """`max`, `mse` or `percentile:P` (0 < P <= 100) -> Observer; ObserverError otherwise."""
    kind, _, value = text.strip().partition(":")
    if kind in ("max", "mse") and not value:
        return Observer(kind)
    if kind == "percentile":
        try:
            p = float(value)
        except ValueError:
            p = math.nan
        if 0 < p <= 100:
            return Observer(kind, p)
        raise ObserverError(f"observer {text!r}: the percentile must be a number in (0, 100], "
                            "e.g. percentile:99.99")
    raise ObserverError(f"observer {text!r}: expected max, mse or percentile:P")


class AbsHistogram:
    """|x| of everything `update` is given (module docstring); with `histogram=False` only
    its maximum (the `max` observer's calibration: no per-value work beyond it)."""

    def __init__(self, histogram: bool = True) -> None:
        self.max = 0.0
        self.top = 0.0  # the histogram covers [0, top); 0 while nothing non-zero was seen
        self.counts = np.zeros(BINS, np.int64) if histogram else None

    def update(self, values: np.ndarray) -> None:
        a = np.abs(np.asarray(values, np.float32)).ravel()  # exact: |x| of an fp32 value
        a = a[np.isfinite(a)]
        if a.size == 0:
            return
        peak = float(a.max())
        self.max = max(self.max, peak)
        if self.counts is None:
            return
        if peak == 0.0:
            self.counts[0] += a.size
            return
        if self.top == 0.0:
            self.top = 2.0 ** (math.floor(math.log2(peak)) + 1)
        while peak >= self.top:  # double the range: pairs of bins merge
            merged = self.counts[0::2] + self.counts[1::2]
            self.counts[:] = 0
            self.counts[:BINS // 2] = merged
            self.top *= 2
        index = np.minimum((a.astype(np.float64) * (BINS / self.top)).astype(np.int64),
                           BINS - 1)
        self.counts += np.bincount(index, minlength=BINS)

    def clip(self, observer: Observer) -> float:
        """The |x| the quantized range ends at: max |x| for `max` (exactly), else what the
        observer chooses from the histogram (never above max |x|)."""
        if observer.kind == "max" or self.top == 0.0:
            return self.max
        if self.counts is None:
            raise ValueError(f"observer {observer}: this collector kept no histogram")
        width = self.top / BINS
        if observer.kind == "percentile":
            cumulative = np.cumsum(self.counts)
            k = int(np.searchsorted(cumulative, cumulative[-1] * observer.percentile / 100))
            return min(self.max, (k + 1) * width)
        centres = (np.arange(BINS) + 0.5) * width
        candidates = self.max * np.arange(1, MSE_CANDIDATES + 1) / MSE_CANDIDATES
        steps = candidates / 127
        inside = centres[None, :] <= candidates[:, None]
        error = np.where(inside, steps[:, None] ** 2 / 12,
                         (centres[None, :] - candidates[:, None]) ** 2) @ self.counts
        return float(candidates[int(np.argmin(error))])

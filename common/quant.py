"""The int8 arithmetic contract (docs/INT8.md), numpy only: how nmc chooses scales and
turns fp32 weights, biases and scales into what an int8 program stores.

The compiler (the quantize pass, the emitter) computes with these functions; the PyTorch
reference (models/int8.py) implements the same contract with torch ops on its own, and the
tests compare the two, so neither can drift.

- weights: per output channel symmetric, s_w = max|w| / 127 over the (N:M-masked) row,
  q = clamp(round_half_even(w / s_w), -127, 127), in fp32;
- activations entering a quantized matmul: per tensor symmetric, s_x = max|x| / 127 over
  the calibration inputs; q = clamp(round_half_even(x * fp32(1 / s_x)), -128, 127);
- a zero row (or an all-zero calibration input) gets scale 1 (its q is 0 anyway);
- bias as int32 in scale s_x * s_w: round_half_even(b / fp32(s_x * s_w)), computed in
  float64, clamped to the int32 range;
- the int32 result y_i32 + bias_i32 becomes fp32 (round to nearest even) and is
  multiplied by fp32(s_x * s_w) (one fp32 rounding).
"""

from __future__ import annotations

import numpy as np

QMAX_WEIGHT = 127
QMIN_ACT, QMAX_ACT = -128, 127
_I32 = np.iinfo(np.int32)


def _positive(scale: np.ndarray) -> np.ndarray:
    """Scales with 0 replaced by 1: a zero row or input quantises to 0 whatever the scale."""
    return np.where(scale > 0, scale, np.float32(1.0)).astype(np.float32)


def weight_scales(weight: np.ndarray) -> np.ndarray:
    """s_w per output channel of W [N_out, ...] (the masked weight for N:M): fp32."""
    w = np.asarray(weight, np.float32).reshape(len(weight), -1)
    return _positive(np.abs(w).max(axis=1) / np.float32(QMAX_WEIGHT))


def quantize_weight(weight: np.ndarray, scales: np.ndarray) -> np.ndarray:
    """int8 [N_out, K] of W [N_out, ...] (reshaped to rows) under per-row `scales`."""
    w = np.asarray(weight, np.float32).reshape(len(weight), -1)
    q = np.rint(w / np.asarray(scales, np.float32)[:, None])
    return np.clip(q, -QMAX_WEIGHT, QMAX_WEIGHT).astype(np.int8)


def input_scale(max_abs: float) -> float:
    """s_x from the largest |x| the calibration inputs reach: fp32(max / 127)."""
    return float(_positive(np.float32(max_abs) / np.float32(QMAX_ACT)))


def inverse_scale(s_x: float) -> np.float32:
    """The fp32 reciprocal the vector unit multiplies by (as quantize_per_tensor does)."""
    return np.float32(1.0) / np.float32(s_x)


def combined_scales(s_x: float, s_w: np.ndarray) -> np.ndarray:
    """fp32(s_x * s_w) per output channel: the scale of the int32 results."""
    return np.float32(s_x) * np.asarray(s_w, np.float32)


def bias_int32(bias: np.ndarray | None, combined: np.ndarray) -> np.ndarray:
    """The bias as int32 in the results' scale (zeros without a bias)."""
    if bias is None:
        return np.zeros(len(combined), np.int32)
    q = np.rint(np.asarray(bias, np.float64) / np.asarray(combined, np.float64))
    return np.clip(q, _I32.min, _I32.max).astype(np.int32)


def rescale_table(bias: np.ndarray | None, s_x: float, s_w: np.ndarray) -> np.ndarray:
    """The rescale parameters `vrow rescale` reads: per output channel the int32 bias
    (its bits) and the fp32 scale, interleaved: float32 [2 * N_out]."""
    combined = combined_scales(s_x, s_w)
    pairs = np.empty((len(combined), 2), np.float32)
    pairs[:, 0] = bias_int32(bias, combined).view(np.float32)
    pairs[:, 1] = combined
    return pairs.ravel()


def check_scale(value: object) -> bool:
    """Whether `value` is a usable scale: a finite positive number."""
    return (isinstance(value, (int, float)) and not isinstance(value, bool)
            and bool(np.isfinite(value)) and value > 0)

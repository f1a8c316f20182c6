"""Fixed-point formats on real-valued tensors: the rounding rules of golden/ and the format choice.

A format is ``{"bits", "frac", "signed"}``: value = code · 2^-frac, ``frac`` an int or a list
per output channel. Rounding is half up (``floor(t + 0.5)``) and saturation clamps to the
format's range, as in ``golden/layers.py``; in float64 these compute golden's integers exactly.
In float32 (quantization-aware training) rounding passes the gradient unchanged (straight-through
estimator).
"""

import math

import numpy as np
import torch

__all__ = ["INPUT_FORMAT", "LUT_BOUND", "LUT_SATURATION", "code_range", "round_half_up",
           "scale", "quantize_tensor", "requantize", "weight_frac", "act_frac"]

#: Raw 8-bit pixels p are the codes of p / 256.
INPUT_FORMAT = {"bits": 8, "frac": 8, "signed": False}
#: The largest output of each lookup-table activation (its output format's range).
LUT_BOUND = {"tanh": 1.0, "scaled_tanh": 1.7159, "sigmoid": 1.0}
#: Where each lookup-table activation has saturated (its table's input range).
LUT_SATURATION = {"tanh": 4.0, "scaled_tanh": 6.0, "sigmoid": 8.0}


def code_range(fmt):
    """Return the ``(lowest, highest)`` code of ``fmt``."""
    bits = fmt["bits"]
    return (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if fmt["signed"] else (0, (1 << bits) - 1)


def round_half_up(t):
    """Return ``floor(t + 0.5)`` with a straight-through gradient."""
    return t + (torch.floor(t + 0.5) - t).detach()


def scale(frac, like, dim=1):
    """Return 2^frac as a tensor of ``like``'s dtype; a per-channel ``frac`` (a list) lies along
    dimension ``dim`` of ``like``."""
    if isinstance(frac, (list, tuple, np.ndarray)):
        t = torch.tensor(np.ldexp(1.0, np.asarray(frac, dtype=np.int64)), dtype=like.dtype)
        return t.view(*([1] * dim), -1, *([1] * (like.dim() - dim - 1)))
    return torch.tensor(float(np.ldexp(1.0, int(frac))), dtype=like.dtype)


def quantize_tensor(t, fmt):
    """Fake-quantize the parameter ``t`` to ``fmt`` (round half up, clamp); a per-channel frac
    lies along dimension 0 (the output channels of a weight)."""
    lo, hi = code_range(fmt)
    s = scale(fmt["frac"], t, dim=0)
    return torch.clamp(round_half_up(t * s), lo, hi) / s


def requantize(acc, fmt, saturations=None, key=None):
    """Round ``acc`` half up into ``fmt`` and clamp; count the clamped values in
    ``saturations[key]``.

    As in golden/, the clamp of negative values to 0 in an unsigned format is the ReLU and is
    not counted as a saturation.
    """
    lo, hi = code_range(fmt)
    s = scale(fmt["frac"], acc)
    codes = round_half_up(acc * s)
    if saturations is not None:
        clamped = (codes > hi) | (codes < lo) if fmt["signed"] else codes > hi
        saturations[key] = saturations.get(key, 0) + int(clamped.sum())
    return torch.clamp(codes, lo, hi) / s


def _ceil_log2(x):
    return math.ceil(math.log2(x)) if x > 0 else -64


def weight_frac(w, bits):
    """Return the largest frac with max|w| · 2^frac ≤ 2^(bits-1)."""
    m = float(np.max(np.abs(w))) if np.size(w) else 0.0
    return bits - 1 - _ceil_log2(m) if m > 0 else bits - 1


def act_frac(r, bits, signed):
    """Return the largest frac with r · 2^frac ≤ 2^bits (unsigned) or 2^(bits-1) (signed)."""
    return (bits - 1 if signed else bits) - (_ceil_log2(r) if r > 0 else 0)

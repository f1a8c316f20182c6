"""The fake-quantized PyTorch model: the integer model's arithmetic on real-valued tensors.

:class:`QuantLeNet` runs a float :class:`quant.model.LeNet`'s parameters through the formats of
a plan (see :mod:`quant.quantize`). In float64 every value it computes is an integer code times
a power of two and every sum stays below 2^53, so it computes exactly the numbers of
``golden/`` (tests compare every score of every image). In float32 it trains (QAT) with
straight-through estimators: rounding passes the gradient unchanged and lookup-table
activations take the gradient of the float function.

The plan holds, per layer index, the formats chosen by :func:`quant.quantize.plan_formats`:

- ``in``: input format ``{"bits", "frac", "signed"}``;
- ``weight``: weight format, ``frac`` an int or a per-output-channel list;
- ``acc_bits``; ``requant``: the format the accumulator is requantized into (the output format,
  or the LUT's signed input format); ``out``: the output format; ``lut``: the table (int64
  NumPy) when the activation is a lookup table; ``final``: scores are accumulators.
"""

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .model import activation_fn

__all__ = ["QuantLeNet", "code_range", "round_half_up"]


def code_range(fmt):
    bits = fmt["bits"]
    return (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if fmt["signed"] else (0, (1 << bits) - 1)


def round_half_up(t):
    """floor(t + 0.5) with a straight-through gradient."""
    return t + (torch.floor(t + 0.5) - t).detach()


def _scale(frac, like):
    """2^frac as a tensor broadcast over output channels (dim 1) when ``frac`` is a list."""
    if isinstance(frac, (list, tuple, np.ndarray)):
        t = torch.tensor(np.ldexp(1.0, np.asarray(frac, dtype=np.int64)), dtype=like.dtype)
        return t.view(1, -1, *([1] * (like.dim() - 2)))
    return torch.tensor(float(np.ldexp(1.0, int(frac))), dtype=like.dtype)


def quantize_tensor(t, fmt):
    """Fake-quantize ``t`` to ``fmt`` (round half up, clamp); frac may be per dim-0 entry."""
    lo, hi = code_range(fmt)
    frac = fmt["frac"]
    if isinstance(frac, (list, tuple, np.ndarray)):
        s = torch.tensor(np.ldexp(1.0, np.asarray(frac, dtype=np.int64)), dtype=t.dtype)
        s = s.view(-1, *([1] * (t.dim() - 1)))
    else:
        s = torch.tensor(float(np.ldexp(1.0, int(frac))), dtype=t.dtype)
    return torch.clamp(round_half_up(t * s), lo, hi) / s


def requantize(acc, fmt, saturations=None, key=None):
    """Round ``acc`` half up into ``fmt`` and clamp; count clamped values.

    As in golden/, the clamp of negative values to 0 in an unsigned format is the ReLU and is
    not counted as a saturation.
    """
    lo, hi = code_range(fmt)
    s = _scale(fmt["frac"], acc)
    codes = round_half_up(acc * s)
    if saturations is not None:
        clamped = (codes > hi) | (codes < lo) if fmt["signed"] else codes > hi
        saturations[key] = saturations.get(key, 0) + int(clamped.sum())
    return torch.clamp(codes, lo, hi) / s


class QuantLeNet(nn.Module):
    """A :class:`quant.model.LeNet` computing through the formats of ``plan``."""

    def __init__(self, model, plan):
        super().__init__()
        self.model = model
        self.plan = plan
        self.config = model.config
        self.luts = [None if p.get("lut") is None else torch.from_numpy(p["lut"]) for p in plan]

    # Quantized parameters (shared with export so the exported codes are these).
    def weight(self, i, dtype=torch.float64):
        layer, p = self.model.layers[i], self.plan[i]
        kind = self.config.layers[i].kind
        if kind == "conv":
            w = layer.weight()
        elif kind == "dense":
            w = layer.fc.weight
        elif kind == "pool":
            w = layer.coef
        else:
            w = layer.centers
        return quantize_tensor(w.to(dtype), p["weight"])

    def bias(self, i, dtype=torch.float64):
        layer, p = self.model.layers[i], self.plan[i]
        kind = self.config.layers[i].kind
        b = {"conv": lambda: layer.conv.bias, "dense": lambda: layer.fc.bias,
             "pool": lambda: layer.bias}[kind]()
        bits = p["acc_bits"] - 1  # the bias lies in the product-sum range
        fmt = {"bits": bits, "frac": p["acc_frac"], "signed": True}
        return quantize_tensor(b.to(dtype), fmt)

    def activate(self, i, acc, sat):
        p, spec = self.plan[i], self.config.layers[i]
        if p["final"]:
            return acc
        pre = requantize(acc, p["requant"], sat, spec.name)
        if self.luts[i] is None:
            return pre
        lut = self.luts[i]
        fmt = p["requant"]
        index = (pre * _scale(fmt["frac"], pre)).round().long() + (1 << (fmt["bits"] - 1))
        out = lut[index].to(pre.dtype) / _scale(p["out"]["frac"], pre)
        smooth = activation_fn(spec.activation)(pre)
        return smooth + (out - smooth).detach()

    def forward(self, images, taps=None, saturations=None, dtype=torch.float64):
        """Return the scores (logits; for RBF, negative distances) of uint8 images.

        ``taps`` (a dict) receives each layer's output as integer codes (int64, the final
        layer's raw integer scores); ``saturations`` (a dict) counts clamped values per layer.
        """
        x = self.model.prepare(images).to(dtype)
        x = quantize_tensor(x, self.plan[0]["in"])  # exact for raw pixels
        if self.config.input_pad:
            x = F.pad(x, (self.config.input_pad,) * 4)
        sat = {} if saturations is None else saturations
        for i, spec in enumerate(self.config.layers):
            p = self.plan[i]
            if spec.kind == "conv":
                acc = F.conv2d(x, self.weight(i, dtype), self.bias(i, dtype),
                               padding=spec.padding)
                x = self.activate(i, acc, sat)
            elif spec.kind == "dense":
                acc = F.linear(x.flatten(1), self.weight(i, dtype), self.bias(i, dtype))
                x = self.activate(i, acc, sat)
            elif spec.kind == "pool" and spec.mode == "max":
                x = F.max_pool2d(x, spec.size)
            elif spec.kind == "pool" and spec.mode == "avg":
                total = F.avg_pool2d(x, spec.size) * spec.size ** 2
                x = requantize(total / spec.size ** 2, p["out"])
            elif spec.kind == "pool":
                total = F.avg_pool2d(x, spec.size) * spec.size ** 2
                coef = self.weight(i, dtype).view(1, -1, 1, 1)
                acc = total * coef + self.bias(i, dtype).view(1, -1, 1, 1)
                x = self.activate(i, acc, sat)
            else:
                centers = self.weight(i, dtype)
                x = -((x.flatten(1).unsqueeze(1) - centers.unsqueeze(0)) ** 2).sum(dim=2)
            if taps is not None:
                taps[spec.name] = self._codes(i, x)
        return x

    def _codes(self, i, x):
        p, spec = self.plan[i], self.config.layers[i]
        with torch.no_grad():
            if spec.kind == "rbf":
                frac = 2 * p["in"]["frac"]
                return (-x * 2.0 ** frac).round().long()
            if p["final"]:
                return (x * _scale(p["acc_frac"], x)).round().long()
            return (x * _scale(p["out"]["frac"], x)).round().long()

"""The fake-quantized PyTorch model: the integer model's arithmetic on real-valued tensors.

:class:`QuantLeNet` runs a float :class:`quant.model.LeNet`'s parameters through the formats of
a plan (see :mod:`quant.quantize`). In float64 every value it computes is an integer code times
a power of two and every sum stays below 2^53, so it computes exactly the numbers of
``golden/`` (tests compare every score of every image). In float32 it trains (QAT) with
straight-through estimators: rounding passes the gradient unchanged and lookup-table
activations take the gradient of the float function.

It runs the layers of ``config.exported`` (a batchnorm folded into the conv or dense layer
before it), each by its kind's entry in :data:`quant.layers.MODULES`. The plan holds, per
exported layer, the formats chosen by :func:`quant.quantize.plan_formats`:

- ``in``: input format ``{"bits", "frac", "signed"}``;
- ``weight``: weight format, ``frac`` an int or a per-output-channel list;
- ``acc_bits``; ``requant``: the format the accumulator is requantized into (the output format,
  or the LUT's signed input format); ``out``: the output format; ``lut``: the table (int64
  NumPy) when the activation is a lookup table; ``final``: scores are accumulators.
"""

import torch
import torch.nn.functional as F
from torch import nn

from golden import layers as GL

from .formats import code_range, quantize_tensor, requantize, round_half_up, scale
from .layers import MODULES, Counts, activation_fn, float_parameters

__all__ = ["QuantLeNet", "code_range", "round_half_up"]


class QuantLeNet(nn.Module):
    """A :class:`quant.model.LeNet` computing through the formats of ``plan``."""

    def __init__(self, model, plan):
        super().__init__()
        self.model = model
        self.plan = plan
        self.config = model.config
        self.luts = [None if p.get("lut") is None else torch.from_numpy(p["lut"]) for p in plan]
        #: Per exported layer, whether clamping its table's input at the low (high) end is
        #: lossless (:func:`golden.layers.lut_lossless`); ``None`` without a table.
        self.lossless = [None if p.get("lut") is None else
                         GL.lut_lossless(p["lut"], spec.activation, p["out"])
                         for p, spec in zip(plan, self.config.exported, strict=True)]

    # Quantized parameters (shared with export so the exported codes are these).
    def weight(self, i, dtype=torch.float64):
        """Return the fake-quantized weight of exported layer ``i`` (batchnorms folded)."""
        w, _ = float_parameters(self.model, self.config.exported[i], dtype)
        return quantize_tensor(w, self.plan[i]["weight"])

    def bias(self, i, dtype=torch.float64):
        """Return the fake-quantized bias of exported layer ``i``, at the accumulator's scale."""
        p = self.plan[i]
        _, b = float_parameters(self.model, self.config.exported[i], dtype)
        bits = p["acc_bits"] - 1  # the bias lies in the product-sum range
        return quantize_tensor(b, {"bits": bits, "frac": p["acc_frac"], "signed": True})

    def activate(self, i, acc, counts):
        """Requantize the accumulators of exported layer ``i`` and apply its activation,
        counting in ``counts`` (a :class:`quant.layers.Counts`) as golden does: a clamp of a
        table's input at a lossless end is a clamp, any other clamp a saturation."""
        p, spec = self.plan[i], self.config.exported[i]
        if p["final"]:
            return acc
        fmt = p["requant"]
        if self.luts[i] is None:
            return requantize(acc, fmt, counts.saturations, spec.name)
        lo, hi = code_range(fmt)
        codes = round_half_up(acc * scale(fmt["frac"], acc))
        ends = ((codes < lo).sum(), (codes > hi).sum())
        for into in (counts.saturations, counts.clamps):
            into.setdefault(spec.name, 0)
        for clamped, lossless in zip(ends, self.lossless[i], strict=True):
            into = counts.clamps if lossless else counts.saturations
            into[spec.name] += int(clamped)
        pre = requantize(acc, fmt)
        lut = self.luts[i]
        index = (pre * scale(fmt["frac"], pre)).round().long() + (1 << (fmt["bits"] - 1))
        out = lut[index].to(pre.dtype) / scale(p["out"]["frac"], pre)
        smooth = activation_fn(spec.activation)(pre)
        return smooth + (out - smooth).detach()

    def forward(self, images, taps=None, saturations=None, dtype=torch.float64, clamps=None):
        """Return the scores (logits; for RBF, negative distances) of uint8 images.

        ``taps`` (a dict) receives each exported layer's output as integer codes (int64, the
        final layer's raw integer scores); ``saturations`` and ``clamps`` (dicts) count per
        exported layer golden's two numbers (:meth:`golden.IntegerModel.run`): clamps that can
        change the output, and lossless clamps of a lookup table's input.
        """
        x = self.model.prepare(images).to(dtype)
        x = quantize_tensor(x, self.plan[0]["in"])  # exact for raw pixels
        if self.config.input_pad:
            x = F.pad(x, (self.config.input_pad,) * 4)
        counts = Counts({} if saturations is None else saturations,
                        {} if clamps is None else clamps)
        for i, spec in enumerate(self.config.exported):
            entry = MODULES[spec.kind]
            x = entry.forward(self, i, x, counts, dtype)
            if taps is not None:
                taps[spec.name] = entry.codes(self.plan[i], x)
        return x

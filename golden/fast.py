"""The integer model run exactly in float32: the path :meth:`IntegerModel.run` takes.

The layer functions of :mod:`golden.layers` compute on int64 arrays, one rule at a time. This
module computes the same integers with fewer, cheaper passes: codes are float32 values, the
requantization shift, bias and rounding constant are folded into the matrix product, and a
layer's whole output is produced by one BLAS product plus one or two elementwise passes. It is
exact, not approximate, because of one fact and a bound checked per layer before anything runs.

**The fact.** A float32 holds every integer of magnitude at most 2^24, and every such integer
times a power of two 2^e (for |e| <= 62 here, far inside float32's exponent range, so never a
subnormal or an overflow). IEEE 754 arithmetic (+, x, fused multiply-add, floor, min/max, the
conversion to an integer type) returns the exact result whenever that result is representable,
whatever the order of operations. So a product ``Σ_i a_i·b_i`` of such numbers, summed by BLAS
in any order, blocked or fused, is exact if every partial sum is representable: if all the
terms are integer multiples of 2^e and ``Σ_i |a_i·b_i| < 2^24 · 2^e``, every partial sum is an
integer multiple of 2^e bounded by that sum, hence representable.

**The bound.** The codes a layer receives lie in its ``in_format`` (images are checked, every
output is clamped to its format or read from a table whose entries are checked, pooling keeps
the range), so ``|x| <= X``, the largest magnitude of the format. For output channel ``o`` of a
conv or dense layer with shift ``s = s_o`` the plan computes, in one product,

    y = Σ_i (w[o, i] · 2^-s) · x_i + c_o · 1,    c_o = (bias[o] + half + K · 2^s) · 2^-s

with ``half = 2^(s-1)`` if ``s > 0`` else 0 and an integer offset ``K`` (0 unless a lookup table
is extended, below); for ``s < 0`` (a left shift) ``K = 0`` and ``c_o = bias[o] · 2^-s``. Every
term is an integer multiple of ``2^-s``; the plan requires, for every ``o``, with Python ints,

    Σ_i |w[o, i]| · X + |bias[o] + half + K · 2^s| < 2^24        (s >= 0)
    Σ_i |w[o, i]| · X + |bias[o]| < 2^24                          (s < 0)

Then ``y`` is exact and, with ``acc = bias[o] + Σ_i w[o, i] · x_i`` as in the README,
``floor(y) - K = (acc + half) >> s`` (or ``acc << -s``): the requantized code before
saturation. Subsampling (``coef · Σwindow + bias``), average pooling (``Σwindow``, plus half,
times ``2^-shift``), global average pooling (``Σmap · mul`` plus half, times ``2^-shift``),
RBF distances and final scores (``s = 0``) are checked the same way, and every output format,
lookup-table input and table entry must fit ``2^24`` (so clamp limits are exact). A layer that
fails its check runs on its int64 reference (:meth:`golden.ops.Op.forward`, the functions of
:mod:`golden.layers`) instead (e.g. 16-bit models); the two paths meet through exact
conversions.

**Where the code is.** This module holds the shared machinery (layouts, the requantization,
the bounds, :class:`Plan`); each layer kind's stage is built by its op in :mod:`golden.ops`
(``Op.stage``), so the plan never looks at a layer's kind.

**Saturation and activation.** With ``v = floor(y) - K``: codes above ``hi`` or below ``lo`` are
exactly ``y >= hi + 1 + K`` and ``y < lo + K`` (counted, except the ReLU's clamp at 0: as
clamps at a lookup table's lossless end, ``layer.lossless``, else as saturations), then

- ``relu``/``none``: ``clip(floor(y), lo, hi)`` (K = 0);
- ``lut``, extended table (when it has at most ``EXT_LIMIT`` entries and the bound holds with
  its ``K``): ``K`` makes every reachable ``y >= 0``, so truncation to an integer is ``floor``,
  and ``ext[t] = table[clip(t - K, lo, hi) + 2^(in_bits-1)]`` for every reachable ``t``: one
  conversion and one gather, the clamp built into the table;
- ``lut`` otherwise: ``clip(floor(y))``, then the table rotated so that negative codes index
  from its end.

**Max pooling after a monotone activation** (relu, none, or a non-decreasing table) is taken on
``y`` before the activation when no taps are requested: ``max`` commutes with non-decreasing
functions, so the activation runs on a quarter of the values; saturations are still counted on
every ``y``.

**Layout.** Activations are NHWC float32 (channels innermost) between fast layers, so a
convolution is one product of a row-banded im2col matrix (a block of ``b`` output columns of one
output row per matrix row: ``k`` input rows of ``b + k - 1`` columns) with a banded weight
matrix, whose columns are ordered so that a following pool's window phases are contiguous
blocks. Dense and RBF weights are permuted to the layout they read; taps are converted back to
the reference NCHW int64 layout.
"""

import collections
import threading

import numpy as np

from . import layers as L

__all__ = ["F32_EXACT", "EXT_LIMIT", "NotExact", "Spatial", "Requant", "Stage", "Slow", "Link",
           "Plan", "need", "fits", "check_format", "max_code", "count", "buffer", "box", "window"]

#: Every integer of magnitude at most 2^24 is a float32; bounds must stay strictly below.
F32_EXACT = 1 << 24
#: Largest extended lookup table (entries of float32; 4 MiB).
EXT_LIMIT = 1 << 20


class NotExact(Exception):
    """A layer's float32 bound does not hold: it runs on the int64 layer functions."""


def max_code(fmt):
    """The largest magnitude of a code of ``fmt``."""
    lo, hi = L.format_range(fmt)
    return max(-lo, hi)


def need(condition, why):
    """Raise :class:`NotExact` with ``why`` unless ``condition``."""
    if not condition:
        raise NotExact(why)


def fits(total, why):
    """Require a bound on a sum's partial sums to lie below 2^24 (:data:`F32_EXACT`)."""
    need(total < F32_EXACT, why)


def check_format(fmt, what):
    """Require every code of ``fmt`` to be a float32 integer."""
    need(max_code(fmt) <= F32_EXACT, f"{what} codes reach beyond 2^24")


class Spatial:
    """Where the activations of a batch lie in a float32 array.

    ``[m, H, W/b, P, b/P, C]``: NHWC with each row cut in blocks of ``b`` columns, the columns of
    a block ordered by phase ``p`` (column ``j = block·b + q·P + p``) so that the ``P`` phases of
    a size-``P`` pooling window are contiguous runs. ``P = b = 1`` is plain NHWC; a vector of
    ``F`` features is ``C = F, H = W = 1``.
    """

    def __init__(self, channels, height, width, phase=1, block=1):
        self.shape = (channels, height, width)
        self.phase, self.block = phase, block

    def view(self, x, m):
        c, h, w = self.shape
        b, p = self.block, self.phase
        return x.reshape(m, h, w // b, p, b // p, c)

    def to_reference(self, x, m):
        """Return int64 NCHW ``[m, C, H, W]``."""
        c, h, w = self.shape
        nchw = self.view(x, m).transpose(0, 5, 1, 2, 4, 3).reshape(m, c, h, w)
        return nchw.astype(np.int64)

    def from_reference(self, x, m, dtype=np.float32):
        """Return the layout's array from a reference ``[m, C, H, W]`` (or flat) array."""
        c, h, w = self.shape
        b, p = self.block, self.phase
        v = np.asarray(x).reshape(m, c, h, w // b, b // p, p).transpose(0, 2, 3, 5, 4, 1)
        return np.ascontiguousarray(v, dtype=dtype).reshape(m, c * h * w)

    def order(self):
        """Reference (C, H, W) flat index of each element of the layout, in memory order."""
        return self.from_reference(np.arange(np.prod(self.shape)), 1, np.int64)[0]


def buffer(local, key, shape, dtype=np.float32, fill=None):
    """A per-thread array of at least ``shape[0]`` rows, reused across batches."""
    store = local.__dict__.setdefault("buffers", {})
    array = store.get(key)
    if array is None or array.shape[0] < shape[0] or array.shape[1:] != tuple(shape[1:]):
        array = np.zeros(shape, dtype) if fill is None else np.full(shape, fill, dtype)
        store[key] = array
    return array[:shape[0]]


def count(y, threshold, above):
    """How many of ``y`` are ``>= threshold`` (``above``) or ``< threshold``."""
    if y.size == 0:
        return 0
    if above:
        return int(np.count_nonzero(y >= threshold)) if y.max() >= threshold else 0
    return int(np.count_nonzero(y < threshold)) if y.min() < threshold else 0


class Requant:
    """The requantization and activation of an affine layer, applied to its product ``y``.

    ``acc_lo``/``acc_hi`` (per output channel, Python ints) are the exact range of the
    accumulators without bias over inputs in the layer's format; ``fan`` is ``Σ_i |w[o, i]| · X``
    per channel. The producer multiplies channel ``o`` by :meth:`scales` and adds
    :meth:`constants`; raises :class:`NotExact` when the bound of the module docstring fails.
    """

    def __init__(self, layer, acc_lo, acc_hi, fan):
        check_format(layer.requant_format, "requantized")
        if layer.lut is not None:
            check_format(layer.out_format, "lookup table output")
        self.layer = layer
        self.shifts = [int(s) for s in layer.shift]
        self.bias = [int(b) for b in layer.bias]
        self.lo, self.hi = L.format_range(layer.requant_format)
        self.signed = layer.requant_format["signed"]
        self.lut = layer.lut
        self.lossless = layer.lossless if layer.lut is not None else (False, False)
        self.halves = [1 << (s - 1) if s > 0 else 0 for s in self.shifts]
        self.k = 0
        self.ext = None
        if self.lut is not None:
            self._extend(acc_lo, acc_hi, fan)
        if self.ext is None:
            self._check(fan)
            if self.lut is not None:
                offset = 1 << (layer.lut_bits - 1)
                self.rot = np.roll(self.lut, -offset).astype(np.float32)
        self.floor = any(s > 0 for s in self.shifts)
        table = self.ext if self.ext is not None else self.lut
        self.monotone = table is None or bool(np.all(np.diff(table) >= 0))

    def _constants(self, k):
        return [b + h + (k << s if s >= 0 else 0)
                for b, h, s in zip(self.bias, self.halves, self.shifts, strict=True)]

    def _check(self, fan):
        for o, (f, c) in enumerate(zip(fan, self._constants(self.k), strict=True)):
            need(f + abs(c) < F32_EXACT,
                  f"output {o}: Σ|w|·X + |bias + rounding| = {f + abs(c)} >= 2^24")

    def _extend(self, acc_lo, acc_hi, fan):
        if any(s < 0 for s in self.shifts):
            return
        values = [((a + b + h) >> s, (z + b + h) >> s) for a, z, b, h, s in
                  zip(acc_lo, acc_hi, self.bias, self.halves, self.shifts, strict=True)]
        vmin = min(v[0] for v in values)
        vmax = max(v[1] for v in values)
        if vmax - vmin + 1 > EXT_LIMIT:
            return
        self.k = -vmin
        try:
            self._check(fan)
        except NotExact:
            self.k = 0
            return
        codes = np.clip(np.arange(vmin, vmax + 1, dtype=np.int64), self.lo, self.hi)
        self.ext = self.lut[codes - self.lo].astype(np.float32)

    def scales(self):
        return np.array([np.ldexp(1.0, -s) for s in self.shifts], dtype=np.float32)

    def constants(self):
        """The folded constants ``c_o`` as float32 (exact: checked by :meth:`_check`)."""
        return np.array([np.ldexp(float(c), -s) for c, s in
                         zip(self._constants(self.k), self.shifts, strict=True)],
                        dtype=np.float32)

    def count(self, y, peak=None):
        """``(saturations, clamps)`` among ``y`` (``peak``: the pooled maxima of ``y``, for a
        quick test); a clamp at an end of ``layer.lossless`` is a clamp, else a saturation."""
        high = count(y if peak is None else peak, self.hi + 1 + self.k, True)
        if high and peak is not None:
            high = count(y, self.hi + 1 + self.k, True)
        low = count(y, self.lo + self.k, False) if self.signed else 0
        low_ok, high_ok = self.lossless
        saturations = (0 if low_ok else low) + (0 if high_ok else high)
        return saturations, low + high - saturations

    def apply(self, y, local, key):
        """Codes from ``y`` (overwritten); a new or per-thread array of y's shape."""
        if self.ext is not None:
            index = buffer(local, key, (y.size,), np.intp).reshape(y.shape)
            np.copyto(index, y, casting="unsafe")
            return np.take(self.ext, index, mode="wrap", out=y)
        if self.floor:
            np.floor(y, out=y)
        np.clip(y, self.lo, self.hi, out=y)
        if self.lut is None:
            return y
        index = buffer(local, key, (y.size,), np.intp).reshape(y.shape)
        np.copyto(index, y, casting="unsafe")
        return np.take(self.rot, index, mode="wrap", out=y)


def box(weight_rows, fmt):
    """Per row: the accumulator range (no bias) over inputs in ``fmt``, and ``Σ|w|·X``.

    Python ints (object arrays), so nothing can overflow.
    """
    lo, hi = L.format_range(fmt)
    w = np.asarray(weight_rows, dtype=np.int64).reshape(len(weight_rows), -1).astype(object)
    low, high = w * lo, w * hi
    acc_lo = np.minimum(low, high).sum(axis=1)
    acc_hi = np.maximum(low, high).sum(axis=1)
    fan = np.abs(w).sum(axis=1) * max(-lo, hi)
    return [int(v) for v in acc_lo], [int(v) for v in acc_hi], [int(v) for v in fan]


def window(x, m, layout, size, op):
    """Reduce each size×size window of a spatial batch with ``op``; return NHWC."""
    c, h, w = layout.shape
    if size == 1:
        return x.reshape(m, h, w, c)
    phase, block = layout.phase, layout.block
    if phase == 1:
        phase = block = size
    assert phase == size
    v = x.reshape(m, h // size, size, w // block, size, block // size, c)
    rows = op(v[:, :, 0], v[:, :, 1])
    for r in range(2, size):
        op(rows, v[:, :, r], out=rows)
    out = op(rows[:, :, :, 0], rows[:, :, :, 1])
    for p in range(2, size):
        op(out, rows[:, :, :, p], out=out)
    return out.reshape(m, h // size, w // size, c)


class Stage:
    """One layer's step of a :class:`Plan` (each op of :mod:`golden.ops` builds its own).

    ``run(x, m, local)`` maps a batch of ``m`` float32 inputs in ``in_layout`` to the outputs in
    ``layout`` and returns ``(y, {layer name: (saturations, clamps)})``. ``fusable``: a max
    pooling after it may apply its activation (``act``) to the pooled values, setting
    ``defer``; ``fused``: the stage whose activation this one applies.
    """

    fast = True
    layout = None       # the Spatial layout of the output
    defer = False       # output is a product awaiting the next stage's fused activation
    fusable = False
    fused = None

    def __init__(self, layer, index):
        self.layer = layer
        self.index = index
        self.name = layer.name

    def tap(self, x, m):
        return self.layout.to_reference(x, m).reshape((m,) + self.layer.tap_shape)


class Slow(Stage):
    """A layer whose float32 bound fails: its int64 reference (``layer.forward``)."""

    fast = False

    def __init__(self, layer, index, why):
        super().__init__(layer, index)
        self.why = why
        self.layout = Spatial(*layer.out_shape)

    def run(self, x, m, local):
        out, _, counts = self.layer.forward(x)
        return out, {self.name: counts}

    def tap(self, x, m):
        return x


#: What a layer's stage is built from: the layout of its input (that of the previous fast stage,
#: else plain NCHW-ordered NHWC), the previous stage (``None`` first), the next layer (``None``
#: last), whether a max pooling may take the previous activation, and whether the plan's input
#: already holds this (first) layer's padding.
Link = collections.namedtuple("Link", "in_layout previous following fuse padded")


class Plan:
    """How :meth:`IntegerModel.run` computes each layer: float32 where exact, else int64.

    ``fuse`` lets a max pool take the activation of the conv before it (no taps then).
    ``paths`` names, per layer, "float32", "float32 (activation after max pooling)" or
    "int64: <why>".
    """

    def __init__(self, model, fuse):
        self.model = model
        self.local = threading.local()
        layers = model._layers
        stages = []
        layout = None                       # the layout the previous fast stage produces
        channels, height, width = model.input_shape
        self.pad = model.input_pad
        self.input_fast = True
        try:
            check_format(model._input_format, "input")
        except NotExact:
            self.input_fast = False
        self.extra_pad = layers[0].padding if self.input_fast else 0
        pad = self.pad + self.extra_pad
        layout = Spatial(channels, height + 2 * pad, width + 2 * pad) if self.input_fast else None
        for i, layer in enumerate(layers):
            link = Link(layout or Spatial(*layer.in_shape), stages[-1] if stages else None,
                        layers[i + 1] if i + 1 < len(layers) else None, fuse,
                        i == 0 and self.extra_pad > 0)
            try:
                stage = layer.stage(i, link)
            except NotExact as exc:
                stage = Slow(layer, i, str(exc))
                if i == 0:
                    self.extra_pad = 0
            stages.append(stage)
            layout = stage.layout if stage.fast else None
        if not stages[0].fast:
            self.input_fast = False
        self.stages = stages

    @property
    def paths(self):
        out = {}
        for stage in self.stages:
            if not stage.fast:
                out[stage.name] = f"int64: {stage.why}"
            elif stage.fused is not None:
                out[stage.name] = "float32"
                out[stage.fused.name] = "float32 (activation after max pooling)"
            else:
                out.setdefault(stage.name, "float32")
        return {name: out[name] for name in self.model.layer_names}

    def _input(self, batch, m):
        pad = self.pad
        if not self.input_fast:
            return L.pad2d(batch, pad), False
        pad += self.extra_pad
        channels, height, width = self.model.input_shape
        buf = buffer(self.local, ("input", pad), (m, height + 2 * pad, width + 2 * pad, channels))
        buf[:, pad:pad + height, pad:pad + width] = batch.transpose(0, 2, 3, 1)
        return buf, True

    def forward(self, batch, taps):
        """Run one batch ``[m, C, H, W]`` of integer codes; return scores, counts, taps."""
        m = batch.shape[0]
        x, fast = self._input(batch, m)
        counts = {}
        tapped = []
        for stage in self.stages:
            layer = stage.layer
            if stage.fast and not fast:
                x = stage.in_layout.from_reference(x.reshape((m,) + layer.in_shape), m)
            elif fast and not stage.fast:
                x = self._previous_layout(stage).to_reference(x, m)
                x = x.reshape((m,) + tuple(layer.in_shape))
            x, count = stage.run(x, m, self.local)
            counts.update(count)
            fast = stage.fast
            if taps:
                tapped.append(stage.tap(x, m))
        scores = (x.astype(np.int64) if fast else x).reshape(m, self.model.num_classes)
        return scores, [counts.get(name, (0, 0)) for name in self.model.layer_names], tapped

    def _previous_layout(self, stage):
        if stage.index == 0:
            channels, height, width = self.model.input_shape
            pad = self.pad + self.extra_pad
            return Spatial(channels, height + 2 * pad, width + 2 * pad)
        return self.stages[stage.index - 1].layout

"""The golden op of every layer kind: its record's checks, its int64 reference, its float32 stage.

:data:`OPS` maps each exported kind of :mod:`core.kinds` to an :class:`Op` subclass. An instance
is one verified layer of a ``qmodel.json``: the constructor reads the record (the structural
fields through ``core.kinds.KINDS[kind].read_record`` and ``.out_shape``, so the shape rules live
there only) and checks formats, arrays and widths against the rules of ``golden/README.md``;
:meth:`Op.forward` computes the layer on int64 arrays with :mod:`golden.layers` (the reference);
:meth:`Op.stage` builds the layer's step of :class:`golden.fast.Plan`, exact in float32, or
raises :class:`golden.fast.NotExact` so that the layer runs on :meth:`Op.forward` instead.

Adding a kind: describe it in ``core/kinds.py``, then register one :class:`Op` here (and its
random generator in :mod:`golden.random_model`).
"""

import abc
import math

import numpy as np
from numpy.lib.stride_tricks import as_strided

from core.kinds import KINDS, gap_scale
from core.registry import Registry

from . import fast as F
from . import layers as L

__all__ = ["OPS", "Op"]

#: The golden op of every exported layer kind (an :class:`Op` subclass).
OPS = Registry("golden op", exported_only=True)

# The kinds that may end a network (give the scores), for messages.
_FINAL_KINDS = " or ".join(n for n, k in KINDS.items() if k.exported and k.final != "never")
# Output columns of a convolution's product that keep BLAS at full speed (block width choice).
_COLUMNS = 64


def _register(kind):
    """Register an :class:`Op` subclass as the op of ``kind`` and bind its :class:`LayerKind`."""
    def decorate(cls):
        cls.kind = kind
        cls.spec = KINDS[kind]
        return OPS.register(kind)(cls)
    return decorate


def _same_format(a, b):
    return a["bits"] == b["bits"] and a["frac"] == b["frac"] and a["signed"] == b["signed"]


def _describe(fmt):
    sign = "signed" if fmt["signed"] else "unsigned"
    return f"{sign} {fmt['bits']}-bit frac {fmt['frac']}"


class Op(abc.ABC):
    """One verified layer of an integer model, ready to run.

    Parameters
    ----------
    checker : golden.model's record checker
        Reads fields and fails with the file, the place and the fix.
    index : int
        The layer's position in ``layers``.
    desc : dict
        The layer's record.
    shape : tuple of int
        ``(C, H, W)`` of its input (after the input's padding).
    fmt : dict
        The format of its input (the previous layer's ``out_format``).
    arrays : dict
        The model's verified arrays by name.

    Class attributes: ``kind`` and ``spec`` (the :class:`core.kinds.LayerKind`); ``has_acc``
    (it computes accumulators, checked against ``acc_bits``); ``window`` (the size of the
    non-overlapping windows it reduces, 1 for none: a conv before it orders its output columns
    by window phase); ``classify`` (for kinds that may be final: "argmax" or "argmin");
    ``scores_nonnegative`` (its scores are never negative).
    """

    kind = None
    spec = None
    has_acc = False
    window = 1
    padding = 0
    classify = None
    scores_nonnegative = False

    def __init__(self, checker, index, desc, shape, fmt, arrays):
        self.index = index
        self.name = desc["name"]
        self.where = f"layers[{index}] {self.name!r}"
        self.checker = checker
        self.final = checker.boolean(desc, "final", self.where, False)
        if self.final and self.spec.final == "never":
            self.fail(f"a {self.kind} layer cannot be final; end with a {_FINAL_KINDS} layer")
        if not self.final and self.spec.final == "only":
            self.fail(f"{self.kind} is an output layer; set final: true and put it last")
        self.in_format = checker.fmt(desc, "in_format", self.where)
        if not _same_format(self.in_format, fmt):
            self.fail(f"in_format ({_describe(self.in_format)}) differs from the format of its "
                      f"input ({_describe(fmt)})")
        self.in_shape = shape
        self.arrays = self._arrays(desc, arrays)
        self.acc_bits = None

    def fail(self, message):
        self.checker.fail(self.where, message)

    def _arrays(self, desc, arrays):
        names = self.checker.table(desc, "arrays", self.where, {})
        roles = self.spec.roles
        found = {}
        for role, name in names.items():
            if role not in roles:
                self.fail(f"arrays has an unknown entry {role!r}; expected: "
                          f"{', '.join(roles) or 'none'}")
            if not isinstance(name, str) or name not in arrays:
                self.fail(f"arrays.{role}={name!r} is not listed in the model's arrays")
            found[role] = arrays[name]
        return found

    def structure(self, desc):
        """Return the record's ``params`` and the output shape, by the layer-kind table."""
        try:
            params = self.spec.read_record(desc, self.in_shape)
        except KeyError as exc:
            self.fail(f"missing {exc.args[0]!r}")
        except (TypeError, ValueError, IndexError) as exc:
            self.fail(f"malformed record ({exc})")
        return params, tuple(self.spec.out_shape(params, self.in_shape))

    def require(self, role, shape):
        if role not in self.arrays:
            self.fail(f"arrays.{role} is missing")
        array = self.arrays[role]
        if array.shape != tuple(shape):
            self.fail(f"arrays.{role} has shape {list(array.shape)}, expected {list(shape)}")
        return array

    def codes_in(self, role, array, fmt):
        lo, hi = L.format_range(fmt)
        if array.size and (int(array.min()) < lo or int(array.max()) > hi):
            self.fail(f"arrays.{role} holds codes {int(array.min())}..{int(array.max())} outside "
                      f"its format's range {lo}..{hi}")

    def declared_shapes(self, desc, out_shape, exact):
        """Check the ``in_shape``/``out_shape`` of the record (required if ``exact``, else
        optional with only the element count checked) against the derived ones."""
        optional = {} if exact else {"default": None}
        for key, derived in (("in_shape", self.in_shape), ("out_shape", out_shape)):
            declared = self.checker.shape(desc, key, self.where, **optional)
            if declared is None:
                continue
            same = declared == derived if exact else math.prod(declared) == math.prod(derived)
            if not same:
                self.fail(f"{key}={list(declared)} but the network gives {list(derived)}")

    def keeps_format(self, desc, what):
        """Read ``out_format``, which must equal ``in_format``."""
        self.out_format = self.checker.fmt(desc, "out_format", self.where)
        if not _same_format(self.out_format, self.in_format):
            self.fail(f"out_format must equal in_format ({what} keeps the format)")

    @property
    def tap_shape(self):
        """The shape of one image's output in :meth:`IntegerModel.run`'s taps."""
        return tuple(self.out_shape)

    def spatial(self, x):
        return x.reshape((x.shape[0],) + tuple(self.in_shape))

    @abc.abstractmethod
    def forward(self, x):
        """Return ``(output, accumulators or None, (saturations, clamps))`` for an int64
        batch (:meth:`IntegerModel.run` defines the two counts)."""

    @abc.abstractmethod
    def stage(self, index, link):
        """Return the layer's float32 :class:`golden.fast.Stage` (``link``: a
        :class:`golden.fast.Link`); raise :class:`golden.fast.NotExact` if not provably exact."""


# -- affine layers (accumulator, bias, requantization, activation) -----------------------------

class _Affine(Op):
    """A layer with an accumulator, a bias, a requantization and an activation."""

    has_acc = True

    def setup_affine(self, desc, channels, fan_in, weight_shape):
        """Check weights, bias, widths, fractions and activation; ``channels`` outputs."""
        checker, w = self.checker, self.where
        self.weight_format = checker.fmt(desc, "weight_format", w, channels=channels)
        if not self.weight_format["signed"]:
            self.fail("weight_format must be signed")
        self.weight = self.require("weight", weight_shape)
        self.codes_in("weight", self.weight, self.weight_format)
        self.fan_in = fan_in
        w_bits, in_bits = self.weight_format["bits"], self.in_format["bits"]
        self.acc_bits = checker.integer(desc, "acc_bits", w, 2, 62)
        expected = L.acc_bits_for(self.kind, w_bits, in_bits, fan_in)
        if self.acc_bits != expected:
            self.fail(f"acc_bits={self.acc_bits} but bit growth gives {expected} (w_bits "
                      f"{w_bits} + in_bits {in_bits} + ceil(log2(fan_in {fan_in})) + 1)")
        self.bias = self.require("bias", (channels,))
        self.codes_in("bias", self.bias, {"bits": self.acc_bits - 1, "signed": True})
        acc_frac = checker.fracs(checker.get(desc, "acc_frac", w), w, "acc_frac", channels)
        expected = self.weight_format["frac"] + self.in_format["frac"]
        if not np.array_equal(acc_frac, expected):
            self.fail(f"acc_frac={acc_frac.tolist()} but weight frac + in_format frac gives "
                      f"{expected.tolist()}")
        self.acc_frac = acc_frac
        self.setup_activation(desc)

    def setup_activation(self, desc):
        checker, w = self.checker, self.where
        activation = checker.table(desc, "activation", w, {"kind": "none"})
        act = checker.choice(activation, "kind", f"{w} activation", ("relu", "none", "lut"))
        self.activation = act
        self.lut = None
        self.lossless = (False, False)
        if self.final:
            if act != "none" or "lut" in self.arrays:
                self.fail("the final layer outputs raw accumulators; set activation "
                          "{'kind': 'none'} and drop its lut")
            if len(set(self.acc_frac.tolist())) != 1:
                self.fail(f"acc_frac={self.acc_frac.tolist()} differs across outputs; the "
                          f"scores must share one scale, so quantize the final layer's "
                          f"weights per tensor")
            return
        self.out_format = checker.fmt(desc, "out_format", w)
        target = self.out_format
        if act == "relu" and self.out_format["signed"]:
            self.fail("activation relu needs an unsigned out_format (the clamp at 0 is the "
                      "ReLU)")
        if act == "none" and not self.out_format["signed"]:
            self.fail("activation none needs a signed out_format")
        if act == "lut":
            aw = f"{w} activation"
            function = checker.choice(activation, "function", aw, L.LUT_FUNCTIONS)
            self.lut_bits = checker.integer(activation, "in_bits", aw, 1, 24)
            lut_frac = checker.integer(activation, "in_frac", aw, -64, 126)
            target = {"bits": self.lut_bits, "frac": lut_frac, "signed": True}
            self.lut = self.require("lut", (1 << self.lut_bits,))
            self.codes_in("lut", self.lut, self.out_format)
            self.lossless = L.lut_lossless(self.lut, function, self.out_format)
        elif "lut" in self.arrays:
            self.fail(f"arrays.lut is given but activation is {act!r}")
        self.requant_format = target
        self.shift = self.acc_frac - target["frac"]
        if np.any(np.abs(self.shift) > 62):
            self.fail(f"the requantization shifts {self.shift.tolist()} exceed 62 bits; check "
                      f"the fractions")

    def activate(self, acc):
        if self.final:
            return acc, (0, 0)
        q, saturations, clamps = L.requantize_split(acc, self.shift, self.requant_format,
                                                    self.lossless)
        if self.lut is not None:
            q = L.apply_lut(q, self.lut, self.lut_bits)
        return q, (saturations, clamps)

    @abc.abstractmethod
    def accumulate(self, x):
        """Return the int64 accumulators of a batch."""

    def forward(self, x):
        acc = self.accumulate(x)
        out, saturations = self.activate(acc)
        return out, acc, saturations


# -- conv ---------------------------------------------------------------------------------------

@_register("conv")
class ConvOp(_Affine):
    def __init__(self, checker, index, desc, shape, fmt, arrays):
        super().__init__(checker, index, desc, shape, fmt, arrays)
        w = self.where
        self.kernel = k = checker.integer(desc, "kernel", w, 1)
        self.padding = p = checker.integer(desc, "padding", w, 0, default=0)
        checker.shape(desc, "out_shape", w, ndim=3)
        channels, height, width = shape
        params, self.out_shape = self.structure(desc)
        out_channels = params["out_channels"]
        if min(self.out_shape) < 1:
            self.fail(f"kernel={k} is larger than its {height}x{width} input (padding {p})")
        self.declared_shapes(desc, self.out_shape, exact=True)
        connected = channels
        if "connections" in self.arrays:
            table = self.require("connections", (out_channels, channels))
            if not np.all((table == 0) | (table == 1)):
                self.fail("arrays.connections must hold only 0 and 1")
            if np.any(table.sum(axis=1) == 0):
                self.fail("arrays.connections leaves an output channel with no input")
            connected = int(table.sum(axis=1).max())
            weight = self.arrays.get("weight")
            if weight is not None and weight.shape == (out_channels, channels, k, k):
                stray = (table == 0)[:, :, None, None] & (weight != 0)
                if np.any(stray):
                    o, c = (int(i) for i in np.argwhere(stray)[0][:2])
                    self.fail(f"weight[{o}, {c}] is nonzero but connections[{o}, {c}] = 0; "
                              f"unconnected pairs must have all-zero weights")
        self.setup_affine(desc, out_channels, connected * k * k, (out_channels, channels, k, k))

    def accumulate(self, x):
        return L.conv2d(L.pad2d(self.spatial(x), self.padding), self.weight, self.bias)

    def stage(self, index, link):
        following = link.following
        return ConvStage(self, index, following.window if following is not None else 1,
                         link.padded)


class ConvStage(F.Stage):
    """A convolution as one product of a row-banded im2col matrix with a banded weight matrix.

    ``phase``: the window of the pooling after it (its output columns are ordered so that the
    window's phases are contiguous); ``padded``: the plan's input already holds the padding.
    """

    def __init__(self, layer, index, phase, padded):
        super().__init__(layer, index)
        F.check_format(layer.in_format, "input")
        channels, height, width = layer.in_shape
        out_channels, out_h, out_w = layer.out_shape
        k = layer.kernel
        rows = layer.weight.reshape(out_channels, -1)
        self.act = F.Requant(layer, *F.box(rows, layer.in_format))
        self.fusable = self.act.monotone
        self.block = b = self._block(out_w, out_channels, phase)
        self.padded = padded
        self.in_layout = F.Spatial(channels, height, width)
        self.layout = F.Spatial(out_channels, out_h, out_w, phase, b)
        span = (b + k - 1) * channels
        depth = k * span
        # Banded weights: row (u, v_local, c) of the im2col block, column (p, q, o) for output
        # column j_local = q·P + p; weights scaled by 2^-s_o; the last row is the constant.
        weight = layer.weight.astype(np.float64) * self.act.scales().astype(np.float64)[
            :, None, None, None]
        band = np.zeros((k, b + k - 1, channels, phase, b // phase, out_channels))
        for j in range(b):
            for v in range(k):
                band[:, j + v, :, j % phase, j // phase, :] = weight[:, :, :, v].transpose(2, 1, 0)
        band = band.reshape(depth, b * out_channels)
        constant = np.tile(self.act.constants(), b)[None, :]
        self.matrix = np.ascontiguousarray(np.concatenate([band, constant]), dtype=np.float32)
        self.geometry = (k, out_h, out_w // b, span, depth, layer.padding)

    @staticmethod
    def _block(width, out_channels, phase):
        """The block width b: a multiple of ``phase`` dividing ``width``.

        A matrix row computes ``b · O`` outputs from ``k·(b + k - 1)·C`` inputs, so a wider
        block copies fewer inputs per output but multiplies more zeros of the band; BLAS needs
        about 64 output columns to run at full speed (measured), so take the narrowest block
        that gives them, else the widest.
        """
        choices = [b for b in range(phase, width + 1, phase) if width % b == 0]
        wide = [b for b in choices if b * out_channels >= _COLUMNS]
        return min(wide) if wide else max(choices)

    def run(self, x, m, local):
        k, out_h, blocks, span, depth, pad = self.geometry
        channels, height, width = self.in_layout.shape
        if self.padded:                 # the input stage added this layer's padding
            x = x.reshape(m, height + 2 * pad, width + 2 * pad, channels)
        elif pad:
            buf = F.buffer(local, (self.index, "pad"),
                           (m, height + 2 * pad, width + 2 * pad, channels))
            buf[:, pad:pad + height, pad:pad + width] = x.reshape(m, height, width, channels)
            x = buf
        else:
            x = np.ascontiguousarray(x.reshape(m, height, width, channels), dtype=np.float32)
        rows = m * out_h * blocks
        cols = F.buffer(local, (self.index, "cols"), (rows, depth + 1), fill=1.0)
        item = cols.itemsize
        dst = as_strided(cols, (m, out_h, blocks, k, span),
                         (out_h * blocks * (depth + 1) * item, blocks * (depth + 1) * item,
                          (depth + 1) * item, span * item, item))
        s_n, s_h, s_w = x.strides[0], x.strides[1], x.strides[2]
        src = as_strided(x, (m, out_h, blocks, k, span),
                         (s_n, s_h, self.block * s_w, s_h, x.strides[-1]))
        np.copyto(dst, src)
        y = np.matmul(cols, self.matrix,
                      out=F.buffer(local, (self.index, "y"), (rows, self.matrix.shape[1])))
        if self.defer:
            return y, {}
        count = self.act.count(y)
        return self.act.apply(y, local, (self.index, "index")), {self.name: count}


# -- pool -----------------------------------------------------------------------------------------

@_register("pool")
class PoolOp(Op):
    def __init__(self, checker, index, desc, shape, fmt, arrays):
        super().__init__(checker, index, desc, shape, fmt, arrays)
        w = self.where
        self.mode = checker.choice(desc, "mode", w, self.spec.modes)
        self.size = self.window = checker.integer(desc, "size", w, 1)
        _, height, width = shape
        if height % self.size or width % self.size:
            self.fail(f"size={self.size} does not divide its {height}x{width} input")
        if self.mode == "avg" and self.size & (self.size - 1):
            self.fail(f"size={self.size}: average pooling needs a power-of-two size")
        _, self.out_shape = self.structure(desc)
        self.declared_shapes(desc, self.out_shape, exact=True)
        self.keeps_format(desc, "pooling")

    def forward(self, x):
        pool = L.maxpool if self.mode == "max" else L.avgpool
        return pool(self.spatial(x), self.size), None, (0, 0)

    def stage(self, index, link):
        previous = link.previous
        fused = None
        if link.fuse and self.mode == "max" and previous is not None and previous.fusable:
            fused = previous
        stage = PoolStage(self, index, link.in_layout, fused)
        if fused is not None:
            fused.defer = True
        return stage


class PoolStage(F.Stage):
    """Max or average pooling of float32 codes; a max pooling may take the activation of the
    conv before it (``fused``), applied to the pooled values only."""

    def __init__(self, layer, index, in_layout, fused=None):
        super().__init__(layer, index)
        F.check_format(layer.in_format, "input")
        size = layer.size
        self.shift = 2 * (size.bit_length() - 1)
        if layer.mode == "avg":
            half = 1 << self.shift >> 1
            F.fits(size * size * F.max_code(layer.in_format) + half, "window sums reach 2^24")
        self.in_layout = in_layout
        self.layout = F.Spatial(*layer.out_shape)
        self.fused = fused      # the previous conv stage, whose activation runs here

    def run(self, x, m, local):
        size = self.layer.size
        if self.layer.mode == "max":
            out = F.window(x, m, self.in_layout, size, np.maximum)
            if self.fused is None:
                return out, {self.name: (0, 0)}
            act = self.fused.act
            count = act.count(x, peak=out)
            out = act.apply(out, local, (self.index, "index"))
            return out, {self.name: (0, 0), self.fused.name: count}
        out = F.window(x, m, self.in_layout, size, np.add)    # a new array unless size is 1
        if self.shift:
            out += 1 << (self.shift - 1)
            out *= np.float32(2.0 ** -self.shift)
            np.floor(out, out=out)
        return out, {self.name: (0, 0)}


# -- subsample ----------------------------------------------------------------------------------

@_register("subsample")
class SubsampleOp(_Affine):
    def __init__(self, checker, index, desc, shape, fmt, arrays):
        super().__init__(checker, index, desc, shape, fmt, arrays)
        self.size = self.window = s = checker.integer(desc, "size", self.where, 1)
        channels, height, width = shape
        if height % s or width % s:
            self.fail(f"size={s} does not divide its {height}x{width} input")
        _, self.out_shape = self.structure(desc)
        self.declared_shapes(desc, self.out_shape, exact=True)
        self.setup_affine(desc, channels, s * s, (channels,))

    def accumulate(self, x):
        return L.subsample(self.spatial(x), self.weight, self.bias, self.size)

    def stage(self, index, link):
        return SubsampleStage(self, index, link.in_layout)


class SubsampleStage(F.Stage):
    """LeCun's subsampling: window sums times ``coef · 2^-s``, plus the folded constant."""

    def __init__(self, layer, index, in_layout):
        super().__init__(layer, index)
        F.check_format(layer.in_format, "input")
        size = layer.size
        coef = [int(c) for c in layer.weight]
        F.fits(size * size * F.max_code(layer.in_format) * max([1] + [abs(c) for c in coef]),
               "window sums times coefficients reach 2^24")
        rows = [[c] * (size * size) for c in coef]
        self.act = F.Requant(layer, *F.box(rows, layer.in_format))
        self.in_layout = in_layout
        self.layout = F.Spatial(*layer.out_shape)
        out_w = layer.out_shape[2]
        self.scale_row = np.tile((np.array(coef, np.float64) *
                                  self.act.scales().astype(np.float64)).astype(np.float32), out_w)
        self.constant_row = np.tile(self.act.constants(), out_w)

    def run(self, x, m, local):
        c, h, w = self.layout.shape
        total = F.window(x, m, self.in_layout, self.layer.size, np.add).reshape(m * h, w * c)
        if self.layer.size == 1:
            total = total.copy()        # a view of x otherwise
        total *= self.scale_row
        total += self.constant_row
        count = self.act.count(total)
        return self.act.apply(total, local, (self.index, "index")), {self.name: count}


# -- gap ----------------------------------------------------------------------------------------

@_register("gap")
class GapOp(Op):
    """Global average pooling: ``(S · mul + 2^(shift-1)) >> shift`` per channel, saturated to
    the input format, ``S`` the channel's sum and ``(mul, shift) = gap_scale(H·W)``."""

    def __init__(self, checker, index, desc, shape, fmt, arrays):
        super().__init__(checker, index, desc, shape, fmt, arrays)
        w = self.where
        _, height, width = shape
        self.area = area = height * width
        if area < 2:
            self.fail(f"global average pooling of a {height}x{width} map does nothing; remove "
                      f"the layer")
        _, self.out_shape = self.structure(desc)
        self.declared_shapes(desc, self.out_shape, exact=True)
        self.keeps_format(desc, "global average pooling")
        mul = checker.integer(desc, "mul", w, 1)
        shift = checker.integer(desc, "shift", w, 1, 62)
        self.mul, self.shift = gap_scale(area)
        if (mul, shift) != (self.mul, self.shift):
            self.fail(f"mul={mul}, shift={shift} but core.kinds.gap_scale({area}) of its "
                      f"{height}x{width} map gives mul={self.mul}, shift={self.shift}")

    def forward(self, x):
        out, saturations = L.global_avgpool(self.spatial(x), self.mul, self.shift,
                                            self.in_format)
        return out, None, (saturations, 0)

    def stage(self, index, link):
        return GapStage(self, index, link.in_layout)


class GapStage(F.Stage):
    """Global average pooling of float32 codes: exact while ``H·W·X·mul + 2^(shift-1) < 2^24``
    (then the sum, its product by ``mul`` and the rounding half are integers below 2^24, and
    the scaling by ``2^-shift`` is exact)."""

    def __init__(self, layer, index, in_layout):
        super().__init__(layer, index)
        F.check_format(layer.in_format, "input")
        half = 1 << (layer.shift - 1)
        F.fits(layer.area * F.max_code(layer.in_format) * layer.mul + half,
               "sums times mul reach 2^24")
        self.in_layout = in_layout
        self.layout = F.Spatial(*layer.out_shape)
        self.lo, self.hi = L.format_range(layer.in_format)
        self.mul = np.float32(layer.mul)
        self.half = np.float32(half)
        self.scale = np.float32(2.0 ** -layer.shift)

    def run(self, x, m, local):
        # Channels are innermost in every layout, so the positions are the middle axis.
        y = x.reshape(m, -1, self.layout.shape[0]).sum(axis=1, dtype=np.float32)
        y *= self.mul
        y += self.half
        y *= self.scale
        np.floor(y, out=y)
        count = F.count(y, self.hi + 1, True) + F.count(y, self.lo, False)
        np.clip(y, self.lo, self.hi, out=y)
        return y, {self.name: (count, 0)}


# -- dense --------------------------------------------------------------------------------------

@_register("dense")
class DenseOp(_Affine):
    classify = "argmax"

    def __init__(self, checker, index, desc, shape, fmt, arrays):
        super().__init__(checker, index, desc, shape, fmt, arrays)
        self.features = features = math.prod(shape)
        checker.integer(desc, "in_features", self.where, features, features)
        checker.integer(desc, "out_features", self.where, 1)
        params, self.out_shape = self.structure(desc)
        self.declared_shapes(desc, self.out_shape, exact=False)
        out_features = params["out_features"]
        self.setup_affine(desc, out_features, features, (out_features, features))

    @property
    def tap_shape(self):
        return (self.out_shape[0],)

    def accumulate(self, x):
        return L.dense(x.reshape(x.shape[0], self.features), self.weight, self.bias)

    def stage(self, index, link):
        return DenseStage(self, index, link.in_layout)


class DenseStage(F.Stage):
    """A dense layer as one product with weights permuted to the input's layout."""

    def __init__(self, layer, index, in_layout):
        super().__init__(layer, index)
        F.check_format(layer.in_format, "input")
        self.in_layout = in_layout
        self.layout = F.Spatial(layer.out_shape[0], 1, 1)
        weight = layer.weight[:, in_layout.order()]
        if layer.final:
            _, _, fan = F.box(weight, layer.in_format)
            for o, (f, b) in enumerate(zip(fan, layer.bias, strict=True)):
                total = f + abs(int(b))
                F.fits(total, f"output {o}: Σ|w|·X + |bias| = {total} >= 2^24")
            scales = np.ones(weight.shape[0])
            constants = layer.bias.astype(np.float32)
        else:
            self.act = F.Requant(layer, *F.box(weight, layer.in_format))
            scales = self.act.scales().astype(np.float64)
            constants = self.act.constants()
        self.matrix = np.ascontiguousarray((weight * scales[:, None]).T, dtype=np.float32)
        self.constants = constants

    def run(self, x, m, local):
        y = np.matmul(x.reshape(m, self.matrix.shape[0]), self.matrix)
        y += self.constants
        if self.layer.final:
            return y, {self.name: (0, 0)}
        count = self.act.count(y)
        return self.act.apply(y, local, (self.index, "index")), {self.name: count}


# -- rbf ----------------------------------------------------------------------------------------

@_register("rbf")
class RbfOp(Op):
    has_acc = True
    classify = "argmin"
    scores_nonnegative = True

    def __init__(self, checker, index, desc, shape, fmt, arrays):
        super().__init__(checker, index, desc, shape, fmt, arrays)
        w = self.where
        self.features = features = math.prod(shape)
        checker.integer(desc, "in_features", w, features, features)
        checker.integer(desc, "out_features", w, 1)
        params, self.out_shape = self.structure(desc)
        self.declared_shapes(desc, self.out_shape, exact=False)
        self.centers = self.require("centers", (params["out_features"], features))
        self.codes_in("centers", self.centers, self.in_format)
        in_bits = self.in_format["bits"]
        self.acc_bits = checker.integer(desc, "acc_bits", w, 2, 62)
        expected = L.acc_bits_for(self.kind, None, in_bits, features)
        if self.acc_bits != expected:
            self.fail(f"acc_bits={self.acc_bits} but bit growth gives {expected} (2 · in_bits "
                      f"{in_bits} + ceil(log2(fan_in {features})) + 1)")

    @property
    def tap_shape(self):
        return (self.out_shape[0],)

    def forward(self, x):
        scores = L.rbf(x.reshape(x.shape[0], self.features), self.centers)
        return scores, scores, (0, 0)

    def stage(self, index, link):
        return RbfStage(self, index, link.in_layout)


class RbfStage(F.Stage):
    """Squared distances as ``Σx² - 2·x·c + Σc²``: one product plus two row sums."""

    def __init__(self, layer, index, in_layout):
        super().__init__(layer, index)
        F.check_format(layer.in_format, "input")
        centers = layer.centers[:, in_layout.order()]
        x_max = F.max_code(layer.in_format)
        c_max = int(np.abs(centers).max()) if centers.size else 0
        F.fits(centers.shape[1] * (x_max + c_max) ** 2, "distances reach 2^24")
        self.in_layout = in_layout
        self.layout = F.Spatial(layer.out_shape[0], 1, 1)
        self.matrix = np.ascontiguousarray(-2.0 * centers.T, dtype=np.float32)
        self.squares = (centers.astype(np.float64) ** 2).sum(axis=1).astype(np.float32)

    def run(self, x, m, local):
        x = x.reshape(m, self.matrix.shape[0])
        y = np.matmul(x, self.matrix)
        y += np.einsum("nf,nf->n", x, x)[:, None]
        y += self.squares
        return y, {self.name: (0, 0)}

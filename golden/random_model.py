"""Random integer models for tests: any small network, valid by construction, reproducible.

:func:`random_qmodel` turns a short layer list into ``(meta, arrays)`` exactly as an export
would write them (``golden.save`` stores them, :class:`golden.IntegerModel` runs them). Weights
span their whole code range, including both extremes; output fractions are calibrated on random
images so that every layer carries signal and some values saturate. :func:`random_images` makes
matching input batches.
"""

from abc import ABC, abstractmethod
from functools import partial

import numpy as np

from core.kinds import KINDS, record_shape
from core.registry import Registry

from . import layers as L
from .model import FORMAT_VERSION, IntegerModel, array_sha256
from .ops import OPS

__all__ = ["random_qmodel", "random_images", "RANDOM", "WEIGHT_MODES", "SPEC_KEYS"]

#: How :func:`random_qmodel` draws weights, biases and RBF centers.
WEIGHT_MODES = ("uniform", "extreme", "min", "max")

_AFFINE_KEYS = frozenset({"activation", "weight_bits", "weight_frac", "per_channel",
                          "out_bits", "out_frac", "lut_bits", "lut_frac"})

#: The random generator of every exported layer kind (see :class:`_Generator`).
RANDOM = Registry("golden random layer", exported_only=True)

# The kinds that may end a network (give the scores), for messages.
_FINAL_KINDS = " or ".join(n for n, k in KINDS.items() if k.exported and k.final != "never")

# The 8-bit raw pixel format of every input (README: "Input").
_INPUT_FORMAT = {"bits": 8, "frac": 8, "signed": False}


def random_images(meta, n, seed):
    """Return ``n`` random images for the model ``meta``, uniform over the input code range.

    The result is ``[n, H, W]`` (``[n, C, H, W]`` for several channels), uint8 when the input
    format fits it, else int64.
    """
    inp = meta["input"]
    lo, hi = L.format_range(inp["format"])
    shape = (n, inp["height"], inp["width"])
    if inp["channels"] != 1:
        shape = (n, inp["channels"], inp["height"], inp["width"])
    dtype = np.uint8 if lo >= 0 and hi <= 255 else np.int64
    return np.random.default_rng(seed).integers(lo, hi, endpoint=True, size=shape).astype(dtype)


class _Builder:
    def __init__(self, rng, wbits, abits, per_channel, weights, lut_bits):
        self.rng = rng
        self.wbits = wbits
        self.abits = abits
        self.per_channel = per_channel
        self.weights = weights
        self.lut_bits = lut_bits
        self.arrays = {}

    def draw(self, lo, hi, shape, mask=None):
        """Draw codes in ``[lo, hi]`` by the weight mode; both extremes appear if possible."""
        rng = self.rng
        if self.weights == "uniform":
            codes = rng.integers(lo, hi, endpoint=True, size=shape)
        elif self.weights == "extreme":
            codes = np.where(rng.integers(0, 2, size=shape) == 1, hi, lo)
        else:
            codes = np.full(shape, lo if self.weights == "min" else hi)
        codes = codes.astype(np.int64)
        if mask is not None:
            codes = np.where(mask, codes, 0)
        if self.weights == "uniform":
            places = np.flatnonzero(np.ones(shape, bool) if mask is None else mask)
            if places.size >= 2:
                first, second = rng.choice(places, size=2, replace=False)
                codes.flat[first], codes.flat[second] = lo, hi
        return codes

    def bias(self, acc, acc_bits):
        limit = 1 << (acc_bits - 2)
        channels = acc.shape[1]
        if self.weights == "uniform":
            spread = acc.swapaxes(0, 1).reshape(channels, -1).std(axis=1) + 1.0
            bias = np.rint(self.rng.normal(0.0, spread)).astype(np.int64)
            return np.clip(bias, -limit, limit - 1)
        return self.draw(-limit, limit - 1, (channels,))

    def calibrate(self, acc, acc_frac, fmt_bits, signed, positive):
        """Return the fraction that puts the 90th percentile of |value| just below full scale."""
        frac = np.asarray(acc_frac).reshape((1, -1) + (1,) * (acc.ndim - 2))
        real = np.ldexp(acc.astype(np.float64), -frac)
        real = np.maximum(real, 0.0) if positive else np.abs(real)
        level = float(np.percentile(real, 90)) if real.size else 0.0
        level = level or (float(real.max()) if real.size else 0.0)
        if level == 0.0:
            return fmt_bits - 1
        full = 2.0 ** (fmt_bits - 1 if signed else fmt_bits)
        return int(np.floor(np.log2(full / level)))

    def add(self, name, array):
        array = np.ascontiguousarray(array, dtype=np.int64)
        self.arrays[name] = array
        return name


def _check_spec(spec):
    if not isinstance(spec, (list, tuple)) or not spec:
        raise ValueError(f"random_qmodel: spec must be a non-empty list of layer dicts, not "
                         f"{spec!r}")
    for i, entry in enumerate(spec):
        if not isinstance(entry, dict):
            raise ValueError(f"random_qmodel: spec[{i}] must be a dict, not {entry!r}")
        kind = entry.get("kind")
        if not isinstance(kind, str) or kind not in RANDOM:
            raise ValueError(f"random_qmodel: spec[{i}].kind={kind!r} is not one of: "
                             f"{', '.join(RANDOM.kinds())}")
        generator = RANDOM[kind]
        for key in entry:
            if key not in generator.keys | {"kind", "name"}:
                raise ValueError(f"random_qmodel: spec[{i}] has an unknown key {key!r}; a "
                                 f"{kind} layer takes: {', '.join(sorted(generator.keys))}")
        for key in generator.required:
            if key not in entry:
                raise ValueError(f"random_qmodel: spec[{i}] ({kind}) needs {key!r}")
        last = i == len(spec) - 1
        if entry.get("final", last) != last:
            raise ValueError(f"random_qmodel: spec[{i}].final: the last layer, and only it, is "
                             f"final")
        if last and KINDS[kind].final == "never":
            raise ValueError(f"random_qmodel: spec[{i}] is a {kind} layer; the last layer must "
                             f"be {_FINAL_KINDS} (it gives the scores)")
        if not last and KINDS[kind].final == "only":
            raise ValueError(f"random_qmodel: spec[{i}]: {kind} is an output layer; it must be "
                             f"the last")
        if last and entry.get("activation", "none") != "none":
            raise ValueError(f"random_qmodel: spec[{i}]: the final layer gives raw scores; "
                             f"drop its activation")


def _connections(builder, value, out_channels, in_channels, where):
    if value is None or (isinstance(value, str) and value == "full"):
        return None
    if isinstance(value, str) and value == "random":
        rng = builder.rng
        table = rng.integers(0, 2, size=(out_channels, in_channels))
        table[np.arange(out_channels), rng.integers(0, in_channels, size=out_channels)] = 1
        if in_channels > 1 and table.all():
            table[0, rng.integers(0, in_channels)] = 0
            if not table[0].any():
                table[0, 0] = 1
        return table.astype(np.int64)
    table = np.asarray(value)
    if table.shape != (out_channels, in_channels) or not np.all((table == 0) | (table == 1)):
        raise ValueError(f"random_qmodel: {where}.connections must be 'full', 'random' or a "
                         f"0/1 array of shape [{out_channels}, {in_channels}]")
    if not table.any(axis=1).all():
        raise ValueError(f"random_qmodel: {where}.connections leaves an output channel with no "
                         f"input")
    return table.astype(np.int64)


def _affine(builder, entry, desc, accumulate, channels, fan_in, weight_shape, mask, final,
            role="weight"):
    """Fill ``desc`` with weights, bias, widths and activation; return the calibration output.

    ``accumulate(weight, bias)`` computes the layer's accumulators on the calibration batch;
    the weights are stored as ``f"{name}.{role}"``.
    """
    in_fmt = desc["in_format"]
    name = desc["name"]
    wbits = entry.get("weight_bits", builder.wbits)
    per_channel = entry.get("per_channel", builder.per_channel) and not final
    if "weight_frac" in entry:
        w_frac = entry["weight_frac"]
        fracs = np.broadcast_to(np.asarray(w_frac, dtype=np.int64), (channels,))
        w_frac = int(w_frac) if np.ndim(w_frac) == 0 else [int(f) for f in w_frac]
    elif per_channel:
        fracs = (wbits - 1) + builder.rng.integers(-2, 3, size=channels)
        w_frac = fracs.tolist()
    else:
        fracs = np.full(channels, wbits - 1, dtype=np.int64)
        w_frac = wbits - 1
    w_fmt = {"bits": wbits, "frac": w_frac, "signed": True}
    w_lo, w_hi = L.format_range(w_fmt)
    weight = builder.draw(w_lo, w_hi, weight_shape, mask)
    acc_bits = L.acc_bits_for(desc["kind"], wbits, in_fmt["bits"], fan_in)
    acc_frac = (fracs + in_fmt["frac"]).astype(np.int64)
    acc = accumulate(weight, np.zeros(channels, dtype=np.int64))
    bias = builder.bias(acc, acc_bits)
    acc = acc + bias.reshape((1, -1) + (1,) * (acc.ndim - 2))
    desc.update({
        "weight_format": w_fmt, "acc_bits": acc_bits, "acc_frac": acc_frac.tolist(),
        "final": final,
    })
    desc["arrays"] = {"weight": builder.add(f"{name}.{role}", weight),
                      "bias": builder.add(f"{name}.bias", bias)}
    if final:
        desc["activation"] = {"kind": "none"}
        return acc
    activation = entry.get("activation", "relu")
    out_bits = entry.get("out_bits", builder.abits)
    if activation in ("relu", "none"):
        signed = activation == "none"
        frac = entry.get("out_frac")
        if frac is None:
            frac = builder.calibrate(acc, acc_frac, out_bits, signed, positive=not signed)
        out_fmt = {"bits": out_bits, "frac": frac, "signed": signed}
        desc["activation"] = {"kind": activation}
        desc["out_format"] = out_fmt
        return L.requantize(acc, acc_frac - frac, out_fmt)[0]
    if activation not in L.LUT_FUNCTIONS:
        raise ValueError(f"random_qmodel: {name}: activation={activation!r} is not one of: "
                         f"relu, none, {', '.join(L.LUT_FUNCTIONS)}")
    lut_bits = entry.get("lut_bits", builder.lut_bits or builder.abits)
    lut_frac = entry.get("lut_frac")
    if lut_frac is None:
        lut_frac = builder.calibrate(acc, acc_frac, lut_bits, True, positive=False)
    pre_fmt = {"bits": lut_bits, "frac": lut_frac, "signed": True}
    signed = activation != "sigmoid"
    default_frac = {"tanh": out_bits - 1, "scaled_tanh": out_bits - 2, "sigmoid": out_bits}
    out_fmt = {"bits": out_bits, "frac": entry.get("out_frac", default_frac[activation]),
               "signed": signed}
    table = L.build_lut(activation, lut_bits, lut_frac, out_fmt)
    desc["activation"] = {"kind": "lut", "function": activation, "in_bits": lut_bits,
                          "in_frac": lut_frac}
    desc["out_format"] = out_fmt
    desc["arrays"]["lut"] = builder.add(f"{name}.lut", table)
    pre = L.requantize(acc, acc_frac - lut_frac, pre_fmt)[0]
    return L.apply_lut(pre, table, lut_bits)


class _Generator(ABC):
    """How :func:`random_qmodel` makes a layer of one kind (register one per kind in RANDOM).

    ``keys``: the spec keys it takes besides "kind" and "name"; ``required``: those it needs;
    ``spec``: the :class:`core.kinds.LayerKind`.
    """

    keys = frozenset()
    required = ()
    spec = None

    @abstractmethod
    def generate(self, builder, entry, desc, x, final, where):
        """Fill ``desc`` (which has name, kind, in_shape, in_format) with the rest of the
        record, adding arrays to ``builder``; return the layer's output on the calibration
        batch ``x`` (int64, batch first)."""

    def spatial(self, x, desc):
        return x.reshape((x.shape[0],) + tuple(desc["in_shape"]))


def _register(kind):
    def decorate(cls):
        cls.spec = KINDS[kind]
        RANDOM.register(kind)(cls())
        return cls
    return decorate


@_register("conv")
class _Conv(_Generator):
    keys = frozenset({"out_channels", "kernel", "padding", "connections"}) | _AFFINE_KEYS
    required = ("out_channels", "kernel")

    def generate(self, builder, entry, desc, x, final, where):
        shape = tuple(desc["in_shape"])
        k, p = entry["kernel"], entry.get("padding", 0)
        out_channels = entry["out_channels"]
        table = _connections(builder, entry.get("connections"), out_channels, shape[0], where)
        mask = None
        connected = shape[0]
        if table is not None:
            mask = np.broadcast_to(table[:, :, None, None] == 1, (out_channels, shape[0], k, k))
            connected = int(table.sum(axis=1).max())
        params = {"out_channels": out_channels, "kernel": k, "padding": p}
        if min(self.spec.out_shape(params, shape)) < 1:
            raise ValueError(f"random_qmodel: {where}: kernel {k} is larger than its input "
                             f"{list(shape)} (padding {p})")
        desc.update(self.spec.record(params, shape))
        accumulate = partial(L.conv2d, L.pad2d(self.spatial(x, desc), p))
        x = _affine(builder, entry, desc, accumulate, out_channels, connected * k * k,
                    (out_channels, shape[0], k, k), mask, final)
        if table is not None:
            desc["arrays"]["connections"] = builder.add(f"{desc['name']}.connections", table)
        return x


@_register("pool")
class _Pool(_Generator):
    keys = frozenset({"mode", "size"})

    def generate(self, builder, entry, desc, x, final, where):
        params = {"mode": entry.get("mode", "max"), "size": entry.get("size", 2)}
        desc.update(self.spec.record(params, desc["in_shape"]))
        desc["out_format"] = dict(desc["in_format"])
        pool = L.maxpool if params["mode"] == "max" else L.avgpool
        return pool(self.spatial(x, desc), params["size"])


@_register("subsample")
class _Subsample(_Generator):
    keys = frozenset({"size"}) | _AFFINE_KEYS

    def generate(self, builder, entry, desc, x, final, where):
        size = entry.get("size", 2)
        desc.update(self.spec.record({"size": size}, desc["in_shape"]))
        accumulate = partial(L.subsample, self.spatial(x, desc), size=size)
        channels = desc["in_shape"][0]
        return _affine(builder, entry, desc, accumulate, channels, size * size, (channels,),
                       None, final, role="coef")


@_register("gap")
class _Gap(_Generator):
    def generate(self, builder, entry, desc, x, final, where):
        _, height, width = desc["in_shape"]
        if height * width < 2:
            raise ValueError(f"random_qmodel: {where}: global average pooling of a "
                             f"{height}x{width} map does nothing; remove the layer")
        desc.update(self.spec.record({}, desc["in_shape"]))
        desc.update({"out_format": dict(desc["in_format"]), "final": False, "arrays": {}})
        return L.global_avgpool(self.spatial(x, desc), desc["mul"], desc["shift"],
                                desc["in_format"])[0]


@_register("dense")
class _Dense(_Generator):
    keys = frozenset({"out_features", "final"}) | _AFFINE_KEYS
    required = ("out_features",)

    def generate(self, builder, entry, desc, x, final, where):
        out = entry["out_features"]
        desc.update(self.spec.record({"out_features": out}, desc["in_shape"]))
        features = desc["in_features"]
        accumulate = partial(L.dense, x.reshape(x.shape[0], features))
        return _affine(builder, entry, desc, accumulate, out, features, (out, features), None,
                       final)


@_register("rbf")
class _Rbf(_Generator):
    keys = frozenset({"out_features", "final"})
    required = ("out_features",)

    def generate(self, builder, entry, desc, x, final, where):
        out = entry["out_features"]
        desc.update(self.spec.record({"out_features": out}, desc["in_shape"]))
        features = desc["in_features"]
        fmt = desc["in_format"]
        lo, hi = L.format_range(fmt)
        centers = builder.draw(lo, hi, (out, features))
        desc.update({
            "acc_bits": L.acc_bits_for(desc["kind"], None, fmt["bits"], features), "final": True,
            "arrays": {"centers": builder.add(f"{desc['name']}.centers", centers)},
        })
        return L.rbf(x.reshape(x.shape[0], -1), centers)


#: The keys each kind of spec entry accepts (besides "kind" and "name").
SPEC_KEYS = {kind: set(RANDOM[kind].keys) for kind in RANDOM.kinds()}


def random_qmodel(spec, seed, wbits=8, abits=8, *, height=8, width=None, channels=1, pad=0,
                  per_channel=True, weights="uniform", lut_bits=None, calibration=32,
                  preset="random"):
    """Build a random, valid integer model; return ``(meta, arrays)`` as an export would.

    ``spec`` lists the layers, in order, as dicts with a ``"kind"`` and an optional ``"name"``
    (default ``f"{kind}{index}"``):

    - ``{"kind": "conv", "out_channels": O, "kernel": k}``, optional ``"padding"`` (0) and
      ``"connections"``: "full" (default), "random" (a random sparse table, every output
      connected to at least one input) or a 0/1 array ``[O, C]``;
    - ``{"kind": "pool", "mode": "max" | "avg", "size": 2}``;
    - ``{"kind": "subsample", "size": 2}`` (LeCun's coefficient + bias per map);
    - ``{"kind": "gap"}`` (global average pooling; ``mul``/``shift`` from
      ``core.kinds.gap_scale``);
    - ``{"kind": "dense", "out_features": F}`` (flattens a spatial input);
    - ``{"kind": "rbf", "out_features": K}`` (last layer only).

    Conv, subsample and non-final dense layers take ``"activation"``: "relu" (default), "none",
    "tanh", "scaled_tanh" or "sigmoid" (a lookup table), and may override ``"weight_bits"``,
    ``"weight_frac"`` (int or per-channel list), ``"per_channel"``, ``"out_bits"``,
    ``"out_frac"`` (the LUT's output fraction for LUT activations), ``"lut_bits"`` and
    ``"lut_frac"`` (the pre-activation format). An explicit ``out_frac``/``lut_frac`` far above
    the accumulator fraction exercises negative (left) shifts. The last layer must be dense or
    rbf and is the final layer (raw scores, per-tensor weight fraction).

    The input is ``channels`` × ``height`` × ``width`` (``width`` defaults to ``height``) 8-bit
    pixels padded by ``pad``. Weights are ``wbits`` wide, activations ``abits`` (LUT inputs
    ``lut_bits``, default ``abits``); weight fractions vary per output channel when
    ``per_channel``. ``weights`` chooses the codes of weights, biases and RBF centers:
    "uniform" (over the whole range, both extremes present in each tensor; biases around the
    accumulators' spread), "extreme" (each code the minimum or the maximum), "min" or "max"
    (every code that extreme, biases included: the worst cases of bit growth).

    Output fractions not given are calibrated on ``calibration`` random images so that the 90th
    percentile of each layer's values sits in the top half of its range. The same arguments give
    the same model.
    """
    _check_spec(spec)
    if weights not in WEIGHT_MODES:
        raise ValueError(f"random_qmodel: weights={weights!r} is not one of: "
                         f"{', '.join(WEIGHT_MODES)}")
    if isinstance(calibration, bool) or not isinstance(calibration, int) or calibration < 1:
        raise ValueError(f"random_qmodel: calibration must be a positive number of images, not "
                         f"{calibration!r}")
    width = height if width is None else width
    rng = np.random.default_rng(seed)
    builder = _Builder(rng, wbits, abits, per_channel, weights, lut_bits)
    meta = {
        "format_version": FORMAT_VERSION, "preset": preset,
        "input": {"height": height, "width": width, "channels": channels, "pad": pad,
                  "format": dict(_INPUT_FORMAT)},
        "layers": [],
    }
    images = random_images(meta, calibration, rng.integers(2 ** 32))
    x = L.pad2d(images.reshape(calibration, channels, height, width), pad)
    fmt = dict(_INPUT_FORMAT)
    shape = (channels, height + 2 * pad, width + 2 * pad)
    for i, entry in enumerate(spec):
        kind = entry["kind"]
        name = entry.get("name", f"{kind}{i}")
        desc = {"name": name, "kind": kind, "in_shape": list(shape), "in_format": dict(fmt)}
        x = RANDOM[kind].generate(builder, entry, desc, x, i == len(spec) - 1, f"spec[{i}]")
        shape = record_shape(desc, shape)
        desc.setdefault("out_shape", list(shape))
        meta["layers"].append(desc)
        fmt = desc.get("out_format")
    last = meta["layers"][-1]
    meta["num_classes"] = shape[0]
    meta["output"] = {"kind": OPS[last["kind"]].classify, "score_bits": last["acc_bits"],
                      "score_signed": True}
    arrays = builder.arrays
    meta["arrays"] = {name: {"shape": list(a.shape), "sha256": array_sha256(a)}
                      for name, a in sorted(arrays.items())}
    IntegerModel(meta, arrays)
    return meta, arrays

"""Turn a chain of a source model's layers into a config and its float weights.

A reader (:mod:`importers.torch_source`, :mod:`importers.onnx_source`,
:mod:`importers.keras_source`) walks its framework's model and calls one :class:`Network`
method per source layer, in order; :meth:`Network.finish` folds the input normalization into the
first layer and returns an :class:`Imported`: the ``[[layers]]`` tables (the layer specs of
:mod:`core.kinds`) and the weight and bias of each conv and dense layer in the layout of
:mod:`quant.layers` (``(out, in, k, k)``; a dense layer's inputs in C, H, W order).

What the source may hold, and what it becomes:

- 2-D convolution, stride 1, square kernel, the same zero padding on every side (Keras 'same'
  with an odd kernel is ``kernel // 2``) → ``conv``;
- max or average pooling, window = stride, no padding, a map the window divides → ``pool``;
- dense / linear on a flat vector → ``dense`` (after a channels-last flatten, Keras', its weight
  columns are reordered from H, W, C to C, H, W);
- ReLU, tanh, sigmoid → the ``activation`` of the conv or dense layer before it (also across a
  max pooling: max commutes with a non-decreasing function); identity → nothing;
- batch normalization right after a conv or dense layer → folded into its weight and bias here,
  at import (``w·γ/√(σ²+ε)``, ``(b − μ)·γ/√(σ²+ε) + β``, in float64);
- flatten → nothing (a dense layer flattens its input); dropout → nothing; a softmax or log-softmax
  that ends the network → nothing (the class is the argmax either way).

Anything else raises :class:`ModelImportError` naming the layer, its position and what is
supported.

The input normalization (:class:`Normalization`: the model was trained on ``(p/scale − mean)/
std`` of the 8-bit pixels ``p``) is folded into the first layer so that the network takes the
flow's ``p/256`` (:meth:`quant.model.LeNet.prepare`): ``w' = w·256/(scale·std)``,
``b' = b − (mean/std)·Σw``. This is exact (up to float rounding of the products) except where a
convolution pads its input with zeros and ``mean ≠ 0``: a padded zero of the normalized input is
the pixel ``mean·scale``, not 0, so that case is refused.
"""

import math
import re
from dataclasses import dataclass, field

import numpy as np

from core.errors import UserError

__all__ = ["ModelImportError", "Normalization", "Network", "Imported", "SUPPORTED"]

#: What the error for an unsupported layer says is supported.
SUPPORTED = ("2-D convolution (stride 1), max/average pooling (kernel = stride), dense, "
             "ReLU/tanh/sigmoid/identity, flatten, dropout, batch normalization after a conv or "
             "dense layer, a final softmax")

#: Source activation names → the config's activation names.
ACTIVATIONS = {"relu": "relu", "tanh": "tanh", "sigmoid": "sigmoid"}
#: Source activation names that compute nothing.
IDENTITIES = ("linear", "identity", "none")


class ModelImportError(UserError):
    """A model file cannot be read, or holds a layer or a structure the flow does not build."""


@dataclass(frozen=True)
class Normalization:
    """The input normalization a model was trained with: ``(p/scale − mean)/std`` of the 8-bit
    pixels ``p`` (``scale=255``: ``ToTensor()`` or ``x/255``; ``scale=256, mean=0, std=1``: the
    flow's own pixels, nothing to fold)."""

    scale: float = 255.0
    mean: float = 0.0
    std: float = 1.0

    def __post_init__(self):
        for key in ("scale", "mean", "std"):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or \
                    not math.isfinite(value):
                raise ModelImportError(f"--{key} {value!r} is not a number; give a finite "
                                       f"number")
        if self.scale <= 0 or self.std <= 0:
            raise ModelImportError(f"--scale {self.scale} and --std {self.std} must be "
                                   f"positive; the normalization is (p/scale - mean)/std")

    @property
    def gain(self):
        """The factor from the flow's ``p/256`` to the normalized input (before the offset)."""
        return 256.0 / (self.scale * self.std)

    @property
    def offset(self):
        return -self.mean / self.std

    def as_dict(self):
        return {"scale": float(self.scale), "mean": float(self.mean), "std": float(self.std)}


@dataclass
class _Entry:
    """One config layer being built: its ``[[layers]]`` table and, for conv and dense layers,
    its float64 weight and bias (``affine``)."""

    table: dict
    weight: np.ndarray = None
    bias: np.ndarray = None
    pads: bool = False

    @property
    def affine(self):
        return self.weight is not None


@dataclass(frozen=True)
class Imported:
    """The result of an import: the config's ``[[layers]]`` tables, the float weight and bias
    of each (``None`` for layers without), the input side, and what was found (one line per
    source layer, for ``import.json``)."""

    input_size: int
    layers: tuple
    weights: tuple
    found: tuple = field(default=())


def _identifier(name, fallback):
    text = re.sub(r"[^a-z0-9_]", "_", str(name).lower()).strip("_")
    return text if text and text[0].isalpha() else fallback


class Network:
    """Build a config network from a source model's layers, in order (see the module docstring).

    Parameters
    ----------
    source : str
        The model's name in messages (its file name).
    input_shape : tuple of int
        ``(channels, height, width)`` of the model's input; one channel, square.
    """

    def __init__(self, *, source, input_shape):
        self._source = source
        channels, height, width = (int(v) for v in input_shape)
        if channels != 1 or height != width:
            raise ModelImportError(f"{source}: the input is {channels}x{height}x{width} "
                                   f"(channels x height x width); the flow takes one square "
                                   f"8-bit image: give a model of 1xNxN images")
        self._input_size = height
        self._shape = (channels, height, width)
        self._entries = []
        self._found = []
        self._flatten = None        # "nchw" | "nhwc" after a flatten, until a dense layer
        self._flat = False          # after a flatten or a dense layer: no more maps
        self._ended = None          # the softmax that ended the network
        self._position = None
        self._name = None

    # -- the current source layer ------------------------------------------------------------
    def at(self, position, name, what):
        """Start source layer ``position`` (0-based) called ``name``, a ``what`` (its type);
        return ``self``."""
        self._position, self._name, self._what = position, str(name), str(what)
        return self

    def _where(self):
        return f"layer {self._position} {self._name!r} ({self._what})"

    def fail(self, problem, fix):
        """Raise the one-line error of the current source layer."""
        raise ModelImportError(f"{self._source}: {self._where()} {problem}; {fix}")

    def unsupported(self, detail=""):
        """Raise: the current source layer is not one the flow builds."""
        detail = f" ({detail})" if detail else ""
        raise ModelImportError(f"{self._source}: {self._where()} is not supported{detail}; "
                               f"supported: {SUPPORTED}")

    def _note(self, becomes):
        self._found.append({"position": self._position, "name": self._name,
                            "type": self._what, "becomes": becomes})

    def _check_open(self):
        if self._ended is not None:
            self.fail(f"follows the final {self._ended}",
                      "a softmax is only dropped as the network's last layer")

    def _add(self, table, weight=None, bias=None, pads=False):
        used = {e.table["name"] for e in self._entries}
        base = _identifier(self._name, f"{table['kind']}{self._position}")
        name, n = base, 1
        while name in used:
            n += 1
            name = f"{base}_{n}"
        table = {"name": name, **table}
        self._entries.append(_Entry(table, weight, bias, pads))
        self._note(f"{table['kind']} {name}")
        return table

    # -- layers ------------------------------------------------------------------------------
    def conv(self, weight, bias, *, padding=0, stride=(1, 1), dilation=(1, 1), groups=1):
        """A 2-D convolution: ``weight`` ``(out, in, kh, kw)``, ``bias`` ``(out,)`` or ``None``,
        ``padding`` an int or a ``(top, bottom, left, right)`` tuple."""
        self._check_open()
        weight = np.asarray(weight, dtype=np.float64)
        out_c, in_c, kh, kw = weight.shape
        pads = (padding,) * 4 if isinstance(padding, (int, np.integer)) else tuple(padding)
        if tuple(stride) != (1, 1) or tuple(dilation) != (1, 1) or groups != 1:
            self.unsupported(f"stride {tuple(stride)}, dilation {tuple(dilation)}, groups "
                             f"{groups}: only stride 1, dilation 1, groups 1")
        if kh != kw:
            self.unsupported(f"a {kh}x{kw} kernel: only square kernels")
        if len(set(pads)) != 1:
            self.unsupported(f"padding {pads}: only the same padding on every side (Keras "
                             f"'same' with an odd kernel, or 'valid')")
        if self._flat:
            self.unsupported("a convolution after a flatten or a dense layer")
        if in_c != self._shape[0]:
            self.fail(f"takes {in_c} input channels but gets {self._shape[0]}",
                      "check the model file")
        pad = int(pads[0])
        table = self._add({"kind": "conv", "out_channels": out_c, "kernel": kh, "padding": pad,
                           "activation": "none"}, weight, self._bias(bias, out_c), pad > 0)
        size = self._shape[1] + 2 * pad - kh + 1
        if size < 1:
            self.fail(f"has a {kh}x{kh} kernel larger than its {self._shape[1]}x"
                      f"{self._shape[1]} input", "check the model's input size")
        self._shape = (out_c, size, size)
        return table

    def dense(self, weight, bias):
        """A dense layer: ``weight`` ``(out, in)`` (PyTorch's layout), ``bias`` or ``None``."""
        self._check_open()
        weight = np.asarray(weight, dtype=np.float64)
        out_f, in_f = weight.shape
        c, h, w = self._shape
        if self._flatten is None and (h, w) != (1, 1):
            self.unsupported(f"a dense layer on a {c}x{h}x{w} map without a flatten before it")
        if in_f != c * h * w:
            self.fail(f"takes {in_f} inputs but gets {c}x{h}x{w} = {c * h * w}",
                      "check the model's input size")
        if self._flatten == "nhwc" and (h, w) != (1, 1):
            # column (y, x, ch) of a channels-last flatten is column (ch, y, x) of ours
            weight = weight.reshape(out_f, h, w, c).transpose(0, 3, 1, 2).reshape(out_f, -1)
        self._flatten, self._flat = None, True
        table = self._add({"kind": "dense", "out_features": out_f, "activation": "none"},
                          weight, self._bias(bias, out_f))
        self._shape = (out_f, 1, 1)
        return table

    def bias(self, bias):
        """Add ``bias`` to the conv or dense layer just before (ONNX's MatMul then Add)."""
        last = self._just_after_affine()
        bias = np.asarray(bias, dtype=np.float64).reshape(-1)
        if last is None or bias.size not in (1, last.bias.size):
            self.unsupported("an addition that is not the bias of the layer before it")
        last.bias = last.bias + bias
        self._note(f"bias of {last.table['name']}")

    def pool(self, mode, size, *, stride=None, padding=0, ceil_mode=False):
        """Max (``mode="max"``) or average (``"avg"``) pooling with a ``size`` window."""
        self._check_open()
        size = tuple(size) if isinstance(size, (tuple, list)) else (size, size)
        stride = size if stride is None else (
            tuple(stride) if isinstance(stride, (tuple, list)) else (stride, stride))
        pads = tuple(padding) if isinstance(padding, (tuple, list)) else (padding,)
        if size[0] != size[1] or stride != size or any(pads):
            self.unsupported(f"window {size}, stride {stride}, padding {pads}: only a square "
                             f"window equal to its stride, no padding")
        c, h, w = self._shape
        k = int(size[0])
        if self._flat:
            self.unsupported("pooling after a flatten or a dense layer")
        if h % k or w % k:
            self.unsupported(f"a {k}x{k} window on a {h}x{w} map leaves "
                             f"{'a partial window' if ceil_mode else 'rows unused'}: the window "
                             f"must divide the map")
        self._add({"kind": "pool", "mode": mode, "size": k})
        self._shape = (c, h // k, w // k)

    def activation(self, name):
        """An activation (``relu``, ``tanh``, ``sigmoid``, ``linear``/``identity``, or
        ``softmax``/``log_softmax``: the end of the network)."""
        name = str(name).lower()
        if name in ("softmax", "log_softmax"):
            self.softmax(name)
            return
        self._check_open()
        if name in IDENTITIES:
            self._note("nothing (identity)")
            return
        if name not in ACTIVATIONS:
            self.unsupported(f"activation {name!r}: only relu, tanh, sigmoid, identity and a "
                             f"final softmax")
        target = self._activation_target()
        if target is None:
            self.unsupported(f"{name} here: an activation must follow a conv or dense layer "
                             f"without one (or that layer's max pooling)")
        target.table["activation"] = ACTIVATIONS[name]
        self._note(f"activation of {target.table['name']}")

    def _just_after_affine(self):
        """Return the conv or dense layer the previous source layer made (or added a bias to),
        when it has no activation yet; else ``None``."""
        last = self._entries[-1] if self._entries else None
        if last is None or not last.affine or last.table["activation"] != "none":
            return None
        made = (f"{last.table['kind']} {last.table['name']}",
                f"bias of {last.table['name']}", f"folded into {last.table['name']}")
        return last if self._found[-1]["becomes"] in made else None

    def _activation_target(self):
        entries = self._entries
        if entries and entries[-1].affine and entries[-1].table["activation"] == "none":
            return entries[-1]
        if len(entries) >= 2 and entries[-1].table.get("mode") == "max" and \
                entries[-2].affine and entries[-2].table["activation"] == "none":
            return entries[-2]          # act(maxpool(x)) = maxpool(act(x)): act non-decreasing
        return None

    def batchnorm(self, gamma, beta, mean, var, eps):
        """Batch normalization (inference statistics) right after a conv or dense layer: folded
        into that layer's weight and bias."""
        self._check_open()
        last = self._just_after_affine()
        if last is None:
            self.unsupported("batch normalization not right after a conv or dense layer")
        s = np.asarray(gamma, np.float64) / np.sqrt(np.asarray(var, np.float64) + float(eps))
        last.weight = last.weight * s.reshape(-1, *([1] * (last.weight.ndim - 1)))
        last.bias = (last.bias - np.asarray(mean, np.float64)) * s + np.asarray(beta, np.float64)
        self._note(f"folded into {last.table['name']}")

    def flatten(self, order="nchw"):
        """A flatten of the map, in C, H, W order (``"nchw"``) or channels last (``"nhwc"``)."""
        self._check_open()
        if self._flatten is None and self._shape[1:] != (1, 1):
            self._flatten = order
        self._flat = True
        self._note("nothing (a dense layer flattens its input)")

    def dropout(self):
        """Dropout: nothing at inference."""
        self._note("nothing (dropout)")

    def softmax(self, name="softmax"):
        """A softmax (or log-softmax): dropped when it ends the network."""
        self._check_open()
        self._ended = f"{name} {self._name!r}"
        self._note(f"nothing (final {name})")

    @staticmethod
    def _bias(bias, n):
        return np.zeros(n) if bias is None else np.asarray(bias, dtype=np.float64).reshape(n)

    # -- the end -----------------------------------------------------------------------------
    def finish(self, norm):
        """Fold the :class:`Normalization` ``norm`` into the first layer; return the
        :class:`Imported` network."""
        if not self._entries:
            raise ModelImportError(f"{self._source}: no layers found; give a model with conv, "
                                   f"pool and dense layers")
        last = self._entries[-1]
        if not last.affine or self._flatten is not None or self._shape[1:] != (1, 1):
            raise ModelImportError(f"{self._source}: the network ends with "
                                   f"{last.table['name']!r}, not a dense layer; end with a "
                                   f"dense layer (and an optional softmax)")
        if last.table["activation"] != "none":
            raise ModelImportError(f"{self._source}: the output layer {last.table['name']!r} "
                                   f"has activation {last.table['activation']!r}; the flow "
                                   f"takes raw scores (the logits) from the last layer: end "
                                   f"with a dense layer without activation, or with softmax")
        self._fold(norm)
        weights = tuple((e.weight, e.bias) if e.affine else None for e in self._entries)
        return Imported(self._input_size, tuple(e.table for e in self._entries), weights,
                        tuple(self._found))

    def _fold(self, norm):
        first = self._entries[0]
        if (norm.gain, norm.offset) == (1.0, 0.0):
            return
        if not first.affine:
            raise ModelImportError(f"{self._source}: the first layer {first.table['name']!r} "
                                   f"is not a conv or dense layer, so the normalization "
                                   f"{norm.as_dict()} cannot be folded into it; give --scale "
                                   f"256 --mean 0 --std 1 if the model takes p/256")
        if norm.offset and first.pads:
            raise ModelImportError(
                f"{self._source}: the first layer {first.table['name']!r} pads its input "
                f"with zeros, and with --mean {norm.mean} a padded zero of the normalized "
                f"input is the pixel {norm.mean * norm.scale:g}, not 0 as the hardware pads: "
                f"the fold would not be exact; import a model trained with --mean 0 or "
                f"without padding on its first layer")
        axes = tuple(range(1, first.weight.ndim))
        first.bias = first.bias + norm.offset * first.weight.sum(axis=axes)
        first.weight = first.weight * norm.gain


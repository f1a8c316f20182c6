"""The PyTorch side of every layer kind: two registries keyed by the kinds of :mod:`core.kinds`.

:data:`MODULES` (``"torch module"``) holds, per kind, a :class:`TorchKind`: the float
``nn.Module`` of a config layer (:meth:`TorchKind.build`), the pre-activation calibration reads,
the float parameters that get quantized, and for the kinds with a ``qmodel.json`` record the
choice of formats (:meth:`Quantized.plan`) and the fake-quantized forward that computes golden's
integers (:meth:`Quantized.forward`). ``batchnorm`` has no record: its entry builds
``BatchNorm2d`` (``BatchNorm1d`` after a layer with a flat output) and folds it into the float
weight and bias of the conv or dense layer before it (:meth:`BatchNormKind.fold`), so the
fake-quantized model, QAT and the export all quantize the folded parameters.

:data:`EXPORTERS` (``"qmodel exporter"``) holds, per kind, an :class:`Exporter`: the record and
arrays an exported layer writes to ``qmodel.json``/``qmodel.npz`` (the structural fields from
``layer.spec.record``), the real value of its tap codes and its label in reports. The
``batchnorm`` exporter only names the fold in labels.

Exported layers are those of ``config.exported`` (a conv or dense layer carries its folded
batchnorms in ``layer.folded`` and their activation); the plan and the fake-quantized model are
indexed by that list.
"""

from abc import ABC, abstractmethod
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from core.kinds import gap_scale
from core.registry import Registry
from golden import layers as GL

from .formats import (
    LUT_BOUND,
    LUT_SATURATION,
    act_frac,
    requantize,
    scale,
    weight_frac,
)

__all__ = ["MODULES", "EXPORTERS", "TorchKind", "Quantized", "Exporter", "FormatChoice",
           "Counts", "activation_fn", "float_parameters", "float_layer"]

#: The PyTorch side of every layer kind (a :class:`TorchKind`).
MODULES = Registry("torch module")
#: The ``qmodel.json`` record of every layer kind (an :class:`Exporter`).
EXPORTERS = Registry("qmodel exporter")


@dataclass
class Counts:
    """What a fake-quantized run counts per exported layer name, as golden does
    (:meth:`golden.IntegerModel.run`): ``saturations`` (clamps that can change the output) and
    ``clamps`` (lossless clamps of a lookup table's input)."""

    saturations: dict
    clamps: dict


def _register(registry, kind):
    """Register an instance of the decorated class as the entry of ``kind`` in ``registry``."""
    def decorate(cls):
        registry.register(kind)(cls())
        return cls
    return decorate


def activation_fn(name):
    """Return the float function of an activation name."""
    return {
        "relu": torch.relu,
        "tanh": torch.tanh,
        "scaled_tanh": lambda x: 1.7159 * torch.tanh(x * (2.0 / 3.0)),
        "sigmoid": torch.sigmoid,
        "none": lambda x: x,
    }[name]


def float_layer(layer):
    """Return the config layer whose float output the exported ``layer`` computes: its last
    folded batchnorm, or itself."""
    return ((layer,) + layer.folded)[-1]


def float_parameters(model, layer, dtype=torch.float64):
    """Return the float ``(weight, bias)`` of the exported ``layer`` of ``model`` in ``dtype``,
    its batchnorms folded in (differentiable: QAT trains through the fold)."""
    weight, bias = MODULES[layer.kind].parameters(model.layers[layer.index])
    weight, bias = weight.to(dtype), None if bias is None else bias.to(dtype)
    for bn in layer.folded:
        weight, bias = MODULES[bn.kind].fold(model.layers[bn.index], weight, bias)
    return weight, bias


@dataclass(frozen=True)
class FormatChoice:
    """What the format choice of one exported layer reads besides its input format.

    ``wbits``/``abits``: its widths; ``per_channel``: per-output-channel weight scales;
    ``pre``/``out``: the 99.99th percentiles of its float |pre-activation| and output over the
    calibration images; ``lut_bits``: the input width of a lookup-table activation."""
    wbits: int
    abits: int
    per_channel: bool
    pre: float
    out: float
    lut_bits: int


# -- float modules ----------------------------------------------------------------------------

class ConvLayer(nn.Module):
    def __init__(self, layer):
        super().__init__()
        in_c, out_c = layer.in_shape[0], layer.out_shape[0]
        self.conv = nn.Conv2d(in_c, out_c, layer.kernel, padding=layer.padding)
        mask = torch.zeros(out_c, in_c, 1, 1)
        for o, row in enumerate(layer.connections):
            mask[o, list(row), 0, 0] = 1.0
        self.register_buffer("mask", mask, persistent=False)
        if not layer.full:  # fan-in of a sparse map is smaller: rescale the init
            with torch.no_grad():
                fan = mask.sum(dim=1, keepdim=True) * layer.kernel ** 2
                full = in_c * layer.kernel ** 2
                self.conv.weight.mul_(torch.sqrt(full / fan))
        self.act = activation_fn(layer.activation)

    def weight(self):
        return self.conv.weight * self.mask

    def pre_activation(self, x):
        return F.conv2d(x, self.weight(), self.conv.bias, padding=self.conv.padding)

    def forward(self, x):
        return self.act(self.pre_activation(x))


class PoolLayer(nn.Module):
    #: The float pooling of each mode.
    MODES = {"max": F.max_pool2d, "avg": F.avg_pool2d}

    def __init__(self, layer):
        super().__init__()
        self.pool, self.size = self.MODES[layer.mode], layer.size

    def forward(self, x):
        return self.pool(x, self.size)


class SubsampleLayer(nn.Module):
    """LeCun 1998: (sum of the window) × trainable coefficient + trainable bias, squashed."""

    def __init__(self, layer):
        super().__init__()
        channels = layer.in_shape[0]
        self.size = layer.size
        self.coef = nn.Parameter(torch.full((channels,), 1.0 / self.size ** 2))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.act = activation_fn(layer.activation)

    def pre_activation(self, x):
        window_sum = F.avg_pool2d(x, self.size) * self.size ** 2
        return window_sum * self.coef.view(1, -1, 1, 1) + self.bias.view(1, -1, 1, 1)

    def forward(self, x):
        return self.act(self.pre_activation(x))


class GapLayer(nn.Module):
    """Each channel's mean over the whole map: ``(N, C, H, W) → (N, C, 1, 1)``."""

    def forward(self, x):
        return x.mean(dim=(2, 3), keepdim=True)


class DenseLayer(nn.Module):
    def __init__(self, layer):
        super().__init__()
        self.fc = nn.Linear(layer.in_features, layer.out_features)
        self.act = activation_fn(layer.activation)

    def pre_activation(self, x):
        return self.fc(x.flatten(1))

    def forward(self, x):
        return self.act(self.pre_activation(x))


class RBFLayer(nn.Module):
    """Euclidean RBF output: scores are negative squared distances to fixed ±1 centers."""

    def __init__(self, layer, seed):
        super().__init__()
        gen = torch.Generator().manual_seed(seed + 1998)
        codes = torch.randint(0, 2, (layer.out_features, layer.in_features), generator=gen)
        self.register_buffer("centers", codes.float() * 2 - 1)

    def forward(self, x):
        x = x.flatten(1)
        return -((x.unsqueeze(1) - self.centers.unsqueeze(0)) ** 2).sum(dim=2)


class BatchNormLayer(nn.Module):
    """Batch normalization (``BatchNorm1d`` on a flat input, else ``BatchNorm2d``), then the
    layer's activation."""

    def __init__(self, layer, flat):
        super().__init__()
        norm = nn.BatchNorm1d if flat else nn.BatchNorm2d
        self.bn = norm(layer.in_shape[0], eps=layer.eps)
        self.act = activation_fn(layer.activation)

    def pre_activation(self, x):
        return self.bn(x)

    def forward(self, x):
        return self.act(self.bn(x))


# -- the torch module registry ---------------------------------------------------------------

class TorchKind(ABC):
    """The PyTorch side of one layer kind (one instance per kind in :data:`MODULES`).

    ``flat``: whether its float module outputs ``(N, features)`` rather than ``(N, C, H, W)``.
    """

    flat = False

    @abstractmethod
    def build(self, layer, config):
        """Return the float ``nn.Module`` of the config ``layer`` (seeded by the caller)."""

    def pre_activation(self, module, x):
        """Return the float output of ``module`` before its activation (``None``: it has no
        activation); calibration chooses lookup-table input formats from it."""
        return None

    def parameters(self, module):
        """Return the float ``(weight, bias)`` that get quantized (bias may be ``None``)."""
        raise TypeError(f"{type(self).__name__}: this layer kind has no weights")


class Quantized(TorchKind):
    """A kind with a ``qmodel.json`` record: it also chooses formats and runs fake-quantized."""

    def plan(self, p, layer, model, choice):
        """Complete the plan entry ``p`` (holding ``in``, ``final``, ``lut``) of the exported
        ``layer`` of ``model`` with its formats; ``choice`` is a :class:`FormatChoice`."""
        p["out"] = dict(p["in"])

    @abstractmethod
    def forward(self, qnet, i, x, counts, dtype):
        """Return the fake-quantized output of exported layer ``i`` of ``qnet`` for the
        values ``x``, counting clamped values in ``counts`` (a :class:`Counts`)."""

    def codes(self, p, x):
        """Return the integer codes of the values ``x`` this layer output (int64)."""
        frac = p["acc_frac"] if p["final"] else p["out"]["frac"]
        with torch.no_grad():
            return (x * scale(frac, x)).round().long()


def _activation_formats(p, layer, choice):
    """Choose the output format (and the lookup table) of an affine layer's activation."""
    act, ab = layer.activation, choice.abits
    if layer.final:
        p["out"] = None
    elif act == "relu":
        p["out"] = {"bits": ab, "frac": act_frac(choice.out, ab, False), "signed": False}
        p["requant"] = p["out"]
    elif act == "none":
        p["out"] = {"bits": ab, "frac": act_frac(choice.out, ab, True), "signed": True}
        p["requant"] = p["out"]
    else:
        signed = act != "sigmoid"
        p["out"] = {"bits": ab, "frac": act_frac(LUT_BOUND[act], ab, signed), "signed": signed}
        lb = choice.lut_bits
        r = min(choice.pre, LUT_SATURATION[act])
        p["requant"] = {"bits": lb, "frac": act_frac(r, lb, True), "signed": True}
        p["lut"] = GL.build_lut(act, lb, p["requant"]["frac"], p["out"])


class _Affine(Quantized):
    """Weights, bias, accumulator, requantization, activation."""

    def pre_activation(self, module, x):
        return module.pre_activation(x)

    def plan(self, p, layer, model, choice):
        with torch.no_grad():
            w = float_parameters(model, layer)[0].numpy()
        wb, fmt = choice.wbits, p["in"]
        if choice.per_channel and not layer.final:
            wfrac = [weight_frac(w[o], wb) for o in range(w.shape[0])]
        else:
            wfrac = weight_frac(w, wb)
        p["weight"] = {"bits": wb, "frac": wfrac, "signed": True}
        wf = np.broadcast_to(np.asarray(wfrac), (layer.out_shape[0],))
        p["acc_frac"] = [int(f) + fmt["frac"] for f in wf]
        p["acc_bits"] = GL.acc_bits_for(layer.kind, wb, fmt["bits"], layer.fan_in)
        _activation_formats(p, layer, choice)

    @abstractmethod
    def accumulate(self, qnet, i, x, dtype):
        """Return the accumulators (as values) of exported layer ``i``."""

    def forward(self, qnet, i, x, counts, dtype):
        return qnet.activate(i, self.accumulate(qnet, i, x, dtype), counts)


@_register(MODULES, "conv")
class ConvKind(_Affine):
    def build(self, layer, config):
        return ConvLayer(layer)

    def parameters(self, module):
        return module.weight(), module.conv.bias

    def accumulate(self, qnet, i, x, dtype):
        padding = qnet.config.exported[i].padding
        return F.conv2d(x, qnet.weight(i, dtype), qnet.bias(i, dtype), padding=padding)


@_register(MODULES, "dense")
class DenseKind(_Affine):
    flat = True

    def build(self, layer, config):
        return DenseLayer(layer)

    def parameters(self, module):
        return module.fc.weight, module.fc.bias

    def accumulate(self, qnet, i, x, dtype):
        return F.linear(x.flatten(1), qnet.weight(i, dtype), qnet.bias(i, dtype))


@_register(MODULES, "subsample")
class SubsampleKind(_Affine):
    def build(self, layer, config):
        return SubsampleLayer(layer)

    def parameters(self, module):
        return module.coef, module.bias

    def accumulate(self, qnet, i, x, dtype):
        size = qnet.config.exported[i].size
        total = F.avg_pool2d(x, size) * size ** 2
        coef = qnet.weight(i, dtype).view(1, -1, 1, 1)
        return total * coef + qnet.bias(i, dtype).view(1, -1, 1, 1)


@_register(MODULES, "pool")
class PoolKind(Quantized):
    """Max pooling is exact; average pooling rounds the window mean half up (no saturation)."""

    #: The fake-quantized pooling of each mode: ``(x, size, format) → output``.
    MODES = {
        "max": lambda x, size, fmt: F.max_pool2d(x, size),
        "avg": lambda x, size, fmt: requantize(F.avg_pool2d(x, size) * size ** 2 / size ** 2,
                                               fmt),
    }

    def build(self, layer, config):
        return PoolLayer(layer)

    def forward(self, qnet, i, x, counts, dtype):
        layer = qnet.config.exported[i]
        return self.MODES[layer.mode](x, layer.size, qnet.plan[i]["out"])


@_register(MODULES, "gap")
class GapKind(Quantized):
    """Golden's rule: the channel sum ``S`` of the codes, ``(S·mul + 2^(shift-1)) >> shift``,
    saturated to the input format; exact in float64 (every value is a dyadic rational with fewer
    than 53 significant bits)."""

    def build(self, layer, config):
        return GapLayer()

    def forward(self, qnet, i, x, counts, dtype):
        layer = qnet.config.exported[i]
        mul, shift = gap_scale(layer.in_shape[1] * layer.in_shape[2])
        total = x.sum(dim=(2, 3), keepdim=True)
        return requantize(total * (mul * 2.0 ** -shift), qnet.plan[i]["in"],
                          counts.saturations, layer.name)


@_register(MODULES, "rbf")
class RbfKind(Quantized):
    """The centers take the input's format; the scores are negative squared distances."""

    flat = True

    def build(self, layer, config):
        return RBFLayer(layer, config.train["seed"])

    def parameters(self, module):
        return module.centers, None

    def plan(self, p, layer, model, choice):
        fmt = p["in"]
        p["weight"] = dict(fmt)
        p["acc_bits"] = GL.acc_bits_for(layer.kind, None, fmt["bits"], layer.fan_in)

    def forward(self, qnet, i, x, counts, dtype):
        centers = qnet.weight(i, dtype)
        return -((x.flatten(1).unsqueeze(1) - centers.unsqueeze(0)) ** 2).sum(dim=2)

    def codes(self, p, x):
        with torch.no_grad():
            return (-x * 2.0 ** (2 * p["in"]["frac"])).round().long()


@_register(MODULES, "batchnorm")
class BatchNormKind(TorchKind):
    """Trained as a layer; folded into the layer before it for quantization and export."""

    def build(self, layer, config):
        previous = config.layers[layer.index - 1]
        return BatchNormLayer(layer, MODULES[previous.kind].flat)

    def pre_activation(self, module, x):
        return module.pre_activation(x)

    def fold(self, module, weight, bias):
        """Return ``(w', b')`` with ``w' = w·γ/√(σ²+ε)`` per output channel
        (dimension 0) and ``b' = (b − μ)·γ/√(σ²+ε) + β``, from the running statistics, in
        ``weight``'s dtype."""
        bn, dtype = module.bn, weight.dtype
        s = bn.weight.to(dtype) / torch.sqrt(bn.running_var.to(dtype) + bn.eps)
        bias = torch.zeros_like(s) if bias is None else bias
        folded = weight * s.view(-1, *([1] * (weight.dim() - 1)))
        return folded, (bias - bn.running_mean.to(dtype)) * s + bn.bias.to(dtype)


# -- the exporter registry --------------------------------------------------------------------

def codes_of(t, frac):
    """Return the int64 codes of the fake-quantized tensor ``t`` at ``frac`` (per dim 0 if a
    list)."""
    s = np.ldexp(1.0, np.asarray(frac, dtype=np.int64))
    if np.ndim(s):
        s = s.reshape(-1, *([1] * (t.dim() - 1)))
    return np.rint(t.detach().to(torch.float64).numpy() * s).astype(np.int64)


class Exporter:
    """The ``qmodel.json`` side of one layer kind (one instance per kind in :data:`EXPORTERS`)."""

    def label(self, layer):
        """Return the name of the config ``layer`` in reports."""
        return layer.kind

    def record(self, qnet, i, arrays):
        """Return the record of exported layer ``i`` of ``qnet``; add its arrays to ``arrays``
        (by array name)."""
        raise TypeError(f"{type(self).__name__}: this layer kind has no record")

    def tap_value(self, record, codes):
        """Return the real values (float64) of the tap ``codes`` of the layer of ``record``."""
        frac = record["acc_frac"][0] if record["final"] else record["out_format"]["frac"]
        return codes.astype(np.float64) / 2.0 ** frac


class _Recorded(Exporter):
    def record(self, qnet, i, arrays):
        layer, p = qnet.config.exported[i], qnet.plan[i]
        d = {"name": layer.name, "kind": layer.kind, "in_format": p["in"], "final": layer.final,
             "in_shape": list(layer.in_shape)}
        d.update(layer.spec.record(layer.params, layer.in_shape))
        d["arrays"] = self.fill(d, qnet, i, arrays)
        return d

    def fill(self, d, qnet, i, arrays):
        """Add the kind's format fields to the record ``d`` and its arrays to ``arrays``;
        return the record's ``arrays`` table (role → array name)."""
        d["out_format"] = qnet.plan[i]["out"]
        return {}


@_register(EXPORTERS, "pool")
class PoolExporter(_Recorded):
    def label(self, layer):
        return f"{layer.mode}pool"


@_register(EXPORTERS, "gap")
class GapExporter(_Recorded):
    pass


class _AffineExporter(_Recorded):
    def fill(self, d, qnet, i, arrays):
        layer, p = qnet.config.exported[i], qnet.plan[i]
        arrays[f"{layer.name}.weight"] = codes_of(qnet.weight(i), p["weight"]["frac"])
        arrays[f"{layer.name}.bias"] = codes_of(qnet.bias(i), p["acc_frac"])
        names = {"weight": f"{layer.name}.weight", "bias": f"{layer.name}.bias"}
        d.update(weight_format=p["weight"], acc_bits=p["acc_bits"], acc_frac=p["acc_frac"])
        if layer.final:
            d["activation"] = {"kind": "none"}
        elif p["lut"] is not None:
            d["activation"] = {"kind": "lut", "function": layer.activation,
                               "in_bits": p["requant"]["bits"], "in_frac": p["requant"]["frac"]}
            arrays[f"{layer.name}.lut"] = p["lut"]
            names["lut"] = f"{layer.name}.lut"
        else:
            d["activation"] = {"kind": layer.activation}
        if not layer.final:
            d["out_format"] = p["out"]
        return names


@_register(EXPORTERS, "conv")
class ConvExporter(_AffineExporter):
    """Adds the connection table (0/1 per output and input channel) of a sparse layer."""

    def fill(self, d, qnet, i, arrays):
        names = super().fill(d, qnet, i, arrays)
        layer = qnet.config.exported[i]
        if not layer.full:
            mask = np.zeros((layer.out_shape[0], layer.in_shape[0]), dtype=np.int64)
            for o, row in enumerate(layer.connections):
                mask[o, list(row)] = 1
            arrays[f"{layer.name}.connections"] = mask
            names["connections"] = f"{layer.name}.connections"
        return names


@_register(EXPORTERS, "dense")
class DenseExporter(_AffineExporter):
    pass


@_register(EXPORTERS, "subsample")
class SubsampleExporter(_AffineExporter):
    pass


@_register(EXPORTERS, "rbf")
class RbfExporter(_Recorded):
    def fill(self, d, qnet, i, arrays):
        layer, p = qnet.config.exported[i], qnet.plan[i]
        arrays[f"{layer.name}.centers"] = codes_of(qnet.weight(i), p["weight"]["frac"])
        d["acc_bits"] = p["acc_bits"]
        return {"centers": f"{layer.name}.centers"}

    def tap_value(self, record, codes):
        return -codes.astype(np.float64) / 2.0 ** (2 * record["in_format"]["frac"])


@_register(EXPORTERS, "batchnorm")
class BatchNormExporter(Exporter):
    """No record: the layer before it is exported with the batchnorm folded into its weight and
    bias (:meth:`BatchNormKind.fold`, applied before quantization so that the fake-quantized
    model and the export share the codes) and with its activation."""

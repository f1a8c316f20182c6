"""The stage plan: how the layers of an integer model become hardware stages.

:data:`STAGES` has one entry per exported layer kind (a :class:`LayerStages` subclass): given
the layer's record and input shape it knows the zero padding its input needs, its MAC geometry
(MAC kinds) and the planned stages it becomes for the channels per beat coming in and its
folding entry. :func:`plan` chains them from the integer model, inserting the padders,
:class:`~hw.regroup.Regroup` stages and the classifier between them. A planned stage
(:class:`PlannedStage`) knows its cycles per image, latency, multipliers, MACs and resources,
the beat times it gives its first image (:meth:`PlannedStage.times`) and how to build its
component (:meth:`PlannedStage.build`): :mod:`hw.top` builds the components, :mod:`hw.cycles`
adds the figures up, and neither walks the layers again.
"""

from typing import NamedTuple

import numpy as np
from amaranth.hdl import signed

from core.kinds import KINDS, record_shape
from core.registry import Registry

from .arith import Activation, format_shape
from .gap import GapStage, gap_latency, gap_resources, gap_sum_bits
from .mac import MacStage, group_steps, mac_extra_latency, mac_resources, simd_split
from .output import ClassifyStage
from .padder import Padder
from .pool import PoolStage, pool_latency, pool_resources
from .regroup import Regroup, regroup_steps

__all__ = ["STAGES", "LayerStages", "MacGeometry", "PlannedStage", "plan", "layer_plans",
           "layer_shapes", "mac_layers", "mac_geometry", "connections_of", "mac_group_steps",
           "mac_steps", "mac_cycles"]

#: The hardware stage of each exported layer kind (a :class:`LayerStages` subclass).
STAGES = Registry("hardware stage", exported_only=True)

#: Cycles from a beat accepted by a :class:`~hw.padder.Padder` or a
#: :class:`~hw.regroup.Regroup` to its (first) output beat being valid: their output register.
_OUTPUT_REGISTER = 1


def _accepted(times):
    """Return the cycles a stage taking one beat per cycle accepts beats valid at ``times``."""
    accepted, t = [], -1
    for v in times:
        t = max(t + 1, v)
        accepted.append(t)
    return accepted


class MacGeometry(NamedTuple):
    """How a MAC layer looks to :class:`~hw.mac.MacStage`: a window of ``kernel`` sliding over
    ``in_shape`` (padding included) for ``out_channels``; ``dense`` names the window
    ``in_features`` in messages (a dense layer's window covers its whole input)."""
    in_shape: tuple
    kernel: tuple
    out_channels: int
    dense: bool


# -- planned stages -----------------------------------------------------------------------------

class PlannedStage:
    """One hardware stage of the plan, before it is built.

    Attributes
    ----------
    name, kind : str
        The stage's name and kind in the cycle model (``kind`` is the layer kind for a layer's
        own stage; ``pad``, ``regroup`` and ``classify`` for the stages between layers).
    owner : str
        The layer (or ``input``/``output``) the stage belongs to; names the regroups before it.
    cycles, latency, multipliers, macs, dense_macs : int
        Cycles per image when fed and drained without stalls; pipeline cycles (see the stage's
        component); multipliers; useful and full-table multiply-accumulates per image.
    in_lanes : int or None
        The channels per beat the stage takes (``None``: as many as it is given).
    out_lanes, out_code, out_shape
        Channels per beat, code shape and ``(channels, height, width)`` of its output stream.
    """
    kind = None
    in_lanes = None
    multipliers = 0
    macs = 0
    dense_macs = 0

    def __init__(self, name, owner):
        self.name = name
        self.owner = owner

    @property
    def resources(self):
        """``{"multipliers", "memory_bits": {...}}`` (more keys for MAC stages)."""
        return {"multipliers": 0, "memory_bits": {}}

    def times(self, times):
        """Return the cycles the output beats of the first image are valid, given those of its
        input beats (``times``), through an empty pipeline into an always-ready sink."""
        raise NotImplementedError

    def build(self):
        """Return the stage's :class:`~amaranth.lib.wiring.Component`."""
        raise NotImplementedError

    def info(self):
        """Return the stage's row of the stage table (a dict)."""
        return {"name": self.name, "kind": self.kind, "cycles": self.cycles,
                "latency": self.latency, "multipliers": self.multipliers, "macs": self.macs,
                "dense_macs": self.dense_macs, "resources": self.resources}


class PlannedPadder(PlannedStage):
    """A :class:`~hw.padder.Padder`: ``pad`` zero rows and columns around each image."""
    kind = "pad"
    latency = _OUTPUT_REGISTER

    def __init__(self, name, owner, *, in_shape, pad, fmt):
        super().__init__(name, owner)
        self.in_shape, self.pad, self.fmt = tuple(in_shape), pad, fmt
        c, h, w = self.in_shape
        self.in_lanes = self.out_lanes = c
        self.out_code = format_shape(fmt)
        self.out_shape = (c, h + 2 * pad, w + 2 * pad)
        self.cycles = self.out_shape[1] * self.out_shape[2]

    def times(self, times):
        _, h, w = self.in_shape
        p = self.pad
        out, t, j = [], -1, 0
        for r in range(h + 2 * p):
            for c in range(w + 2 * p):
                inside = p <= r < h + p and p <= c < w + p
                t = max(t + 1, times[j]) if inside else t + 1
                j += inside
                out.append(t + self.latency)
        return out

    def build(self):
        c, h, w = self.in_shape
        return Padder(channels=c, height=h, width=w, pad=self.pad, fmt=self.fmt)

    def info(self):
        return {**super().info(), "in_hw": self.in_shape[1:], "pad": self.pad}


class PlannedRegroup(PlannedStage):
    """A :class:`~hw.regroup.Regroup`: beats of ``n_in`` channels into beats of ``n_out``."""
    kind = "regroup"
    latency = _OUTPUT_REGISTER

    def __init__(self, name, owner, *, shape, code, n_in, n_out):
        super().__init__(name, owner)
        c, h, w = shape
        self.n_in, self.n_out, self.out_code, self.out_shape = n_in, n_out, code, tuple(shape)
        self.in_lanes, self.out_lanes = n_in, n_out
        self.cycles = h * w * c // min(n_in, n_out)

    def times(self, times):
        out, t = [], None
        if self.n_out >= self.n_in:                    # gather k beats into one
            k = self.n_out // self.n_in
            for j, v in enumerate(times):
                t = v if t is None else max(t + 1, v)
                if j % k == k - 1:
                    out.append(t + self.latency)
        else:                                          # split one beat into k
            k = self.n_in // self.n_out
            for v in times:
                t = v if t is None else max(t + k, v)
                out.extend(t + self.latency + i for i in range(k))
        return out

    def build(self):
        return Regroup(shape=self.out_code, n_in=self.n_in, n_out=self.n_out)

    def info(self):
        return {**super().info(), "n_in": self.n_in, "n_out": self.n_out}


class PlannedMac(PlannedStage):
    """A :class:`~hw.mac.MacStage` of a conv, dense or rbf layer with its folding entry."""

    def __init__(self, layer, *, fold, arrays, load, final):
        super().__init__(layer.name, layer.name)
        self.layer, self.arrays, self.final = layer, arrays, final
        self.kind = layer.kind
        self.geometry = geo = layer.geometry
        self.pe, self.simd, self.lut_mul = fold["pe"], fold["simd"], fold.get("mul") == "lut"
        self.weight_load = layer.name in load
        (c, hh, ww), (kh, kw), out_channels = geo.in_shape, geo.kernel, geo.out_channels
        self.table = connections_of(layer.record, arrays)
        self.split = simd_split(c, kh, kw, self.simd)
        self.in_lanes = self.split[0]
        self.out_lanes = self.pe
        record = layer.record
        self.out_code = signed(record["acc_bits"]) if final else \
            format_shape(record["out_format"])
        self.out_shape = (out_channels, hh - kh + 1, ww - kw + 1)
        self.group_steps = mac_group_steps(geo.in_shape, geo.kernel, out_channels, self.pe,
                                           self.simd, self.table)
        self.steps = sum(self.group_steps)
        self.cycles = mac_cycles(geo.in_shape, geo.kernel, out_channels, self.pe, self.simd,
                                 self.table)
        self.lut_bits = 0 if final else _lut_bits(record)
        self.latency = mac_extra_latency(self.simd, self.lut_bits > 0)
        self.multipliers = self.pe * self.simd
        positions = self.out_shape[1] * self.out_shape[2]
        pairs = int(self.table.sum()) if self.table is not None else out_channels * c
        self.macs = positions * pairs * kh * kw
        self.dense_macs = positions * out_channels * c * kh * kw

    @property
    def resources(self):
        geo, record = self.geometry, self.layer.record
        name = record.get("arrays", {}).get("bias")
        bias = name is not None and (self.arrays is None or name not in self.arrays
                                     or bool(np.any(self.arrays[name])))
        return mac_resources(
            in_bits=record["in_format"]["bits"],
            w_bits=self.layer.weight_format["bits"], acc_bits=record["acc_bits"],
            in_shape=geo.in_shape, kernel=geo.kernel, out_channels=geo.out_channels,
            pe=self.pe, simd=self.simd, rom_rows=self.steps, bias=bias,
            lut_bits=self.lut_bits)

    def times(self, times):
        (_, hh, ww), (kh, _) = self.geometry.in_shape, self.geometry.kernel
        _, oh, ow = self.out_shape
        accepted = _accepted(times)
        per_row = ww * (self.geometry.in_shape[0] // self.split[0])
        row_ready = [accepted[(r + 1) * per_row - 1] + 1 for r in range(hh)]
        out, start = [], -self.steps
        for ro in range(oh):
            for _ in range(ow):
                start = max(start + self.steps, row_ready[ro + kh - 1])
                done = start
                for group in self.group_steps:          # one output beat per group
                    done += group
                    out.append(done + self.latency)
        return out

    def build(self):
        arrays = _need_arrays(self.layer, self.arrays)
        record, geo = self.layer.record, self.geometry
        weight, bias = self.layer.operands(arrays)
        activation = None if self.final else _activation(self.layer.label, record, arrays,
                                                         geo.out_channels)
        return MacStage(label=self.layer.label, in_shape=geo.in_shape,
                        in_format=record["in_format"], weight_format=self.layer.weight_format,
                        weight=weight, bias=bias, acc_bits=record["acc_bits"],
                        activation=activation, op=self.layer.op, pe=self.pe, simd=self.simd,
                        connections=self.table, dense=geo.dense, weight_load=self.weight_load,
                        lut_mul=self.lut_mul)

    def info(self):
        c_block, t, r = self.split
        return {**super().info(), "pe": self.pe, "simd": self.simd, "steps": self.steps,
                "split": {"c_block": c_block, "t": t, "r": r},
                "groups": self.geometry.out_channels // self.pe, "group_steps": self.group_steps,
                "in_shape": self.geometry.in_shape, "kernel": self.geometry.kernel,
                "blocks": self.geometry.in_shape[0] // c_block, "out_hw": self.out_shape[1:]}


class PlannedPool(PlannedStage):
    """A :class:`~hw.pool.PoolStage` (max, avg or LeCun's subsampling) on ``lanes``-channel
    beats."""

    def __init__(self, layer, *, mode, lanes, arrays):
        super().__init__(layer.name, layer.name)
        self.layer, self.mode, self.arrays = layer, mode, arrays
        self.kind = layer.kind
        record = layer.record
        c, h, w = layer.in_shape
        self.size = size = record["size"]
        self.in_lanes = self.out_lanes = lanes
        self.out_shape = layer.out_shape
        self.out_code = format_shape(record["out_format"])
        self.cycles = h * w * (c // lanes)
        self.lut_bits = _lut_bits(record)
        self.latency = pool_latency(mode, self.lut_bits > 0)
        in_bits = record["in_format"]["bits"]
        part = in_bits if mode == "max" else in_bits + (size * size - 1).bit_length() + 1
        self._resources = pool_resources(mode, c, w, size, lanes, part, self.lut_bits)
        self.multipliers = self._resources["multipliers"]

    @property
    def resources(self):
        return self._resources

    def times(self, times):
        _, h, w = self.layer.in_shape
        s, blocks = self.size, self.layer.in_shape[0] // self.in_lanes
        accepted = _accepted(times)
        return [accepted[((r * s + s - 1) * w + c * s + s - 1) * blocks + b] + self.latency
                for r in range(h // s) for c in range(w // s) for b in range(blocks)]

    def build(self):
        record, label = self.layer.record, self.layer.label
        args = {"label": label, "mode": self.mode, "size": self.size,
                "in_shape": self.layer.in_shape, "in_format": record["in_format"],
                "lanes": self.in_lanes}
        return PoolStage(**args, **self.layer.affine(self.arrays))

    def info(self):
        return {**super().info(), "in_shape": self.layer.in_shape, "size": self.size,
                "blocks": self.layer.in_shape[0] // self.in_lanes}


class PlannedGap(PlannedStage):
    """A :class:`~hw.gap.GapStage` on ``lanes``-channel beats."""

    def __init__(self, layer, *, lanes):
        super().__init__(layer.name, layer.name)
        self.layer = layer
        self.kind = layer.kind
        record = layer.record
        c, h, w = layer.in_shape
        self.mul, self.shift = int(record["mul"]), int(record["shift"])
        self.in_lanes = self.out_lanes = lanes
        self.out_shape = layer.out_shape
        self.out_code = format_shape(record["in_format"])
        self.cycles = h * w * (c // lanes)
        self.latency = gap_latency(self.mul)
        self._resources = gap_resources(
            channels=c, lanes=lanes, sum_bits=gap_sum_bits(record["in_format"]["bits"], h * w),
            mul=self.mul)
        self.multipliers = self._resources["multipliers"]

    @property
    def resources(self):
        return self._resources

    def times(self, times):
        c, h, w = self.layer.in_shape
        blocks = c // self.in_lanes
        accepted = _accepted(times)
        return [accepted[(h * w - 1) * blocks + b] + self.latency for b in range(blocks)]

    def build(self):
        return GapStage(label=self.layer.label, in_shape=self.layer.in_shape,
                        in_format=self.layer.record["in_format"], mul=self.mul,
                        shift=self.shift, lanes=self.in_lanes)


class PlannedClassifier(PlannedStage):
    """The :class:`~hw.output.ClassifyStage`: one score per beat in, one beat per image out."""
    kind = "classify"
    in_lanes = 1
    out_lanes = 1
    #: Cycles from the last score accepted to the output beat valid: its output register.
    latency = 1

    def __init__(self, *, num_classes, in_bits, score_bits, output):
        super().__init__("output", "output")
        self.num_classes, self.in_bits, self.score_bits = num_classes, in_bits, score_bits
        self.output = output
        self.cycles = num_classes + 1
        self.out_shape = (1, 1, 1)
        self.out_code = None

    def times(self, times):
        return [times[-1] + self.latency]

    def build(self):
        return ClassifyStage(num_classes=self.num_classes, in_bits=self.in_bits,
                             score_bits=self.score_bits, kind=self.output)


# -- the registry entries -----------------------------------------------------------------------

class LayerStages:
    """How one layer becomes hardware stages (the :data:`STAGES` entry of its kind).

    Parameters
    ----------
    index : int
        The layer's index in ``qmodel.json``.
    record : dict
        Its record.
    in_shape : (int, int, int)
        Its input shape (before its own padding).

    Attributes: ``label`` (``layers[i] 'name'``, for messages), ``name``, ``kind``,
    ``out_shape``, ``padding`` (zero rows and columns its input needs, inserted by a
    :class:`~hw.padder.Padder` in front of it) and ``geometry`` (a :class:`MacGeometry` for the
    kinds on the MAC array, else ``None``).
    """
    padding = 0
    geometry = None

    def __init__(self, index, record, in_shape):
        self.index, self.record, self.in_shape = index, record, tuple(in_shape)
        self.name = record.get("name", "?")
        self.kind = record["kind"]
        self.label = f"layers[{index}] {self.name!r}"
        self.out_shape = tuple(record_shape(record, in_shape))

    @property
    def mac(self):
        """Whether the layer runs on the MAC array (and so takes a folding entry)."""
        return KINDS[self.kind].mac

    def stages(self, *, lanes, fold, arrays, load, final):
        """Return the layer's planned stages, given the channels per beat coming in (``lanes``),
        its folding entry (MAC kinds), the arrays (or ``None``: figures only), the names of the
        layers with loaded weights and whether it is the final layer."""
        raise NotImplementedError


class _MacLayer(LayerStages):
    #: What the MAC array computes: ``"mul"`` (w·x) or ``"sqdiff"`` ((x - w)²).
    op = "mul"

    @property
    def weight_format(self):
        return self.record["weight_format"]

    def operands(self, arrays):
        """Return ``(weight[O, C, kh, kw], bias[O] or None)`` for :class:`MacStage`."""
        names = self.record["arrays"]
        geo = self.geometry
        weight = arrays[names["weight"]].reshape((geo.out_channels,) + geo.in_shape[:1]
                                                 + geo.kernel)
        return weight, arrays[names["bias"]]

    def stages(self, *, lanes, fold, arrays, load, final):
        return [PlannedMac(self, fold=fold, arrays=arrays, load=load, final=final)]


@STAGES.register("conv")
class ConvStages(_MacLayer):
    @property
    def padding(self):
        return int(self.record.get("padding", 0))

    @property
    def geometry(self):
        c, h, w = self.in_shape
        p, k = self.padding, int(self.record["kernel"])
        return MacGeometry((c, h + 2 * p, w + 2 * p), (k, k), self.out_shape[0], False)


@STAGES.register("dense")
class DenseStages(_MacLayer):
    @property
    def geometry(self):
        c, h, w = self.in_shape
        return MacGeometry((c, h, w), (h, w), self.out_shape[0], True)


@STAGES.register("rbf")
class RbfStages(DenseStages):
    op = "sqdiff"

    @property
    def weight_format(self):
        return self.record["in_format"]                   # the centers are input codes

    def operands(self, arrays):
        geo = self.geometry
        centers = arrays[self.record["arrays"]["centers"]]
        return centers.reshape((geo.out_channels,) + geo.in_shape), None


@STAGES.register("pool")
class PoolStages(LayerStages):
    @property
    def mode(self):
        """The :class:`~hw.pool.PoolStage` mode."""
        return self.record["mode"]

    def affine(self, arrays):
        """Return the :class:`~hw.pool.PoolStage` arguments of a trainable pool (none)."""
        return {}

    def stages(self, *, lanes, fold, arrays, load, final):
        return [PlannedPool(self, mode=self.mode, lanes=lanes, arrays=arrays)]


@STAGES.register("subsample")
class SubsampleStages(PoolStages):
    mode = "subsample"

    def affine(self, arrays):
        """Return LeCun's per-map coefficient, bias and activation as PoolStage arguments."""
        arrays = _need_arrays(self, arrays)
        record, names = self.record, self.record["arrays"]
        return {"coef": arrays[names["weight"]], "bias": arrays[names["bias"]],
                "coef_format": record["weight_format"], "acc_bits": record["acc_bits"],
                "activation": _activation(self.label, record, arrays, self.out_shape[0])}


@STAGES.register("gap")
class GapStages(LayerStages):
    def stages(self, *, lanes, fold, arrays, load, final):
        return [PlannedGap(self, lanes=lanes)]


# -- helpers ------------------------------------------------------------------------------------

def _need_arrays(layer, arrays):
    if arrays is None:
        raise ValueError(f"{layer.label}: building its stage needs the integer model's arrays")
    return arrays


def _per_channel(value, channels):
    if isinstance(value, list):
        return [int(v) for v in value]
    return [int(value)] * channels


def _lut_bits(record):
    act = record.get("activation", {"kind": "none"})
    if record.get("final", False) or act.get("kind") != "lut":
        return 0
    return (1 << act["in_bits"]) * format_shape(record["out_format"]).width


def _activation(label, record, arrays, channels):
    names = record.get("arrays", {})
    table = arrays[names["lut"]] if "lut" in names else None
    return Activation(name=label, activation=record.get("activation", {"kind": "none"}),
                      out_format=record["out_format"],
                      acc_frac=_per_channel(record["acc_frac"], channels),
                      table=None if table is None else [int(v) for v in table])


def _input_shape(meta):
    inp = meta["input"]
    return (inp.get("channels", 1), inp["height"] + 2 * inp["pad"],
            inp["width"] + 2 * inp["pad"])


def layer_plans(meta):
    """Return the :data:`STAGES` entry of each layer of ``meta``, in order."""
    shape = _input_shape(meta)
    entries = []
    for index, record in enumerate(meta["layers"]):
        entry = STAGES[record["kind"]](index, record, shape)
        entries.append(entry)
        shape = entry.out_shape
    return entries


def layer_shapes(meta):
    """Return the ``(channels, height, width)`` input shape of each layer, in order."""
    return [entry.in_shape for entry in layer_plans(meta)]


def mac_layers(meta):
    """Return the :data:`STAGES` entries of the layers that take a folding entry, in order."""
    return [entry for entry in layer_plans(meta) if entry.mac]


def mac_geometry(record, in_shape):
    """Return the :class:`MacGeometry` of a MAC layer's record with input ``in_shape``."""
    return STAGES[record["kind"]](0, record, in_shape).geometry


def connections_of(record, arrays):
    """Return the ``[O, C]`` connection table of a layer, or None (full).

    When the layer names a table but ``arrays`` does not hold it, raise ``ValueError``: the
    steps, cycles and MACs of a sparse layer depend on its table, and counting it as full would
    silently report a dense layer's figures.
    """
    name = record.get("arrays", {}).get("connections")
    if name is None:
        return None
    if arrays is None or name not in arrays:
        raise ValueError(f"layer {record['name']!r} has a connection table ({name!r}) but no "
                         f"arrays were given; pass the integer model's arrays")
    return np.asarray(arrays[name], dtype=np.int64)


def mac_group_steps(in_shape, kernel, out_channels, pe, simd, connections=None):
    """MAC steps of each group of ``pe`` output channels of a :class:`MacStage` position."""
    c, _, _ = in_shape
    kh, kw = kernel
    c_block, t, r = simd_split(c, kh, kw, simd)
    lists = group_steps(connections, out_channels, c, pe, c_block)
    return [(kh // r) * (kw // t) * len(blocks) for blocks in lists]


def mac_steps(in_shape, kernel, out_channels, pe, simd, connections=None):
    """MAC steps of one output position of a :class:`MacStage` (all its groups)."""
    return sum(mac_group_steps(in_shape, kernel, out_channels, pe, simd, connections))


def mac_cycles(in_shape, kernel, out_channels, pe, simd, connections=None):
    """Cycles per image of a :class:`MacStage` (see its docstring)."""
    c, h, w = in_shape
    kh, kw = kernel
    steps = mac_steps(in_shape, kernel, out_channels, pe, simd, connections)
    c_block = simd_split(c, kh, kw, simd)[0]
    return max(h * w * (c // c_block), (h - kh + 1) * (w - kw + 1) * steps)


def plan(meta, folding=None, arrays=None, *, load=()):
    """Return the planned stages (:class:`PlannedStage`), input to output, of the integer model.

    ``meta`` is ``qmodel.json``; ``folding`` one ``{"pe", "simd"[, "mul"]}`` per MAC layer, as
    :func:`hw.folding.check_folding` returns it (``None``: all 1); ``arrays`` the int64 arrays
    of ``qmodel.npz`` by name (needed to build the components, and for the figures of a layer
    with a connection table); the MAC layers named in ``load`` keep their weights in loadable
    memories. Between stages the channels per beat change only where a stage needs it
    (a :class:`~hw.regroup.Regroup` in front of MAC stages, padders and the classifier).
    """
    if arrays is not None:
        arrays = {name: np.asarray(value, dtype=np.int64) for name, value in arrays.items()}
    layers = meta["layers"]
    if not layers:
        raise ValueError("qmodel has no layers")
    entries = layer_plans(meta)
    last = entries[-1]
    scores = [name for name, k in KINDS.items() if k.exported and k.final != "never"]
    if not last.record.get("final", False) or KINDS[last.kind].final == "never":
        raise ValueError(f"{last.label}: the last layer must be a final "
                         f"{' or '.join(scores)} layer")
    for entry in entries[:-1]:
        if entry.record.get("final", False):
            raise ValueError(f"{entry.label}: only the last layer can be final")
    folds = iter(folding if folding is not None else
                 [{"pe": 1, "simd": 1} for entry in entries if entry.mac])
    inp = meta["input"]
    channels = inp.get("channels", 1)
    stages = []
    # What the stream between the last stage planned and the next carries.
    stream = {"lanes": channels, "code": format_shape(inp["format"]),
              "shape": (channels, inp["height"], inp["width"])}

    def add(stage):
        # The channels per beat change between stages: gather or split (hw.regroup).
        if stage.in_lanes is not None:
            shape = stream["shape"]
            for n_in, n_out in regroup_steps(stream["lanes"], stage.in_lanes):
                stages.append(PlannedRegroup(f"{stage.owner}.regroup", stage.owner,
                                             shape=shape, code=stream["code"], n_in=n_in,
                                             n_out=n_out))
        stages.append(stage)
        stream.update(lanes=stage.out_lanes, code=stage.out_code, shape=stage.out_shape)

    pad = inp["pad"] + entries[0].padding      # the first layer's padding joins the input's
    if pad:
        add(PlannedPadder("input", "input", in_shape=stream["shape"], pad=pad,
                          fmt=inp["format"]))
    for entry in entries:
        if entry.padding and entry is not entries[0]:
            add(PlannedPadder(f"{entry.name}.pad", entry.name, in_shape=entry.in_shape,
                              pad=entry.padding, fmt=entry.record["in_format"]))
        for stage in entry.stages(lanes=stream["lanes"], fold=next(folds) if entry.mac else None,
                                  arrays=arrays, load=load, final=entry is last):
            add(stage)
    add(PlannedClassifier(num_classes=last.out_shape[0], in_bits=last.record["acc_bits"],
                          score_bits=meta["output"]["score_bits"],
                          output=meta["output"]["kind"]))
    return stages

"""Planned stages: one hardware stage of the plan (:func:`hw.plan.plan`) before it is built.

A planned stage (:class:`PlannedStage`) knows its cycles per image, latency (read from its
component class or the functions beside it, which derive it from the registers the component
builds), multipliers, MACs and resources, the beat times it gives its first image
(:meth:`PlannedStage.times`) and how to build its component (:meth:`PlannedStage.build`).
"""

from abc import ABC, abstractmethod

import numpy as np
from amaranth.hdl import signed

from .arith import Activation, format_shape
from .gap import GapStage, gap_latency, gap_resources, gap_sum_bits
from .geometry import connections_of, mac_cycles, mac_group_steps, simd_split
from .mac import MacStage, mac_extra_latency, mac_resources
from .output import ClassifyStage
from .padder import Padder
from .pool import PoolStage, pool_latency, pool_part_bits, pool_resources
from .regroup import Regroup

__all__ = ["PlannedStage", "PlannedPadder", "PlannedRegroup", "PlannedMac", "PlannedPool",
           "PlannedGap", "PlannedClassifier", "accept_times", "need_arrays", "record_activation",
           "lut_bits"]


def accept_times(times):
    """Return the cycles a stage taking one beat per cycle accepts beats valid at ``times``."""
    out, t = [], -1
    for v in times:
        t = max(t + 1, v)
        out.append(t)
    return out


class PlannedStage(ABC):
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

    @abstractmethod
    def times(self, times):
        """Return the cycles the output beats of the first image are valid, given those of its
        input beats (``times``), through an empty pipeline into an always-ready sink."""

    @abstractmethod
    def build(self):
        """Return the stage's :class:`~amaranth.lib.wiring.Component`."""

    def info(self):
        """Return the stage's row of the stage table (a dict)."""
        return {"name": self.name, "kind": self.kind, "cycles": self.cycles,
                "latency": self.latency, "multipliers": self.multipliers, "macs": self.macs,
                "dense_macs": self.dense_macs, "resources": self.resources}


class PlannedPadder(PlannedStage):
    """A :class:`~hw.padder.Padder`: ``pad`` zero rows and columns around each image."""
    kind = "pad"
    latency = Padder.latency

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
    latency = Regroup.latency

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
        self.lut_bits = 0 if final else lut_bits(record)
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
        accepted = accept_times(times)
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
        arrays = need_arrays(self.layer.label, self.arrays)
        record, geo = self.layer.record, self.geometry
        weight, bias = self.layer.operands(arrays)
        activation = None if self.final else record_activation(self.layer.label, record, arrays,
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


class _PlannedMapStage(PlannedStage):
    """A layer's stage that takes its ``(channels, height, width)`` input ``lanes`` channels per
    beat (``blocks`` beats a position), one beat per cycle, and whose output beats carry as many
    channels; ``resources`` is its component's (multipliers included)."""

    def __init__(self, layer, *, lanes, out_format, resources):
        super().__init__(layer.name, layer.name)
        self.layer, self.kind = layer, layer.kind
        c, h, w = layer.in_shape
        self.in_lanes = self.out_lanes = lanes
        self.blocks = c // lanes
        self.out_shape = layer.out_shape
        self.out_code = format_shape(out_format)
        self.cycles = h * w * self.blocks
        self._resources = resources
        self.multipliers = resources["multipliers"]

    @property
    def resources(self):
        return self._resources


class PlannedPool(_PlannedMapStage):
    """A :class:`~hw.pool.PoolStage` (max, avg or LeCun's subsampling) on ``lanes``-channel
    beats."""

    def __init__(self, layer, *, mode, lanes, arrays):
        record = layer.record
        c, _, w = layer.in_shape
        self.mode, self.arrays = mode, arrays
        self.size = size = record["size"]
        self.lut_bits = lut_bits(record)
        self.latency = pool_latency(mode, self.lut_bits > 0)
        part = pool_part_bits(mode, record["in_format"]["bits"], size)
        super().__init__(layer, lanes=lanes, out_format=record["out_format"],
                         resources=pool_resources(mode, c, w, size, lanes, part, self.lut_bits))

    def times(self, times):
        _, h, w = self.layer.in_shape
        s, blocks = self.size, self.blocks
        accepted = accept_times(times)
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
                "blocks": self.blocks}


class PlannedGap(_PlannedMapStage):
    """A :class:`~hw.gap.GapStage` on ``lanes``-channel beats."""

    def __init__(self, layer, *, lanes):
        record = layer.record
        c, h, w = layer.in_shape
        self.mul, self.shift = int(record["mul"]), int(record["shift"])
        self.latency = gap_latency(self.mul)
        resources = gap_resources(
            channels=c, lanes=lanes, sum_bits=gap_sum_bits(record["in_format"]["bits"], h * w),
            mul=self.mul)
        super().__init__(layer, lanes=lanes, out_format=record["in_format"],
                         resources=resources)

    def times(self, times):
        _, h, w = self.layer.in_shape
        accepted = accept_times(times)
        return [accepted[(h * w - 1) * self.blocks + b] + self.latency
                for b in range(self.blocks)]

    def build(self):
        return GapStage(label=self.layer.label, in_shape=self.layer.in_shape,
                        in_format=self.layer.record["in_format"], mul=self.mul,
                        shift=self.shift, lanes=self.in_lanes)


class PlannedClassifier(PlannedStage):
    """The :class:`~hw.output.ClassifyStage`: one score per beat in, one beat per image out."""
    kind = "classify"
    in_lanes = 1
    out_lanes = 1
    latency = ClassifyStage.latency

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


def need_arrays(label, arrays):
    """Return ``arrays``; raise ``ValueError`` naming the layer ``label`` when it is ``None``."""
    if arrays is None:
        raise ValueError(f"{label}: building its stage needs the integer model's arrays")
    return arrays


def _per_channel(value, channels):
    if isinstance(value, list):
        return [int(v) for v in value]
    return [int(value)] * channels


def lut_bits(record):
    """Return the bits of a layer's activation table (0: none, or a final layer)."""
    act = record.get("activation", {"kind": "none"})
    if record.get("final", False) or act.get("kind") != "lut":
        return 0
    return (1 << act["in_bits"]) * format_shape(record["out_format"]).width


def record_activation(label, record, arrays, channels):
    """Return the :class:`~hw.arith.Activation` of a layer's record (``channels`` outputs)."""
    names = record.get("arrays", {})
    table = arrays[names["lut"]] if "lut" in names else None
    return Activation(name=label, activation=record.get("activation", {"kind": "none"}),
                      out_format=record["out_format"],
                      acc_frac=_per_channel(record["acc_frac"], channels),
                      table=None if table is None else [int(v) for v in table])

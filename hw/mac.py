"""The MAC stage: sliding window (or buffered vector) feeding a PE × SIMD multiply array."""

import numpy as np
from amaranth.hdl import Module, Signal, signed
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from .arith import check_int, format_range, format_shape, rom_depth
from .geometry import group_steps, simd_error, simd_split
from .issue import IssueCounter
from .mac_array import MacArray, mac_array_latency
from .requant import Requantizer, requant_latency
from .skid import SkidBuffer
from .weights import LOADED_WEIGHTS, WeightStore
from .window import LineBuffer, ring_geometry

__all__ = ["MacStage", "mac_extra_latency", "mac_resources", "LARGE_MEMORY_BITS",
           "LOADED_WEIGHTS"]

#: Weight memories of at least this many bits are flagged ``large`` in :meth:`resources`
#: (candidates for iCE40 SPRAM / UltraRAM; each lane's weights are one memory with one
#: synchronous read port, so a platform can map them one by one).
LARGE_MEMORY_BITS = 16 * 1024


def mac_extra_latency(simd, lut):
    """Return the pipeline cycles a :class:`MacStage` adds after its last step's issue.

    The result of a position is valid ``steps + mac_extra_latency`` cycles after its first step
    is issued: its last step issues ``steps - 1`` cycles after the first, then passes the
    registers of the parts, the line buffer (and the weight memories beside it), the MAC array,
    the requantizer and the output skid buffer.
    """
    return (LineBuffer.latency + mac_array_latency(simd) + requant_latency(lut)
            + SkidBuffer.latency - 1)


class MacStage(wiring.Component):
    """Convolution, dense or RBF layer on a position stream.

    A window of ``kernel = (kh, kw)`` positions slides over the ``(channels, height, width)``
    input with stride 1 (a dense layer is the window that covers its whole input, so it computes
    one output position per image). Each cycle ``pe`` output channels × ``simd`` window
    elements are multiplied (``op="mul"``: ``w·x``; ``op="sqdiff"``: ``(x - w)²``) and
    accumulated; ``simd = c_block·t·r`` (:func:`~hw.geometry.simd_split`) takes ``c_block``
    channels of ``t`` consecutive taps of ``r`` window rows, and the steps walk the window in
    ``(ky, kx, channel block)`` order. After the steps of a group of ``pe`` output channels the
    accumulators get the bias, requantization and activation (or, for a ``final`` layer, leave
    raw). With a connection table the steps of a group visit only the channel blocks connected
    to one of its outputs.

    The input streams ``c_block`` channels of a position per beat (positions row-major, the
    channel blocks of a position in order); it is kept in a ring of ``2 kh`` rows, banked
    ``r × t`` ways (ring row ``s`` in bank row ``s mod r``, column ``x`` in bank column
    ``x mod t``), one channel block per memory word, so a step reads ``r·t`` distinct memories,
    each with one synchronous read port and no word select; the next image's first rows stream
    in while the last output row is computed. The output streams each group of ``pe`` output
    channels as its own beat as soon as it is computed (no register holds a whole position).

    Pipeline (all registers advance together; a full output freezes them): issue → ring and
    weight reads → window mux, and the weight words registered beside it (the multiplier's
    operands are registers: no block-RAM read or mux shares its cycle) → a private copy of
    each multiplier's operands → multiply → the products registered twice →
    :func:`~hw.mac_array.tree_stages` adder stages → accumulate → requantize (→ registered LUT
    index → synchronous LUT read) → output register with a skid buffer, so no ready signal
    crosses the stage combinationally.

    Cycles per image, fed and drained without stalls:
    ``max(height·width·blocks, out_h·out_w · Σ_groups steps)``,
    ``steps = (kh/r)(kw/t)·blocks`` of the group, ``blocks = channels / c_block``.

    Parameters
    ----------
    label : str
        Names the layer in messages, e.g. ``"layers[2] 'c3'"``.
    in_shape : (int, int, int)
        ``(channels, height, width)`` of the input stream.
    in_format, weight_format : dict
        Number formats of the input codes and of the weights (the centers for ``sqdiff``).
    weight : array ``[out_channels, channels, kh, kw]``
        Integer weights (RBF centers).
    bias : array ``[out_channels]`` or None
        Integer biases at the accumulator scale.
    acc_bits : int
        Accumulator width (bit growth of the integer model).
    activation : :class:`~hw.arith.Activation` or None
        Requantization and activation; ``None`` for a final layer (scores are the accumulators).
    op : ``"mul"`` or ``"sqdiff"``
    pe, simd : int
        Folding: ``pe`` must divide ``out_channels``; ``simd`` must divide the window length
        ``kh·kw·channels`` as ``c_block·t·r`` (:func:`~hw.geometry.simd_options`).
    connections : array ``[out_channels, channels]`` of 0/1, or None
        Connection table; unconnected pairs must have zero weights.
    dense : bool
        Name the window ``in_features`` in messages (a dense layer).
    weight_load : bool
        Keep the weights in writable memories without initial contents (e.g. iCE40 SPRAM),
        filled through the ``w`` stream after reset, instead of ROMs. Each lane's memory has
        one address shared by its write and read ports (a single-port RAM). The stage issues
        no step before ``loaded``; the arithmetic is the same as with ROMs.
    lut_mul : bool
        Build the products from shifted partial products (adders only) instead of the ``*``
        operator, so synthesis keeps them out of DSP blocks (e.g. a ninth multiplier on an
        iCE40 UP5K, which has 8); the arithmetic is the same.

    Members
    -------
    i : ``In(stream.Signature(ArrayLayout(in code, c_block)))``
    o : ``Out(stream.Signature(ArrayLayout(out code, pe)))``
        One beat per group of ``pe`` output channels, groups of a position in order.
    w : ``In(stream.Signature(weight code))`` (``weight_load`` only)
        The weights, one code per beat, in :meth:`load_codes` order.
    loaded : ``Out(1)`` (``weight_load`` only)
        High once every weight has been written (until reset).
    """
    def __init__(self, *, label, in_shape, in_format, weight_format, weight, bias, acc_bits,
                 activation, op="mul", pe=1, simd=1, connections=None, dense=False,
                 weight_load=False, lut_mul=False):
        weight = np.asarray(weight, dtype=np.int64)
        if weight.ndim != 4:
            raise ValueError(f"{label}: weight must have 4 dimensions [O, C, kh, kw], "
                             f"not shape {weight.shape}")
        out_channels, channels, kh, kw = weight.shape
        if tuple(in_shape)[0] != channels:
            raise ValueError(f"{label}: weight has {channels} input channels but the input "
                             f"has {in_shape[0]}")
        _, height, width = in_shape
        if kh > height or kw > width:
            raise ValueError(f"{label}: kernel {kh}x{kw} is larger than the input "
                             f"{height}x{width}")
        check_int(label, "pe", pe)
        check_int(label, "simd", simd)
        check_int(label, "acc_bits", acc_bits, 2)
        if out_channels % pe:
            raise ValueError(f"{label}: pe={pe} does not divide out_channels={out_channels}")
        message = simd_error(label, channels, kh, kw, simd, dense=dense)
        if message:
            raise ValueError(message)
        if op not in ("mul", "sqdiff"):
            raise ValueError(f"{label}: op must be 'mul' or 'sqdiff', not {op!r}")
        lo, hi = format_range(weight_format)
        if weight.size and (weight.min() < lo or weight.max() > hi):
            raise ValueError(f"{label}: weights leave the format {weight_format!r}")
        if bias is None:
            bias = np.zeros(out_channels, dtype=np.int64)
        bias = np.asarray(bias, dtype=np.int64).reshape(-1)
        if bias.shape != (out_channels,):
            raise ValueError(f"{label}: bias must have {out_channels} entries, "
                             f"not {bias.shape[0]}")
        if activation is not None and len(activation.shifts) != out_channels:
            raise ValueError(f"{label}: acc_frac must have {out_channels} entries")
        if connections is not None:
            connections = np.asarray(connections, dtype=np.int64)
            if connections.shape != (out_channels, channels):
                raise ValueError(f"{label}: connections must have shape "
                                 f"{(out_channels, channels)}, not {connections.shape}")
            if np.any(weight[connections == 0]):
                raise ValueError(f"{label}: nonzero weights of unconnected (output, input) "
                                 f"pairs would be skipped")
        self._label = label
        self._in_shape = (channels, height, width)
        self._kernel = (kh, kw)
        self._out_channels = out_channels
        self._in_format = dict(in_format)
        self._weight_format = dict(weight_format)
        self._weight = weight
        self._bias = bias
        self._acc_bits = acc_bits
        self._activation = activation
        self._op = op
        self._pe = pe
        self._simd = simd
        self._split = simd_split(channels, kh, kw, simd)
        self._steps = group_steps(connections, out_channels, channels, pe, self._split[0])
        if activation is None:
            out_code = signed(acc_bits)
        else:
            out_code = format_shape(activation.out_format)
        in_layout = data.ArrayLayout(format_shape(in_format), self._split[0])
        out_layout = data.ArrayLayout(out_code, pe)
        if not isinstance(weight_load, bool):
            raise TypeError(f"{label}: weight_load must be a bool, not {weight_load!r}")
        if not isinstance(lut_mul, bool):
            raise TypeError(f"{label}: lut_mul must be a bool, not {lut_mul!r}")
        self._weight_load = weight_load
        self._lut_mul = lut_mul
        members = {"i": In(stream.Signature(in_layout)), "o": Out(stream.Signature(out_layout))}
        if weight_load:
            members["w"] = In(stream.Signature(format_shape(weight_format)))
            members["loaded"] = Out(1)
        super().__init__(members)

    label = property(lambda self: self._label)
    in_shape = property(lambda self: self._in_shape)
    kernel = property(lambda self: self._kernel)
    out_channels = property(lambda self: self._out_channels)
    pe = property(lambda self: self._pe)
    simd = property(lambda self: self._simd)
    acc_bits = property(lambda self: self._acc_bits)

    @property
    def split(self):
        """``(c_block, t, r)``: channels, row taps and rows of the window read per step."""
        return self._split

    @property
    def out_shape(self):
        """``(out_channels, out_h, out_w)`` of the output stream."""
        _, h, w = self._in_shape
        kh, kw = self._kernel
        return (self._out_channels, h - kh + 1, w - kw + 1)

    @property
    def fold(self):
        """MAC steps of a group of ``pe`` output channels with a full connection table."""
        kh, kw = self._kernel
        return kh * kw * self._in_shape[0] // self._simd

    @property
    def groups(self):
        """Groups of ``pe`` output channels computed one after the other."""
        return self._out_channels // self._pe

    @property
    def steps(self):
        """MAC steps of one output position (all groups; fewer with a sparse table)."""
        c_block, t, r = self._split
        kh, kw = self._kernel
        return (kh // r) * (kw // t) * sum(len(blocks) for blocks in self._steps)

    @property
    def latency(self):
        """Cycles from a position's first issued step to its output being valid, minus steps."""
        lut = self._activation is not None and self._activation.table is not None
        return mac_extra_latency(self._simd, lut)

    @property
    def cycles(self):
        """Cycles per image when fed and drained without stalls."""
        c, h, w = self._in_shape
        _, ho, wo = self.out_shape
        return max(h * w * (c // self._split[0]), ho * wo * self.steps)

    lut_mul = property(lambda self: self._lut_mul)

    def resources(self):
        """Return the stage's memories and multipliers (see :func:`mac_resources`)."""
        c, h, w = self._in_shape
        table = None if self._activation is None else self._activation.table
        return mac_resources(
            in_bits=format_shape(self._in_format).width,
            w_bits=format_shape(self._weight_format).width, acc_bits=self._acc_bits,
            in_shape=self._in_shape, kernel=self._kernel, out_channels=self._out_channels,
            pe=self._pe, simd=self._simd, rom_rows=len(self._weight_init(0)),
            bias=bool(np.any(self._bias)),
            lut_bits=0 if table is None else len(table) * format_shape(
                self._activation.out_format).width)

    @property
    def weight_load(self):
        """Whether the weights are loaded through ``w`` (else they are ROM contents)."""
        return self._weight_load

    def load_codes(self):
        """Return the weight codes in the order the ``w`` stream takes them.

        Lane by lane (``pe`` lanes), each lane's memory words in address order, each word's
        ``simd`` elements in order; the same words the ROMs would hold.
        """
        return [v for lane in range(self._pe) for row in self._weight_init(lane) for v in row]

    def _weight_init(self, lane):
        kh, kw = self._kernel
        c_block, t, r = self._split
        rows = []
        for g, blocks in enumerate(self._steps):
            o = g * self._pe + lane
            for kyb in range(kh // r):
                for kxb in range(kw // t):
                    for cb in blocks:
                        rows.append([int(self._weight[o, cb * c_block + s, kyb * r + i,
                                                      kxb * t + j])
                                     for i in range(r) for j in range(t)
                                     for s in range(c_block)])
        return rows

    def elaborate(self, platform):
        m = Module()
        pe, simd = self._pe, self._simd
        geometry = dict(in_shape=self._in_shape, kernel=self._kernel, split=self._split)
        m.submodules.window = window = LineBuffer(code=format_shape(self._in_format), **geometry)
        m.submodules.issue = issue = IssueCounter(**geometry, steps=self._steps)
        m.submodules.weights = weights = WeightStore(
            shape=format_shape(self._weight_format), load=self._weight_load,
            words=[self._weight_init(lane) for lane in range(pe)])
        m.submodules.array = array = MacArray(
            x_shape=format_shape(self._in_format), w_shape=format_shape(self._weight_format),
            acc_bits=self._acc_bits, pe=pe, simd=simd, bias=self._bias, op=self._op,
            lut_mul=self._lut_mul)
        m.submodules.skid = skid = SkidBuffer(shape=self.o.payload.shape())
        assert window.latency == weights.latency
        # Every pipeline register advances together, while the skid buffer has room.
        adv = skid.i.ready

        wiring.connect(m, wiring.flipped(self.i), window.i)
        avail = window.avail
        if self._weight_load:
            wiring.connect(m, wiring.flipped(self.w), weights.w)
            m.d.comb += self.loaded.eq(weights.loaded)
            avail = avail & weights.loaded
        m.d.comb += [
            issue.avail.eq(avail), issue.en.eq(adv),
            window.rd.eq(issue.step.rd), window.free.eq(issue.free), window.en.eq(adv),
            weights.addr.eq(issue.step.wa), weights.en.eq(adv),
        ]

        # The step's control travels beside the line buffer and weight reads.
        control = data.StructLayout({"valid": 1, "first": 1, "last": 1,
                                     "g": issue.step.g.shape()})
        ctl = Signal(control)
        m.d.comb += [ctl.valid.eq(issue.issue), ctl.first.eq(issue.step.first),
                     ctl.last.eq(issue.step.last), ctl.g.eq(issue.step.g)]
        for k in range(window.latency):
            ctl, prev = Signal(control, name=f"ctl{k + 1}"), ctl
            with m.If(adv):
                m.d.sync += ctl.eq(prev)
        m.d.comb += [
            array.en.eq(adv),
            array.i.valid.eq(ctl.valid), array.i.first.eq(ctl.first),
            array.i.last.eq(ctl.last), array.i.g.eq(ctl.g),
            array.i.x.eq(window.x), array.i.w.eq(weights.data),
        ]

        # Each finished group is an output beat, requantized unless the layer is final.
        if self._activation is None:
            valid, code = array.o.valid, array.o.acc
        else:
            m.submodules.requant = requant = Requantizer(
                activation=self._activation, acc_shape=signed(self._acc_bits), lanes=pe,
                blocks=self.groups)
            m.d.comb += [requant.en.eq(adv), requant.i.valid.eq(array.o.valid),
                         requant.i.sel.eq(array.o.g), requant.i.acc.eq(array.o.acc)]
            valid, code = requant.o.valid, requant.o.code
        m.d.comb += [skid.i.valid.eq(valid), skid.i.payload.eq(code)]
        wiring.connect(m, skid.o, wiring.flipped(self.o))
        return m


def mac_resources(*, in_bits, w_bits, acc_bits, in_shape, kernel, out_channels, pe, simd,
                  rom_rows, bias, lut_bits):
    """Return the memories and multipliers of a :class:`MacStage`.

    ``{"multipliers", "memory_bits": {"ring", "weights", "bias", "lut"}, "weight_memories":
    [{"depth", "width", "bits", "large"}] (one per PE lane), "ring_banks": {"count", "depth",
    "width"}}``. ``large`` marks weight memories of at least :data:`LARGE_MEMORY_BITS` bits.
    """
    channels, _, _ = in_shape
    kh, kw = kernel
    c_block, t, r = split = simd_split(channels, kh, kw, simd)
    bank_depth = ring_geometry(in_shape, kernel, split)["depth"]
    word = c_block * in_bits
    w_depth = rom_depth(rom_rows)
    w_width = simd * w_bits
    lanes = [{"depth": w_depth, "width": w_width, "bits": w_depth * w_width,
              "large": w_depth * w_width >= LARGE_MEMORY_BITS} for _ in range(pe)]
    return {
        "multipliers": pe * simd,
        "memory_bits": {
            "ring": r * t * bank_depth * word,
            "weights": sum(lane["bits"] for lane in lanes),
            "bias": rom_depth(out_channels // pe) * pe * acc_bits if bias else 0,
            "lut": lut_bits,
        },
        "weight_memories": lanes,
        "ring_banks": {"count": r * t, "depth": bank_depth, "width": word},
    }

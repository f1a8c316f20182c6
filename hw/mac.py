"""The MAC stage: sliding window (or buffered vector) feeding a PE × SIMD multiply array."""

import numpy as np
from amaranth.hdl import Cat, Const, Module, Mux, Signal, signed
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from .arith import counter_shape, format_range, format_shape, rom_depth

__all__ = ["MacStage", "tree_sum"]


def tree_sum(values):
    """Return the sum of ``values`` as a balanced adder tree."""
    values = list(values)
    while len(values) > 1:
        values = [values[i] + values[i + 1] if i + 1 < len(values) else values[i]
                  for i in range(0, len(values), 2)]
    return values[0]


def _check_int(label, what, value, minimum=1):
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise TypeError(f"{label}: {what} must be an integer >= {minimum}, not {value!r}")
    return value


class MacStage(wiring.Component):
    """Convolution, dense or RBF layer on a position stream.

    A window of ``kernel = (kh, kw)`` positions slides over the ``(channels, height, width)``
    input with stride 1 (a dense layer is the window that covers its whole input, so it computes
    one output position per image). The input is kept in a ring of ``2 kh`` rows in a
    :class:`~amaranth.lib.memory.Memory`, so the next image's first rows stream in while the last
    output row is computed. Each cycle ``pe`` output channels × ``simd`` input channels are
    multiplied (``op="mul"``: ``w·x``; ``op="sqdiff"``: ``(x - w)²``) and accumulated; after the
    ``kh·kw·channels/simd`` steps of a group of ``pe`` channels the accumulators get the bias,
    requantization and activation (or, for a ``final`` layer, leave raw).

    Cycles per image, fed and drained without stalls:
    ``max(height·width, out_h·out_w · (out_channels/pe) · (kh·kw·channels/simd))``.

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
        Folding: ``pe`` must divide ``out_channels`` and ``simd`` must divide ``channels``.

    Members
    -------
    i : ``In(stream.Signature(ArrayLayout(in code, channels)))``
    o : ``Out(stream.Signature(ArrayLayout(out code, out_channels)))``
    """
    def __init__(self, *, label, in_shape, in_format, weight_format, weight, bias, acc_bits,
                 activation, op="mul", pe=1, simd=1):
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
        _check_int(label, "pe", pe)
        _check_int(label, "simd", simd)
        _check_int(label, "acc_bits", acc_bits, 2)
        if out_channels % pe:
            raise ValueError(f"{label}: pe={pe} does not divide out_channels={out_channels}")
        if channels % simd:
            raise ValueError(f"{label}: simd={simd} does not divide in_channels={channels}")
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
        if activation is None:
            out_code = signed(acc_bits)
        else:
            out_code = format_shape(activation.out_format)
        in_layout = data.ArrayLayout(format_shape(in_format), channels)
        out_layout = data.ArrayLayout(out_code, out_channels)
        super().__init__({"i": In(stream.Signature(in_layout)),
                          "o": Out(stream.Signature(out_layout))})

    label = property(lambda self: self._label)
    in_shape = property(lambda self: self._in_shape)
    kernel = property(lambda self: self._kernel)
    out_channels = property(lambda self: self._out_channels)
    pe = property(lambda self: self._pe)
    simd = property(lambda self: self._simd)
    acc_bits = property(lambda self: self._acc_bits)

    @property
    def out_shape(self):
        """``(out_channels, out_h, out_w)`` of the output stream."""
        _, h, w = self._in_shape
        kh, kw = self._kernel
        return (self._out_channels, h - kh + 1, w - kw + 1)

    @property
    def fold(self):
        """MAC steps per group of ``pe`` output channels."""
        kh, kw = self._kernel
        return kh * kw * self._in_shape[0] // self._simd

    @property
    def groups(self):
        """Groups of ``pe`` output channels computed one after the other."""
        return self._out_channels // self._pe

    @property
    def cycles(self):
        """Cycles per image when fed and drained without stalls."""
        _, h, w = self._in_shape
        _, ho, wo = self.out_shape
        return max(h * w, ho * wo * self.groups * self.fold)

    def _weight_init(self, lane):
        kh, kw = self._kernel
        blocks = self._in_shape[0] // self._simd
        rows = []
        for g in range(self.groups):
            o = g * self._pe + lane
            for ky in range(kh):
                for kx in range(kw):
                    for cb in range(blocks):
                        rows.append([int(v) for v in
                                     self._weight[o, cb * self._simd:(cb + 1) * self._simd,
                                                  ky, kx]])
        return rows

    def elaborate(self, platform):
        m = Module()
        channels, height, width = self._in_shape
        kh, kw = self._kernel
        _, out_h, out_w = self.out_shape
        pe, simd, groups = self._pe, self._simd, self.groups
        blocks = channels // simd
        ring_rows = 2 * kh
        depth = ring_rows * width
        in_code = format_shape(self._in_format)
        w_code = format_shape(self._weight_format)

        # Line buffer ring: writer side.
        m.submodules.ring = ring = Memory(shape=data.ArrayLayout(in_code, channels),
                                          depth=depth, init=[])
        wr = ring.write_port()
        rd = ring.read_port()
        wr_addr = Signal(counter_shape(depth))
        wr_col = Signal(counter_shape(width))
        filled = Signal(counter_shape(ring_rows + 1))    # complete rows from the window's base row
        m.d.comb += [
            self.i.ready.eq(filled < ring_rows),
            wr.addr.eq(wr_addr),
            wr.data.eq(self.i.payload),
            wr.en.eq(self.i.valid & self.i.ready),
        ]
        row_written = Signal()
        with m.If(wr.en):
            m.d.sync += wr_addr.eq(Mux(wr_addr == depth - 1, 0, wr_addr + 1))
            m.d.sync += wr_col.eq(Mux(wr_col == width - 1, 0, wr_col + 1))
            m.d.comb += row_written.eq(wr_col == width - 1)

        # Issue stage (S0): window counters and addresses.
        adv = Signal()
        co = Signal(counter_shape(out_w))
        ro = Signal(counter_shape(out_h))
        g = Signal(counter_shape(groups))
        ky = Signal(counter_shape(kh))
        kx = Signal(counter_shape(kw))
        cb = Signal(counter_shape(blocks))
        ky_w = Signal(counter_shape(kh * width))          # ky · width
        wa = Signal(counter_shape(groups * self.fold))     # weight ROM address
        base = Signal(counter_shape(depth))                # ring address of the window's first row
        can = Signal()
        issue = Signal()
        m.d.comb += [can.eq(filled >= kh), issue.eq(can & adv)]
        step_last = Signal()
        group_last = Signal()
        row_last = Signal()
        image_last = Signal()
        m.d.comb += [
            step_last.eq((cb == blocks - 1) & (kx == kw - 1) & (ky == kh - 1)),
            group_last.eq(step_last & (g == groups - 1)),
            row_last.eq(group_last & (co == out_w - 1)),
            image_last.eq(row_last & (ro == out_h - 1)),
        ]
        raw_addr = Signal(counter_shape(2 * depth))
        m.d.comb += raw_addr.eq(base + ky_w + co + kx)
        m.d.comb += rd.addr.eq(Mux(raw_addr >= depth, raw_addr - depth, raw_addr))

        release = Signal(counter_shape(kh + 1))
        with m.If(issue & row_last):
            m.d.comb += release.eq(Mux(image_last, kh, 1))
        m.d.sync += filled.eq(filled + row_written - release)

        with m.If(issue):
            m.d.sync += wa.eq(Mux(group_last, 0, wa + 1))
            with m.If(cb != blocks - 1):
                m.d.sync += cb.eq(cb + 1)
            with m.Else():
                m.d.sync += cb.eq(0)
                with m.If(kx != kw - 1):
                    m.d.sync += kx.eq(kx + 1)
                with m.Else():
                    m.d.sync += kx.eq(0)
                    with m.If(ky != kh - 1):
                        m.d.sync += [ky.eq(ky + 1), ky_w.eq(ky_w + width)]
                    with m.Else():
                        m.d.sync += [ky.eq(0), ky_w.eq(0)]
                        with m.If(g != groups - 1):
                            m.d.sync += g.eq(g + 1)
                        with m.Else():
                            m.d.sync += g.eq(0)
                            with m.If(co != out_w - 1):
                                m.d.sync += co.eq(co + 1)
                            with m.Else():
                                m.d.sync += co.eq(0)
                                step = Mux(image_last, kh * width, width)
                                nxt = base + step
                                m.d.sync += base.eq(Mux(nxt >= depth, nxt - depth, nxt))
                                m.d.sync += ro.eq(Mux(ro == out_h - 1, 0, ro + 1))

        # Weight and bias ROMs, one per PE lane, read in S0, data in S1.
        w_ports = []
        for lane in range(pe):
            init = self._weight_init(lane)
            rom = Memory(shape=data.ArrayLayout(w_code, simd), depth=rom_depth(len(init)),
                         init=init)
            m.submodules[f"weights_{lane}"] = rom
            port = rom.read_port()
            m.d.comb += [port.addr.eq(wa), port.en.eq(adv)]
            w_ports.append(port)
        acc_shape = signed(self._acc_bits)
        if np.any(self._bias):
            bias_rom = Memory(shape=data.ArrayLayout(acc_shape, pe), depth=rom_depth(groups),
                              init=[[int(self._bias[gg * pe + p]) for p in range(pe)]
                                    for gg in range(groups)])
            m.submodules.bias = bias_rom
            bias_port = bias_rom.read_port()
            m.d.comb += [bias_port.addr.eq(g), bias_port.en.eq(adv)]
            bias_of = [bias_port.data[p] for p in range(pe)]
        else:
            bias_of = [Const(0, acc_shape) for _ in range(pe)]
        m.d.comb += rd.en.eq(adv)

        # S1: multiply and accumulate.
        s1_valid = Signal()
        s1_first = Signal()
        s1_last = Signal()
        s1_g = Signal(counter_shape(groups))
        s1_cb = Signal(counter_shape(blocks))
        with m.If(adv):
            m.d.sync += [
                s1_valid.eq(issue),
                s1_first.eq((cb == 0) & (kx == 0) & (ky == 0)),
                s1_last.eq(step_last),
                s1_g.eq(g),
                s1_cb.eq(cb),
            ]
        x = [Signal(in_code, name=f"x{s}") for s in range(simd)]
        if blocks == 1:
            m.d.comb += [x[s].eq(rd.data[s]) for s in range(simd)]
        else:
            m.d.comb += [x[s].eq(rd.data[(blocks - 1) * simd + s]) for s in range(simd)]
            for b in range(blocks - 1):
                with m.If(s1_cb == b):
                    m.d.comb += [x[s].eq(rd.data[b * simd + s]) for s in range(simd)]

        def widen(v, shape):
            return v.as_signed() if shape.signed else Cat(v, Const(0, 1)).as_signed()

        acc = [Signal(acc_shape, name=f"acc{p}") for p in range(pe)]
        for p in range(pe):
            terms = []
            for s in range(simd):
                w = w_ports[p].data[s]
                if self._op == "mul":
                    terms.append(w * x[s])
                else:
                    diff = widen(x[s], in_code) - widen(w, w_code)
                    terms.append(diff * diff)
            nxt = Mux(s1_first, bias_of[p], acc[p]) + tree_sum(terms)
            with m.If(adv & s1_valid):
                m.d.sync += acc[p].eq(nxt)

        # S2: requantize + activation of a finished group, collect the output position.
        s2_valid = Signal()
        s2_g = Signal(counter_shape(groups))
        with m.If(adv):
            m.d.sync += [s2_valid.eq(s1_valid & s1_last), s2_g.eq(s1_g)]
        if self._activation is None:
            codes = acc
        else:
            lut = self._activation.lut_memory()
            if lut is not None:
                m.submodules.lut = lut
            codes = [self._activation.apply(
                         m, acc[p],
                         [self._activation.shifts[gg * pe + p] for gg in range(groups)],
                         s2_g, lut)
                     for p in range(pe)]
        s2_final = Signal()
        m.d.comb += s2_final.eq(s2_valid & (s2_g == groups - 1))
        m.d.comb += adv.eq(~(s2_final & self.o.valid & ~self.o.ready))
        collect = [[Signal(self.o.payload.shape().elem_shape, name=f"col{gg}_{p}")
                    for p in range(pe)] for gg in range(groups - 1)]
        if groups > 1:
            with m.If(adv & s2_valid & ~s2_final):
                for gg in range(groups - 1):
                    with m.If(s2_g == gg):
                        m.d.sync += [collect[gg][p].eq(codes[p]) for p in range(pe)]
        with m.If(self.o.ready):
            m.d.sync += self.o.valid.eq(0)
        with m.If(adv & s2_final):
            m.d.sync += self.o.valid.eq(1)
            for gg in range(groups):
                for p in range(pe):
                    src = codes[p] if gg == groups - 1 else collect[gg][p]
                    m.d.sync += self.o.payload[gg * pe + p].eq(src)
        return m

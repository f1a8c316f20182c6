"""The global average pool stage: each channel's rounded mean over the whole map."""

from amaranth.hdl import Module, Mux, Signal, signed
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out
from amaranth.utils import ceil_log2

from .arith import (
    check_int,
    check_map_stage,
    counter_shape,
    format_shape,
    requantize,
    rom_depth,
    select,
)
from .skid import SkidBuffer

__all__ = ["GapStage", "gap_latency", "gap_resources", "gap_sum_bits", "REGISTER_BLOCKS",
           "SUM_REGISTERS", "PRODUCT_REGISTERS"]

#: Channel blocks (``channels / lanes``) up to which the sums are kept in registers; more are
#: kept in a :class:`~amaranth.lib.memory.Memory` (one word per block).
REGISTER_BLOCKS = 4


def gap_sum_bits(in_bits, area):
    """Return the width of the signed sum of ``area`` codes of ``in_bits`` bits (no overflow,
    signed or unsigned codes)."""
    return in_bits + ceil_log2(area) + 1


#: Registers of a :class:`GapStage` from a block's last beat to its result: the finished sums;
#: when ``mul != 1`` also the products.
SUM_REGISTERS = 1
PRODUCT_REGISTERS = 1


def gap_latency(mul):
    """Return the cycles from a channel block's last beat being accepted to its
    :class:`GapStage` output beat being valid: :data:`SUM_REGISTERS`, :data:`PRODUCT_REGISTERS`
    (only when ``mul != 1``) and the output :class:`~hw.skid.SkidBuffer`."""
    return SUM_REGISTERS + (PRODUCT_REGISTERS if mul != 1 else 0) + SkidBuffer.latency


def gap_resources(*, channels, lanes, sum_bits, mul):
    """Return ``{"multipliers", "memory_bits": {"partial"}}`` of a :class:`GapStage`: one
    multiplier per lane unless ``mul == 1``; the sums' memory when they are not registers."""
    blocks = channels // lanes
    memory = 0 if blocks <= REGISTER_BLOCKS else rom_depth(blocks) * lanes * sum_bits
    return {"multipliers": 0 if mul == 1 else lanes, "memory_bits": {"partial": memory}}


class GapStage(wiring.Component):
    """Global average pooling of a position stream, ``lanes`` channels per beat.

    The ``(channels, height, width)`` input arrives one channel block of ``lanes`` channels per
    beat, the ``channels / lanes`` blocks of a position in order, positions row-major. Each
    channel's codes are summed over the ``height · width`` positions (``S``); the beats of the
    last position complete the sums, and each block leaves as one output beat of ``lanes``
    codes ``saturate((S · mul + 2^(shift-1)) >> shift)`` (round half up by an arithmetic shift,
    saturated to ``in_format``: golden's ``global_avgpool``), :attr:`latency` cycles after its
    last beat. One input beat per cycle, the next image's beats accepted while the last ones
    leave: :attr:`cycles` = ``height · width · channels / lanes`` per image. The output is a
    register with a skid buffer: the payload holds while not ready, and the input's ready is a
    register.

    Parameters
    ----------
    label : str
        Names the layer in messages.
    in_shape : (int, int, int)
        ``(channels, height, width)``, ``height · width >= 2``.
    in_format : dict
        Format of the input and output codes.
    mul, shift : int
        The scale ``mul / 2^shift`` of the sum (``core.kinds.gap_scale(height · width)``);
        ``mul >= 1``, ``shift >= 1``.
    lanes : int or None
        Channels per beat (a divisor of ``channels``); ``None``: all of them.

    Members
    -------
    i : ``In(stream.Signature(ArrayLayout(code, lanes)))``
    o : ``Out(stream.Signature(ArrayLayout(code, lanes)))``
        ``channels / lanes`` beats per image.
    """
    def __init__(self, *, label, in_shape, in_format, mul, shift, lanes=None):
        (channels, height, width), lanes = check_map_stage(label, in_shape, lanes)
        if height * width < 2:
            raise ValueError(f"{label}: global average pooling of a {height}x{width} map does "
                             f"nothing; remove the layer")
        check_int(label, "mul", mul)
        check_int(label, "shift", shift)
        self._label = label
        self._in_shape = (channels, height, width)
        self._in_format = dict(in_format)
        self._mul, self._shift, self._lanes = mul, shift, lanes
        layout = data.ArrayLayout(format_shape(in_format), lanes)
        super().__init__({"i": In(stream.Signature(layout)), "o": Out(stream.Signature(layout))})

    label = property(lambda self: self._label)
    in_shape = property(lambda self: self._in_shape)
    lanes = property(lambda self: self._lanes)
    mul = property(lambda self: self._mul)
    shift = property(lambda self: self._shift)

    @property
    def out_shape(self):
        return (self._in_shape[0], 1, 1)

    @property
    def cycles(self):
        """Cycles per image when fed and drained without stalls."""
        channels, height, width = self._in_shape
        return height * width * (channels // self._lanes)

    @property
    def latency(self):
        """Cycles from a block's last input beat being accepted to its output being valid."""
        return gap_latency(self._mul)

    def _sum_shape(self):
        channels, height, width = self._in_shape
        return signed(gap_sum_bits(format_shape(self._in_format).width, height * width))

    def resources(self):
        """Return ``{"multipliers", "memory_bits": {"partial"}}`` (see :func:`gap_resources`)."""
        return gap_resources(channels=self._in_shape[0], lanes=self._lanes,
                             sum_bits=self._sum_shape().width, mul=self._mul)

    def elaborate(self, platform):
        m = Module()
        channels, height, width = self._in_shape
        lanes = self._lanes
        blocks = channels // lanes
        area = height * width
        sum_shape = self._sum_shape()
        sums_layout = data.ArrayLayout(sum_shape, lanes)

        # The output register with a skid buffer: every register advances together while it
        # has room, and the input's ready is its (registered) ready.
        m.submodules.skid = skid = SkidBuffer(shape=self.o.payload.shape())
        wiring.connect(m, skid.o, wiring.flipped(self.o))
        adv = skid.i.ready
        accept = Signal()
        m.d.comb += [self.i.ready.eq(adv), accept.eq(self.i.valid & adv)]
        blk = Signal(counter_shape(blocks))
        pos = Signal(counter_shape(area))
        first = Signal()
        last = Signal()
        blk_end = Signal()
        next_blk = Signal(counter_shape(blocks))
        m.d.comb += [first.eq(pos == 0), last.eq(pos == area - 1), blk_end.eq(blk == blocks - 1),
                     next_blk.eq(Mux(blk_end, 0, blk + 1))]
        with m.If(accept):
            m.d.sync += blk.eq(next_blk)
            with m.If(blk_end):
                m.d.sync += pos.eq(Mux(last, 0, pos + 1))

        # The running sums of the image, one word per channel block: registers when there are
        # few blocks, else a memory read one beat ahead (transparent for the word just
        # written). The last position's beats do not write: their sums leave.
        prev = Signal(sums_layout)
        new = Signal(sums_layout)
        write = Signal()
        m.d.comb += write.eq(accept & ~last)
        if blocks <= REGISTER_BLOCKS:
            regs = [Signal(sums_layout, name=f"sum{b}") for b in range(blocks)]
            m.d.comb += prev.eq(regs[0] if blocks == 1 else
                                select(m, blk, regs, sums_layout, "sum_of_block"))
            for b, reg in enumerate(regs):
                with m.If(write & (blk == b)):
                    m.d.sync += reg.eq(new)
        else:
            m.submodules.sums = sums = Memory(shape=sums_layout, depth=rom_depth(blocks),
                                              init=[])
            wr = sums.write_port()
            rd = sums.read_port(transparent_for=(wr,))
            m.d.comb += [rd.addr.eq(Mux(accept, next_blk, blk)), rd.en.eq(1),
                         wr.addr.eq(blk), wr.data.eq(new), wr.en.eq(write),
                         prev.eq(rd.data)]
        for c in range(lanes):
            m.d.comb += new[c].eq(Mux(first, self.i.payload[c], prev[c] + self.i.payload[c]))

        # A finished block: its sums registered, (times mul, registered,) then rounded,
        # shifted and saturated into the skid buffer.
        done = Signal()
        done_sums = Signal(sums_layout)
        with m.If(adv):
            m.d.sync += done.eq(accept & last)
            with m.If(accept & last):
                m.d.sync += done_sums.eq(new)
        res_valid, values = done, [done_sums[c] for c in range(lanes)]
        if self._mul != 1:
            scaled = Signal()
            products = [Signal(signed(sum_shape.width + self._mul.bit_length() + 1),
                               name=f"product{c}") for c in range(lanes)]
            with m.If(adv):
                m.d.sync += scaled.eq(done)
                m.d.sync += [p.eq(v * self._mul) for p, v in zip(products, values, strict=True)]
            res_valid, values = scaled, products
        outs = Signal.like(self.o.payload, name="outs")
        m.d.comb += [outs[c].eq(requantize(v, self._shift, self._in_format))
                     for c, v in enumerate(values)]

        m.d.comb += [skid.i.valid.eq(res_valid), skid.i.payload.eq(outs)]
        return m

"""Board gateware: the accelerator between byte streams, and the UART top of a bitstream.

:class:`ByteLink` speaks the byte protocol of :mod:`fpga.link` on two byte streams; it is the top
of synthesis runs (:mod:`fpga.synth`) and the core of :class:`UartAccelerator`, which
:class:`BoardTop` puts on a board's ``uart`` pins.
"""

from amaranth.build import ResourceError
from amaranth.hdl import Cat, Elaboratable, Module, Mux, Shape, Signal
from amaranth.lib import data, fifo, io, stream, wiring
from amaranth.lib.wiring import In, Out

from hw.top import LeNetAccelerator

from .link import reply_bytes, reply_layout
from .uart import UartRx, UartTx

__all__ = ["ByteToBeats", "StreamSplit", "ReplySerializer", "ByteLink", "UartAccelerator",
           "BoardTop"]


def _check_positive(what, value):
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise TypeError(f"{what} must be a positive integer, not {value!r}")
    return value


def _check_shape(what, shape):
    try:
        return Shape.cast(shape).width
    except TypeError:
        raise TypeError(f"{what} must be a shape-castable object, not {shape!r}") from None


class ByteToBeats(wiring.Component):
    """Gather ``ceil(width / 8)`` bytes, the first one lowest, into one beat of ``shape``.

    The bits above ``shape``'s width in the last byte of a beat are dropped.

    Parameters
    ----------
    shape : shape-castable
        The output payload (an ``unsigned`` or a :mod:`amaranth.lib.data` layout).

    Members
    -------
    i : ``In(stream.Signature(8))``
    o : ``Out(stream.Signature(shape))``
    """
    def __init__(self, *, shape):
        width = _check_shape("shape", shape)
        if width < 1:
            raise ValueError(f"shape must be at least 1 bit wide, not {width}")
        self._n = (width + 7) // 8
        super().__init__({"i": In(stream.Signature(8)), "o": Out(stream.Signature(shape))})

    @property
    def bytes_per_beat(self):
        """Bytes gathered into one output beat."""
        return self._n

    def elaborate(self, platform):
        m = Module()
        if self._n == 1:
            m.d.comb += [self.o.payload.eq(self.i.payload), self.o.valid.eq(self.i.valid),
                         self.i.ready.eq(self.o.ready)]
            return m
        shreg = Signal(8 * self._n)
        count = Signal(range(self._n))
        m.d.comb += [self.o.payload.eq(shreg), self.i.ready.eq(~self.o.valid)]
        with m.If(self.o.ready):
            m.d.sync += self.o.valid.eq(0)
        with m.If(self.i.valid & self.i.ready):
            m.d.sync += shreg.eq(Cat(shreg[8:], self.i.payload))
            with m.If(count == self._n - 1):
                m.d.sync += [count.eq(0), self.o.valid.eq(1)]
            with m.Else():
                m.d.sync += count.eq(count + 1)
        return m


class StreamSplit(wiring.Component):
    """Send the first ``count`` beats after reset to ``head``, all later ones to ``tail``.

    Parameters
    ----------
    shape : shape-castable
        The payload of all three streams.
    count : int
        Beats for ``head``.

    Members
    -------
    i : ``In(stream.Signature(shape))``
    head : ``Out(stream.Signature(shape))``
    tail : ``Out(stream.Signature(shape))``
    """
    def __init__(self, *, shape, count):
        _check_shape("shape", shape)
        self._count = _check_positive("count", count)
        super().__init__({"i": In(stream.Signature(shape)),
                          "head": Out(stream.Signature(shape)),
                          "tail": Out(stream.Signature(shape))})

    count = property(lambda self: self._count)

    def elaborate(self, platform):
        m = Module()
        taken = Signal(range(self._count + 1))
        in_head = Signal()
        m.d.comb += [
            in_head.eq(taken != self._count),
            self.head.payload.eq(self.i.payload),
            self.tail.payload.eq(self.i.payload),
            self.head.valid.eq(self.i.valid & in_head),
            self.tail.valid.eq(self.i.valid & ~in_head),
            self.i.ready.eq(Mux(in_head, self.head.ready, self.tail.ready)),
        ]
        with m.If(self.head.valid & self.head.ready):
            m.d.sync += taken.eq(taken + 1)
        return m


class ReplySerializer(wiring.Component):
    """Send each output beat of the accelerator as the bytes of one reply (:mod:`fpga.link`).

    The input beat is held (valid, payload stable) until its last byte is sent, so the bytes are
    read from it through a byte multiplexer: no copy of the reply in registers.

    Parameters
    ----------
    layout : :func:`hw.output.output_layout`
        The accelerator's output payload layout (``cls``, ``scores``, ``last``).

    Members
    -------
    i : ``In(stream.Signature(layout))``
    o : ``Out(stream.Signature(8))``
        The bytes of :func:`fpga.link.reply_layout` (``layout``), lowest first.
    """
    def __init__(self, *, layout):
        if not isinstance(layout, data.StructLayout) or \
                not {"cls", "scores"} <= set(dict(layout.members)):
            raise TypeError(f"layout must be a StructLayout with 'cls' and 'scores' fields "
                            f"(hw.output.output_layout), not {layout!r}")
        self._reply = reply_layout(layout)
        super().__init__({"i": In(stream.Signature(layout)), "o": Out(stream.Signature(8))})

    @property
    def reply(self):
        """The reply layout (:func:`fpga.link.reply_layout`)."""
        return self._reply

    @property
    def reply_bytes(self):
        """Bytes per reply."""
        return reply_bytes(self._reply)

    def elaborate(self, platform):
        m = Module()
        total = self.reply_bytes
        reply = Signal(self._reply)
        m.d.comb += reply.cls.eq(self.i.payload.cls)
        for j in range(self._reply["scores"].shape.length):
            m.d.comb += reply.scores[j].eq(self.i.payload.scores[j])   # sign-extends
        index = Signal(range(total))
        last = Signal()
        m.d.comb += [
            last.eq(index == total - 1),
            self.o.valid.eq(self.i.valid),
            self.o.payload.eq(reply.as_value().word_select(index, 8)),
            self.i.ready.eq(self.o.ready & last),
        ]
        with m.If(self.o.valid & self.o.ready):
            m.d.sync += index.eq(Mux(last, 0, index + 1))
        return m


class ByteLink(wiring.Component):
    """The accelerator between two byte streams speaking the byte protocol (:mod:`fpga.link`).

    Its few ports (8-bit data, valid, ready each way) make it the top of synthesis runs and the
    core of the UART board top. With ``load`` (layers whose weights are loaded, see
    :class:`~hw.top.LeNetAccelerator`), the first :attr:`weight_bytes` bytes after reset are the
    weights (:meth:`weight_stream`), then pixels follow.

    Parameters
    ----------
    qmodel_meta, arrays, folding, load
        As :class:`~hw.top.LeNetAccelerator`.

    Members
    -------
    i : ``In(stream.Signature(8))``
        (Weight bytes, then) pixel bytes.
    o : ``Out(stream.Signature(8))``
        Reply bytes.
    """
    def __init__(self, qmodel_meta, arrays, folding=None, *, load=()):
        self._core = LeNetAccelerator(qmodel_meta, arrays, folding, load=load)
        self._gather = ByteToBeats(shape=self._core.i.payload.shape())
        self._codes = self._core.load_codes()
        if self._codes:
            self._w_gather = ByteToBeats(shape=self._core.w.payload.shape())
            self._split = StreamSplit(shape=8, count=self.weight_bytes)
        self._reply = ReplySerializer(layout=self._core.o.payload.shape())
        super().__init__({"i": In(stream.Signature(8)), "o": Out(stream.Signature(8))})

    @property
    def core(self):
        """The :class:`~hw.top.LeNetAccelerator` inside."""
        return self._core

    @property
    def reply(self):
        """The reply layout (:func:`fpga.link.reply_layout`)."""
        return self._reply.reply

    @property
    def reply_bytes(self):
        """Bytes per reply."""
        return self._reply.reply_bytes

    @property
    def weight_bytes(self):
        """Bytes of weights expected after reset (0 without ``load``)."""
        return len(self._codes) * self._w_gather.bytes_per_beat if self._codes else 0

    def weight_stream(self):
        """Return the weight bytes to send after reset (each code little-endian)."""
        if not self._codes:
            return b""
        n = self._w_gather.bytes_per_beat
        return b"".join(c.to_bytes(n, "little") for c in self._codes)

    def elaborate(self, platform):
        m = Module()
        m.submodules.gather = gather = self._gather
        m.submodules.core = core = self._core
        m.submodules.reply = reply = self._reply
        if self._codes:
            m.submodules.split = split = self._split
            m.submodules.w_gather = w_gather = self._w_gather
            wiring.connect(m, wiring.flipped(self.i), split.i)
            wiring.connect(m, split.head, w_gather.i)
            wiring.connect(m, w_gather.o, core.w)
            wiring.connect(m, split.tail, gather.i)
        else:
            wiring.connect(m, wiring.flipped(self.i), gather.i)
        wiring.connect(m, gather.o, core.i)
        wiring.connect(m, core.o, reply.i)
        wiring.connect(m, reply.o, wiring.flipped(self.o))
        return m


class UartAccelerator(wiring.Component):
    """UART receiver → image FIFO → :class:`ByteLink` → UART transmitter.

    The FIFO holds a whole image, so a host may send the next image before the previous reply
    has arrived.

    Parameters
    ----------
    qmodel_meta, arrays, folding, load
        As :class:`~hw.top.LeNetAccelerator`.
    divisor : int
        Clock cycles per UART bit (clock frequency / baud rate), at least 2.

    Members
    -------
    rx : ``In(1, init=1)``
    tx : ``Out(1, init=1)``
    overrun : ``Out(1)``
        Sticky receive overrun.
    """
    def __init__(self, qmodel_meta, arrays, folding=None, *, divisor, load=()):
        self._rx = UartRx(divisor=divisor)
        self._tx = UartTx(divisor=divisor)
        self._link = ByteLink(qmodel_meta, arrays, folding, load=load)
        inp = qmodel_meta["input"]
        image_bytes = inp["height"] * inp["width"] * inp.get("channels", 1)
        self._fifo_depth = 1 << max(1, (image_bytes - 1).bit_length())
        super().__init__({"rx": In(1, init=1), "tx": Out(1, init=1), "overrun": Out(1)})

    link = property(lambda self: self._link)
    fifo_depth = property(lambda self: self._fifo_depth)

    def elaborate(self, platform):
        m = Module()
        m.submodules.rx = rx = self._rx
        m.submodules.fifo = buf = fifo.SyncFIFOBuffered(width=8, depth=self._fifo_depth)
        m.submodules.link = link = self._link
        m.submodules.tx = tx = self._tx
        m.d.comb += [rx.rx.eq(self.rx), self.tx.eq(tx.tx), self.overrun.eq(rx.overrun)]
        wiring.connect(m, rx.o, buf.w_stream)
        wiring.connect(m, buf.r_stream, link.i)
        wiring.connect(m, link.o, tx.i)
        return m


class BoardTop(Elaboratable):
    """Top of a board bitstream: :class:`UartAccelerator` on the board's ``uart`` resource.

    The UART divisor is ``round(platform.default_clk_frequency / baud)``. The first LED (when
    the board has one) lights on a receive overrun.
    """
    def __init__(self, qmodel_meta, arrays, folding=None, *, baud=115200, load=()):
        self._meta, self._arrays, self._folding = qmodel_meta, arrays, folding
        self._baud = _check_positive("baud", baud)
        self._load = tuple(load)

    def elaborate(self, platform):
        m = Module()
        divisor = round(platform.default_clk_frequency / self._baud)
        m.submodules.accel = accel = UartAccelerator(self._meta, self._arrays, self._folding,
                                                     divisor=divisor, load=self._load)
        uart = platform.request("uart", 0, dir="-")
        m.submodules.rx_buffer = rx = io.Buffer("i", uart.rx)
        m.submodules.tx_buffer = tx = io.Buffer("o", uart.tx)
        m.d.comb += [accel.rx.eq(rx.i), tx.o.eq(accel.tx)]
        try:
            led = platform.request("led", 0, dir="-")
        except ResourceError:                                # a board without LEDs
            led = None
        if led is not None:
            m.submodules.led_buffer = led_buffer = io.Buffer("o", led)
            m.d.comb += led_buffer.o.eq(accel.overrun)
        return m

"""Zero padding of a position stream."""

from amaranth.hdl import Module, Signal
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from .arith import counter_shape, format_shape

__all__ = ["Padder"]


def _positive(name, value, *, zero=False):
    if not isinstance(value, int) or isinstance(value, bool) or value < (0 if zero else 1):
        kind = "non-negative" if zero else "positive"
        raise TypeError(f"{name} must be a {kind} integer, not {value!r}")
    return value


class Padder(wiring.Component):
    """Insert ``pad`` rows and columns of zero codes around every image of a position stream.

    Parameters
    ----------
    channels, height, width : int
        Shape of the unpadded image.
    pad : int
        Zero rows/columns added on every side.
    fmt : dict
        Number format of the codes.

    Members
    -------
    i : ``In(stream.Signature(ArrayLayout(code, channels)))``
        ``height × width`` positions per image, row-major.
    o : ``Out(stream.Signature(ArrayLayout(code, channels)))``
        ``(height + 2 pad) × (width + 2 pad)`` positions per image, one per cycle when fed.
    """
    #: Cycles from a beat accepted on ``i`` (or a zero position's turn) to it valid on an empty
    #: ``o``: the output register.
    latency = 1

    def __init__(self, *, channels, height, width, pad, fmt):
        self._channels = _positive("channels", channels)
        self._height = _positive("height", height)
        self._width = _positive("width", width)
        self._pad = _positive("pad", pad, zero=True)
        self._fmt = dict(fmt)
        layout = data.ArrayLayout(format_shape(fmt), channels)
        super().__init__({"i": In(stream.Signature(layout)), "o": Out(stream.Signature(layout))})

    channels = property(lambda self: self._channels)
    height = property(lambda self: self._height)
    width = property(lambda self: self._width)
    pad = property(lambda self: self._pad)

    @property
    def out_shape(self):
        """``(channels, height, width)`` of the padded image."""
        return (self._channels, self._height + 2 * self._pad, self._width + 2 * self._pad)

    @property
    def cycles(self):
        """Cycles per image when fed and drained without stalls."""
        _, h, w = self.out_shape
        return h * w

    def elaborate(self, platform):
        m = Module()
        _, hp, wp = self.out_shape
        p = self._pad
        row = Signal(counter_shape(hp))
        col = Signal(counter_shape(wp))
        is_pad = Signal()
        m.d.comb += is_pad.eq((row < p) | (row >= self._height + p) |
                              (col < p) | (col >= self._width + p))
        take = Signal()
        m.d.comb += take.eq(~self.o.valid | self.o.ready)
        m.d.comb += self.i.ready.eq(take & ~is_pad)
        step = Signal()
        with m.If(take):
            m.d.sync += self.o.valid.eq(is_pad | self.i.valid)
            with m.If(is_pad):
                m.d.sync += self.o.payload.eq(0)
            with m.Else():
                m.d.sync += self.o.payload.eq(self.i.payload)
            m.d.comb += step.eq(is_pad | self.i.valid)
        with m.If(step):
            with m.If(col == wp - 1):
                m.d.sync += col.eq(0)
                with m.If(row == hp - 1):
                    m.d.sync += row.eq(0)
                with m.Else():
                    m.d.sync += row.eq(row + 1)
            with m.Else():
                m.d.sync += col.eq(col + 1)
        return m

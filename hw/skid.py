"""The output register of a pipeline, with a skid buffer: its input's ready is a register."""

from amaranth.hdl import Module, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

__all__ = ["SkidBuffer"]


class SkidBuffer(wiring.Component):
    """Register a stream's beats, with room for one more, so no ready crosses it combinationally.

    ``o`` is a register loaded from ``i`` (or from the skid register) whenever it is empty or
    taken. ``i.ready`` is a register, high while the skid register is empty: a beat offered while
    the output is full and not taken lands in the skid register, and ``i.ready`` drops from the
    next cycle until the output is taken. A pipeline in front of it advances (all its registers
    together) when ``i.ready`` is high. Beats keep their order; one beat per cycle when ``o`` is
    always ready.

    Parameters
    ----------
    shape : shape-castable
        The payload, e.g. ``ArrayLayout(signed(8), pe)``.

    Members
    -------
    i : ``In(stream.Signature(shape))``
    o : ``Out(stream.Signature(shape))``
        A beat accepted on ``i`` is valid here the next cycle (:attr:`latency`) at the earliest.
    """
    #: Cycles from a beat accepted on ``i`` to the same beat valid on an empty ``o``: the
    #: output register.
    latency = 1

    def __init__(self, *, shape):
        super().__init__({"i": In(stream.Signature(shape)), "o": Out(stream.Signature(shape))})

    def elaborate(self, platform):
        m = Module()
        # The skid register (not named "skid": the parents name this instance so, and Verilator
        # warns of a signal hiding the instance of the same name).
        spare_valid = Signal()
        spare = Signal.like(self.i.payload, name="spare")
        m.d.comb += self.i.ready.eq(~spare_valid)
        with m.If(~self.o.valid | self.o.ready):
            with m.If(spare_valid):
                m.d.sync += [self.o.valid.eq(1), self.o.payload.eq(spare), spare_valid.eq(0)]
            with m.Elif(self.i.valid):
                m.d.sync += [self.o.valid.eq(1), self.o.payload.eq(self.i.payload)]
            with m.Else():
                m.d.sync += self.o.valid.eq(0)
        with m.Elif(self.i.valid & self.i.ready):
            m.d.sync += [spare_valid.eq(1), spare.eq(self.i.payload)]
        return m

"""Regroup a channel stream: ``n_in`` channels per input beat into ``n_out`` per output beat."""

import math

from amaranth.hdl import Module, Signal
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from .arith import counter_shape

__all__ = ["Regroup", "regroup_steps"]


def regroup_steps(n_in, n_out):
    """Return the ``(n_in, n_out)`` pairs of the :class:`Regroup` stages turning beats of
    ``n_in`` channels into beats of ``n_out`` (none when equal; a gather to the least common
    multiple then a split when neither divides the other)."""
    if n_in == n_out:
        return []
    if n_out % n_in == 0 or n_in % n_out == 0:
        return [(n_in, n_out)]
    lcm = math.lcm(n_in, n_out)
    return [(n_in, lcm), (lcm, n_out)]


class Regroup(wiring.Component):
    """Gather or split beats of channels; positions and channel order are unchanged.

    The stream carries the channels of each position in order, ``n_in`` per input beat and
    ``n_out`` per output beat; one of ``n_in``, ``n_out`` divides the other.

    - **Gather** (``n_out = k·n_in``): the first ``k - 1`` beats of a group are kept, the
      ``k``-th loads the output register with all of them. One input beat per cycle; an output
      beat is valid :attr:`latency` cycles after its last input beat is accepted.
    - **Split** (``n_in = k·n_out``): an input beat is held and sent as ``k`` output beats, the
      first valid :attr:`latency` cycles after it is accepted, one per cycle; the next input beat is
      accepted in the cycle the last of them is taken.

    Parameters
    ----------
    shape : shape-castable
        The shape of one channel's code.
    n_in, n_out : int

    Members
    -------
    i : ``In(stream.Signature(ArrayLayout(shape, n_in)))``
    o : ``Out(stream.Signature(ArrayLayout(shape, n_out)))``
    """
    #: Cycles from the (last) input beat of an output beat being accepted to the (first) output
    #: beat valid on an empty ``o``: the output register (gather) or the held beat (split).
    latency = 1

    def __init__(self, *, shape, n_in, n_out):
        for name, value in (("n_in", n_in), ("n_out", n_out)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise TypeError(f"{name} must be a positive integer, not {value!r}")
        if n_in % n_out and n_out % n_in:
            raise ValueError(f"n_in={n_in} and n_out={n_out}: one must divide the other")
        self._n_in, self._n_out = n_in, n_out
        self._shape = shape
        super().__init__({
            "i": In(stream.Signature(data.ArrayLayout(shape, n_in))),
            "o": Out(stream.Signature(data.ArrayLayout(shape, n_out))),
        })

    n_in = property(lambda self: self._n_in)
    n_out = property(lambda self: self._n_out)

    def elaborate(self, platform):
        m = Module()
        n_in, n_out = self._n_in, self._n_out
        take_out = self.o.valid & self.o.ready
        accept = self.i.valid & self.i.ready
        if n_out >= n_in:
            k = n_out // n_in
            chunks = data.ArrayLayout(data.ArrayLayout(self._shape, n_in), k)
            whole = data.View(chunks, self.o.payload.as_value())
            idx = Signal(counter_shape(k))
            kept = Signal(data.ArrayLayout(chunks.elem_shape, k - 1)) if k > 1 else None
            last = Signal()
            m.d.comb += [last.eq(idx == k - 1),
                         self.i.ready.eq(~last | ~self.o.valid | self.o.ready)]
            with m.If(take_out):
                m.d.sync += self.o.valid.eq(0)
            with m.If(accept):
                with m.If(last):
                    m.d.sync += [whole[j].eq(kept[j]) for j in range(k - 1)]
                    m.d.sync += [whole[k - 1].eq(self.i.payload), self.o.valid.eq(1),
                                 idx.eq(0)]
                if k > 1:
                    with m.Else():
                        m.d.sync += [kept[idx].eq(self.i.payload), idx.eq(idx + 1)]
        else:
            k = n_in // n_out
            idx = Signal(counter_shape(k))
            held = Signal(data.ArrayLayout(data.ArrayLayout(self._shape, n_out), k))
            last = Signal()
            m.d.comb += [last.eq(idx == k - 1),
                         self.o.payload.eq(held[idx]),
                         self.i.ready.eq(~self.o.valid | (self.o.ready & last))]
            with m.If(take_out):
                m.d.sync += idx.eq(idx + 1)
                with m.If(last):
                    m.d.sync += [self.o.valid.eq(0), idx.eq(0)]
            with m.If(accept):
                m.d.sync += [held.eq(self.i.payload), self.o.valid.eq(1), idx.eq(0)]
        return m

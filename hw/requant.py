"""Requantize + activation of a lane array: the integer rules of ``golden/`` on accumulators."""

from amaranth.hdl import Module, Shape, Signal
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from .arith import Activation, counter_shape, format_shape

__all__ = ["Requantizer", "requant_latency"]


def requant_latency(lut):
    """Return the registers of a :class:`Requantizer`: with a table, the registered table index
    and the synchronous table read; without, none (the requantize is combinational)."""
    return 2 if lut else 0


class Requantizer(wiring.Component):
    """Requantize ``lanes`` accumulators (bias already added) and apply the activation.

    Lane ``l`` serves channel ``sel · lanes + l`` (``sel`` picks the channel block in flight),
    whose shift is ``activation.shifts[sel · lanes + l]``. Without a table the codes are
    combinational; with a table the requantized code is registered and indexes a synchronous
    ROM (block RAM), so the codes are :attr:`latency` cycles later. All registers advance when
    ``en`` is high (one pipeline, frozen as a whole).

    Parameters
    ----------
    activation : :class:`~hw.arith.Activation`
    acc_shape : shape-castable
        Signed shape of the accumulators.
    lanes : int
        Accumulators per beat.
    blocks : int
        Channel blocks the lanes serve in turn (``lanes · blocks`` = the activation's channels).

    Members
    -------
    en : ``In(1)``
    i : ``In(StructLayout({"valid": 1, "sel": range(blocks), "acc": ArrayLayout(acc, lanes)}))``
    o : ``Out(StructLayout({"valid": 1, "code": ArrayLayout(out code, lanes)}))``
        ``i`` requantized, :attr:`latency` advancing cycles later.
    """
    def __init__(self, *, activation, acc_shape, lanes, blocks):
        if not isinstance(activation, Activation):
            raise TypeError(f"activation must be an Activation, not {activation!r}")
        for name, value in (("lanes", lanes), ("blocks", blocks)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise TypeError(f"{name} must be a positive integer, not {value!r}")
        if len(activation.shifts) != lanes * blocks:
            raise ValueError(f"activation has {len(activation.shifts)} channels, not "
                             f"lanes·blocks = {lanes}·{blocks} = {lanes * blocks}")
        acc_shape = Shape.cast(acc_shape)
        if not acc_shape.signed:
            raise ValueError(f"acc_shape must be signed, not {acc_shape!r}")
        self._activation = activation
        self._lanes, self._blocks = lanes, blocks
        super().__init__({
            "en": In(1),
            "i": In(data.StructLayout({"valid": 1, "sel": counter_shape(blocks),
                                       "acc": data.ArrayLayout(acc_shape, lanes)})),
            "o": Out(data.StructLayout({
                "valid": 1,
                "code": data.ArrayLayout(format_shape(activation.out_format), lanes)})),
        })

    @property
    def latency(self):
        """Advancing cycles from an accumulator on ``i`` to its code on ``o``."""
        return requant_latency(self._activation.table is not None)

    def elaborate(self, platform):
        m = Module()
        act = self._activation
        lanes, blocks = self._lanes, self._blocks
        pre = [act.requantize(m, self.i.acc[c], [act.shifts[b * lanes + c]
                                                 for b in range(blocks)], self.i.sel)
               for c in range(lanes)]
        if act.table is None:
            m.d.comb += [self.o.valid.eq(self.i.valid)]
            m.d.comb += [self.o.code[c].eq(pre[c]) for c in range(lanes)]
            return m
        pre_regs = [Signal.like(v, name=f"pre{c}") for c, v in enumerate(pre)]
        valid = [Signal(name=f"valid{k}") for k in range(self.latency)]
        with m.If(self.en):
            m.d.sync += [reg.eq(v) for reg, v in zip(pre_regs, pre, strict=True)]
            m.d.sync += [a.eq(b) for a, b in zip(valid, [self.i.valid] + valid[:-1],
                                                 strict=True)]
        m.submodules.lut = lut = act.lut_memory()
        m.d.comb += [self.o.code[c].eq(act.lookup(m, reg, lut, self.en))
                     for c, reg in enumerate(pre_regs)]
        m.d.comb += self.o.valid.eq(valid[-1])
        return m

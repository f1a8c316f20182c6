"""The output stage: class decision (argmax or argmin, lowest index on ties) and scores."""

from amaranth.hdl import Module, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out
from amaranth.utils import ceil_log2

from .arith import select

__all__ = ["ClassifyStage", "output_layout"]


def output_layout(num_classes, score_bits):
    """Return the payload layout of the accelerator's output stream.

    ``{"cls": unsigned, "scores": ArrayLayout(signed(score_bits), num_classes), "last": 1}``;
    ``last`` marks the end of an image (always 1: one beat per image).
    """
    return data.StructLayout({
        "cls": unsigned(max(1, ceil_log2(num_classes))),
        "scores": data.ArrayLayout(signed(score_bits), num_classes),
        "last": unsigned(1),
    })


class ClassifyStage(wiring.Component):
    """Pick the class of each score vector and emit one beat per image.

    The scores are registered into the output payload, then compared one per cycle against
    the best so far (one comparator: no long compare chain), so an image takes
    ``num_classes`` cycles from its input beat to its output beat and the stage accepts one
    image per ``num_classes + 1`` cycles. The input's ready is a register.

    Parameters
    ----------
    num_classes : int
    in_bits : int
        Width of the signed input scores (the final layer's accumulators).
    score_bits : int
        Width of the signed output scores (``output.score_bits``), at least ``in_bits``.
    kind : ``"argmax"`` or ``"argmin"``

    Members
    -------
    i : ``In(stream.Signature(ArrayLayout(signed(in_bits), num_classes)))``
    o : ``Out(stream.Signature(output_layout(num_classes, score_bits)))``
    """
    def __init__(self, *, num_classes, in_bits, score_bits, kind):
        if not isinstance(num_classes, int) or num_classes < 1:
            raise TypeError(f"num_classes must be a positive integer, not {num_classes!r}")
        if kind not in ("argmax", "argmin"):
            raise ValueError(f"output kind must be 'argmax' or 'argmin', not {kind!r}")
        if score_bits < in_bits:
            raise ValueError(f"output.score_bits={score_bits} is narrower than the final "
                             f"layer's acc_bits={in_bits}; set score_bits >= {in_bits}")
        self._num_classes = num_classes
        self._kind = kind
        super().__init__({
            "i": In(stream.Signature(data.ArrayLayout(signed(in_bits), num_classes))),
            "o": Out(stream.Signature(output_layout(num_classes, score_bits))),
        })

    num_classes = property(lambda self: self._num_classes)
    kind = property(lambda self: self._kind)

    @property
    def cycles(self):
        """Cycles per image when fed and drained without stalls."""
        return self._num_classes + 1

    @property
    def latency(self):
        """Cycles from the input beat being accepted to the output beat being valid."""
        return self._num_classes

    def elaborate(self, platform):
        m = Module()
        k_count = self._num_classes
        scores = self.o.payload.scores
        busy = Signal()
        k = Signal(range(k_count + 1))
        best = Signal.like(scores[0])
        m.d.comb += self.i.ready.eq(~busy)
        with m.If(self.i.valid & ~busy):
            m.d.sync += [scores[j].eq(self.i.payload[j]) for j in range(k_count)]
            m.d.sync += [best.eq(self.i.payload[0]), k.eq(1), busy.eq(1),
                         self.o.payload.cls.eq(0), self.o.payload.last.eq(1)]
            if k_count == 1:
                m.d.sync += self.o.valid.eq(1)
        if k_count > 1:
            with m.If(busy & ~self.o.valid):
                candidate = select(m, k, [scores[j] for j in range(k_count)],
                                   scores[0].shape(), "candidate")
                if self._kind == "argmax":
                    better = candidate > best
                else:
                    better = candidate < best
                with m.If(better):
                    m.d.sync += [best.eq(candidate), self.o.payload.cls.eq(k)]
                m.d.sync += k.eq(k + 1)
                with m.If(k == k_count - 1):
                    m.d.sync += self.o.valid.eq(1)
        with m.If(self.o.valid & self.o.ready):
            m.d.sync += [self.o.valid.eq(0), busy.eq(0)]
        return m

"""The output stage: class decision (argmax or argmin, lowest index on ties) and scores."""

from amaranth.hdl import Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out
from amaranth.utils import ceil_log2

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
        return 1

    def elaborate(self, platform):
        m = Module()
        scores = [self.i.payload[k] for k in range(self._num_classes)]
        best, index = scores[0], 0
        for k in range(1, self._num_classes):
            better = scores[k] > best if self._kind == "argmax" else scores[k] < best
            best = Mux(better, scores[k], best)
            index = Mux(better, k, index)
        take = Signal()
        m.d.comb += take.eq(~self.o.valid | self.o.ready)
        m.d.comb += self.i.ready.eq(take)
        with m.If(take):
            m.d.sync += self.o.valid.eq(self.i.valid)
            with m.If(self.i.valid):
                m.d.sync += [
                    self.o.payload.cls.eq(index),
                    self.o.payload.last.eq(1),
                ]
                m.d.sync += [self.o.payload.scores[k].eq(scores[k])
                             for k in range(self._num_classes)]
        return m

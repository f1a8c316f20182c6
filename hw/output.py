"""The output stage: class decision (argmax or argmin, lowest index on ties) and scores."""

from amaranth.hdl import Module, Signal, signed, unsigned
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
    """Pick the class of an image's scores, which arrive one per beat; emit one beat per image.

    Each score is written into its slot of the output payload and compared with the best so
    far as it arrives (one comparator: no compare chain); the beat after the last score of an
    image the output is valid. The input's ready is a register: low while the output is
    valid, so the stage takes an image per ``num_classes + 1`` cycles at most.

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
    i : ``In(stream.Signature(ArrayLayout(signed(in_bits), 1)))``
        The scores of an image in class order, one per beat.
    o : ``Out(stream.Signature(output_layout(num_classes, score_bits)))``
    """
    #: Cycles from the last score's beat being accepted to the output beat being valid: the
    #: output register, written with that score.
    latency = 1

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
            "i": In(stream.Signature(data.ArrayLayout(signed(in_bits), 1))),
            "o": Out(stream.Signature(output_layout(num_classes, score_bits))),
        })

    num_classes = property(lambda self: self._num_classes)
    kind = property(lambda self: self._kind)

    @property
    def cycles(self):
        """Cycles per image when fed and drained without stalls."""
        return self._num_classes + 1

    def elaborate(self, platform):
        m = Module()
        k_count = self._num_classes
        scores = self.o.payload.scores
        k = Signal(range(k_count))
        best = Signal.like(scores[0])
        score = self.i.payload[0]
        m.d.comb += self.i.ready.eq(~self.o.valid)
        with m.If(self.o.valid & self.o.ready):
            m.d.sync += self.o.valid.eq(0)
        with m.If(self.i.valid & ~self.o.valid):
            with m.Switch(k):
                for j in range(k_count - 1):
                    with m.Case(j):
                        m.d.sync += scores[j].eq(score)
                with m.Default():                 # every value of k is covered
                    m.d.sync += scores[k_count - 1].eq(score)
            better = score > best if self._kind == "argmax" else score < best
            with m.If((k == 0) | better):
                m.d.sync += [best.eq(score), self.o.payload.cls.eq(k)]
            with m.If(k == k_count - 1):
                m.d.sync += [k.eq(0), self.o.valid.eq(1), self.o.payload.last.eq(1)]
            with m.Else():
                m.d.sync += k.eq(k + 1)
        return m

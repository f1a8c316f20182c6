"""The accelerator: the stage chain of an integer model, and its AXI4-Stream wrapper."""

from amaranth.hdl import Module, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from .arith import format_shape
from .plan import check_folding, plan

__all__ = ["LeNetAccelerator", "LeNetAxiStream"]


class LeNetAccelerator(wiring.Component):
    """Streaming, pipelined accelerator of an integer model: one stage per layer.

    Parameters
    ----------
    qmodel_meta : dict
        The content of ``qmodel.json``; every width, shape and shift comes from it.
    arrays : dict of str to ndarray
        The int64 arrays of ``qmodel.npz``.
    folding : list of ``{"pe": int, "simd": int}`` or None
        One entry per MAC layer (conv, dense, rbf) in order; ``None``: all 1.

    Members
    -------
    i : ``In(stream.Signature(ArrayLayout(pixel, channels)))``
        Raw pixels (the input format, 8-bit unsigned for MNIST), one position per beat,
        row-major, images back to back; padding is inserted inside.
    o : ``Out(stream.Signature(output_layout(num_classes, score_bits)))``
        One beat per image: ``cls``, ``scores``, ``last``.
    """
    def __init__(self, qmodel_meta, arrays, folding=None):
        self._folding = check_folding(qmodel_meta, folding)
        self._stages = plan(qmodel_meta, arrays, self._folding)
        inp = qmodel_meta["input"]
        in_layout = data.ArrayLayout(format_shape(inp["format"]), inp.get("channels", 1))
        out_signature = self._stages[-1].signature.members["o"].signature
        super().__init__({"i": In(stream.Signature(in_layout)), "o": Out(out_signature)})

    @property
    def folding(self):
        """The folding in use, one ``{"pe", "simd"}`` per MAC layer."""
        return [dict(entry) for entry in self._folding]

    @property
    def stages(self):
        """The stage components, input to output."""
        return tuple(self._stages)

    def elaborate(self, platform):
        m = Module()
        for n, stage in enumerate(self._stages):
            name = getattr(stage, "label", type(stage).__name__)
            name = name.split("'")[1] if "'" in name else type(stage).__name__.lower()
            m.submodules[f"s{n}_{name}"] = stage
        wiring.connect(m, wiring.flipped(self.i), self._stages[0].i)
        for a, b in zip(self._stages[:-1], self._stages[1:], strict=True):
            wiring.connect(m, a.o, b.i)
        wiring.connect(m, self._stages[-1].o, wiring.flipped(self.o))
        return m


def _bytes(width):
    return (width + 7) // 8 * 8


class LeNetAxiStream(wiring.Component):
    """AXI4-Stream-named wrapper of :class:`LeNetAccelerator` for vendor block designs.

    ``s_axis_tdata`` carries one pixel position (zero-extended to whole bytes); ``m_axis_tdata``
    carries the output payload (``cls`` in the low bits, then the scores, then ``last``,
    zero-extended to whole bytes) with ``m_axis_tlast`` high on every beat (one beat per image).
    The clock and reset are the ``clk`` and ``rst`` ports of the sync domain.
    """
    def __init__(self, qmodel_meta, arrays, folding=None):
        self._core = LeNetAccelerator(qmodel_meta, arrays, folding)
        self._in_width = self._core.i.payload.as_value().shape().width
        self._out_width = self._core.o.payload.as_value().shape().width
        super().__init__({
            "s_axis_tdata": In(unsigned(_bytes(self._in_width))),
            "s_axis_tvalid": In(1),
            "s_axis_tready": Out(1),
            "m_axis_tdata": Out(unsigned(_bytes(self._out_width))),
            "m_axis_tvalid": Out(1),
            "m_axis_tready": In(1),
            "m_axis_tlast": Out(1),
        })

    @property
    def core(self):
        return self._core

    def elaborate(self, platform):
        m = Module()
        m.submodules.core = core = self._core
        m.d.comb += [
            core.i.payload.eq(self.s_axis_tdata[:self._in_width]),
            core.i.valid.eq(self.s_axis_tvalid),
            self.s_axis_tready.eq(core.i.ready),
            self.m_axis_tdata.eq(core.o.payload.as_value()),
            self.m_axis_tvalid.eq(core.o.valid),
            core.o.ready.eq(self.m_axis_tready),
            self.m_axis_tlast.eq(core.o.payload.last),
        ]
        return m

"""The accelerator: the stage chain of an integer model, and its AXI4-Stream wrapper."""

from amaranth.hdl import Cat, Module, Signal, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from .arith import format_shape
from .folding import check_folding, check_load
from .plan import plan

__all__ = ["LeNetAccelerator", "LeNetAxiStream"]


class LeNetAccelerator(wiring.Component):
    """Streaming, pipelined accelerator of an integer model: the components of its planned
    stages (:func:`hw.plan.plan`: one per layer, plus padders, regroups and the classifier).

    Parameters
    ----------
    qmodel_meta : dict
        The content of ``qmodel.json``; every width, shape and shift comes from it.
    arrays : dict of str to ndarray
        The int64 arrays of ``qmodel.npz``.
    folding : list of ``{"pe": int, "simd": int}`` or None
        One entry per MAC layer (kinds on the MAC array, ``core.kinds.mac_kinds()``) in
        order; ``None``: all 1.

    Members
    -------
    i : ``In(stream.Signature(ArrayLayout(pixel, channels)))``
        Raw pixels (the input format, 8-bit unsigned for MNIST), one position per beat,
        row-major, images back to back; padding is inserted inside.
    o : ``Out(stream.Signature(output_layout(num_classes, score_bits)))``
        One beat per image: ``cls``, ``scores``, ``last``.
    w : ``In(stream.Signature(unsigned(bits)))`` (only with ``load``)
        The weights of the ``load`` layers after reset, one code per beat (two's complement,
        ``bits`` = the widest of their weight formats), in :meth:`load_codes` order. No image
        is computed by a layer before its weights are loaded.
    loaded : ``Out(1)`` (only with ``load``)
        High once every loadable layer has its weights.

    ``load`` (keyword): names of MAC layers whose weights are loaded through ``w`` into memories
    without initial contents (e.g. iCE40 SPRAM) instead of ROMs; default none.
    """
    def __init__(self, qmodel_meta, arrays, folding=None, *, load=()):
        self._folding = check_folding(qmodel_meta, folding)
        self._load = check_load(qmodel_meta, load)
        self._plan = plan(qmodel_meta, self._folding, arrays, load=self._load)
        self._stages = [stage.build() for stage in self._plan]
        self._loaders = [st for st in self._stages if getattr(st, "weight_load", False)]
        inp = qmodel_meta["input"]
        in_layout = data.ArrayLayout(format_shape(inp["format"]), inp.get("channels", 1))
        out_signature = self._stages[-1].signature.members["o"].signature
        members = {"i": In(stream.Signature(in_layout)), "o": Out(out_signature)}
        if self._loaders:
            self._w_bits = max(st.w.payload.shape().width for st in self._loaders)
            members["w"] = In(stream.Signature(unsigned(self._w_bits)))
            members["loaded"] = Out(1)
        super().__init__(members)

    @property
    def load(self):
        """Names of the layers whose weights are loaded through ``w``."""
        return self._load

    def load_codes(self):
        """Return the codes the ``w`` stream takes after reset, as unsigned ``bits`` patterns."""
        if not self._loaders:
            return []
        mask = (1 << self._w_bits) - 1
        return [v & mask for st in self._loaders for v in st.load_codes()]

    @property
    def folding(self):
        """The folding in use, one ``{"pe", "simd"}`` per MAC layer."""
        return [dict(entry) for entry in self._folding]

    @property
    def stages(self):
        """The stage components, input to output."""
        return tuple(self._stages)

    @property
    def plan(self):
        """The planned stages (:class:`hw.stages.PlannedStage`) the components were built from."""
        return tuple(self._plan)

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
        if self._loaders:
            # The w stream goes to the loadable stages one after the other.
            sel = Signal(range(len(self._loaders) + 1))
            ready = 0
            for k, st in enumerate(self._loaders):
                width = st.w.payload.shape().width
                m.d.comb += [st.w.payload.eq(self.w.payload[:width]),
                             st.w.valid.eq(self.w.valid & (sel == k))]
                ready = ready | (st.w.ready & (sel == k))
                with m.If((sel == k) & st.loaded):
                    m.d.sync += sel.eq(k + 1)
            m.d.comb += [self.w.ready.eq(ready),
                         self.loaded.eq(Cat(st.loaded for st in self._loaders).all())]
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

"""The issue counter of a MAC stage: which output position, group, window part and block."""

from amaranth.hdl import Module, Mux, Signal
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from .arith import counter_shape, select
from .window import read_layout

__all__ = ["IssueCounter"]


class IssueCounter(wiring.Component):
    """Walk the MAC steps of every output position, one step per cycle it may issue.

    Output positions go row-major over the ``(height - kh + 1) × (width - kw + 1)`` outputs;
    each position computes its groups of output channels in order; each group walks its window
    in ``(ky, kx, channel block)`` order, ``ky`` over the ``kh / r`` row blocks, ``kx`` over the
    ``kw / t`` tap blocks and the channel blocks over ``steps[group]`` (all blocks, or those a
    connection table needs). A step issues in a cycle ``avail`` and ``en`` are both high.

    ``step`` describes the step in flight: ``rd`` (a :func:`~hw.window.read_layout` read of
    the line buffer), ``wa`` (the weight word: the position's steps counted from 0), ``first``
    and ``last`` (the group's first and last step) and ``g`` (the group). ``free`` releases
    ring rows: one when the last step of an output row issues, ``kh`` at the image's last (the
    next image's window starts ``kh`` rows on).

    Parameters
    ----------
    in_shape, kernel, split :
        As :class:`~hw.window.LineBuffer`.
    steps : list of list of int
        Per group, the channel blocks its steps visit, in order.

    Members
    -------
    avail : ``In(1)``
        The input rows of the position's window are there (and any weights loaded).
    en : ``In(1)``
        The pipeline advances.
    issue : ``Out(1)``
    step : ``Out(StructLayout({"rd", "wa", "first", "last", "g"}))``
    free : ``Out(range(kh + 1))``
    """
    def __init__(self, *, in_shape, kernel, split, steps):
        channels, _, _ = in_shape
        kh, kw = kernel
        c_block, t, r = split
        blocks = channels // c_block
        steps = [list(bl) for bl in steps]
        if not steps or any(not bl or any(not 0 <= b < blocks for b in bl) for bl in steps):
            raise ValueError(f"steps must list, per group, channel blocks in range({blocks}), "
                             f"not {steps!r}")
        self._in_shape, self._kernel, self._split = tuple(in_shape), tuple(kernel), tuple(split)
        self._steps = steps
        rows = (kh // r) * (kw // t) * sum(len(bl) for bl in steps)
        super().__init__({
            "avail": In(1),
            "en": In(1),
            "issue": Out(1),
            "step": Out(data.StructLayout({
                "rd": read_layout(in_shape, kernel, split), "wa": counter_shape(rows),
                "first": 1, "last": 1, "g": counter_shape(len(steps))})),
            "free": Out(counter_shape(kh + 1)),
        })

    def elaborate(self, platform):
        m = Module()
        channels, height, width = self._in_shape
        kh, kw = self._kernel
        c_block, t, r = self._split
        out_h, out_w = height - kh + 1, width - kw + 1
        groups, blocks = len(self._steps), channels // c_block
        kyb_n, kxb_n = kh // r, kw // t
        bank_rows = 2 * kh // r
        step = self.step
        rd = step.rd
        co = Signal(counter_shape(out_w))
        ro = Signal(counter_shape(out_h))
        g, kyb, kxb = Signal.like(step.g, name="g"), Signal.like(rd.ky), Signal.like(rd.kx)
        co_q, co_m = Signal.like(rd.col_q), Signal.like(rd.col_m)
        base_q, base_m = Signal.like(rd.row_q), Signal.like(rd.row_m)
        wa = Signal.like(step.wa)
        issue = self.issue
        m.d.comb += issue.eq(self.avail & self.en)

        # Channel blocks of the current group: a counter, or a table for a sparse layer.
        full = all(bl == list(range(blocks)) for bl in self._steps)
        cb = Signal(counter_shape(blocks))
        cb_last, cb_first = Signal(), Signal()
        if full:
            m.d.comb += [cb_last.eq(cb == blocks - 1), cb_first.eq(cb == 0)]
            cb_value = cb
        else:
            table = [b for bl in self._steps for b in bl]
            lasts = [int(k == len(bl) - 1) for bl in self._steps for k in range(len(bl))]
            firsts = [int(k == 0) for bl in self._steps for k in range(len(bl))]
            cp = Signal(counter_shape(len(table)))
            cp_start = Signal(counter_shape(len(table)))
            cb_value = select(m, cp, table, counter_shape(blocks), "cb_table")
            m.d.comb += [cb_last.eq(select(m, cp, lasts, 1, "cb_last_table")),
                         cb_first.eq(select(m, cp, firsts, 1, "cb_first_table"))]
        group_last, row_last, image_last = Signal(), Signal(), Signal()
        m.d.comb += [
            step.first.eq(cb_first & (kxb == 0) & (kyb == 0)),
            step.last.eq(cb_last & (kxb == kxb_n - 1) & (kyb == kyb_n - 1)),
            group_last.eq(step.last & (g == groups - 1)),
            row_last.eq(group_last & (co == out_w - 1)),
            image_last.eq(row_last & (ro == out_h - 1)),
            step.g.eq(g), step.wa.eq(wa),
            rd.row_q.eq(base_q), rd.row_m.eq(base_m), rd.ky.eq(kyb),
            rd.col_q.eq(co_q), rd.col_m.eq(co_m), rd.kx.eq(kxb), rd.block.eq(cb_value),
        ]
        with m.If(issue & row_last):
            m.d.comb += self.free.eq(Mux(image_last, kh, 1))

        with m.If(issue):
            m.d.sync += wa.eq(Mux(group_last, 0, wa + 1))
            if not full:
                with m.If(~cb_last):
                    m.d.sync += cp.eq(cp + 1)
                with m.Elif(~step.last):
                    m.d.sync += cp.eq(cp_start)
                with m.Elif(g != groups - 1):
                    m.d.sync += [cp.eq(cp + 1), cp_start.eq(cp + 1)]
                with m.Else():
                    m.d.sync += [cp.eq(0), cp_start.eq(0)]
            with m.If(~cb_last):
                if full:
                    m.d.sync += cb.eq(cb + 1)
            with m.Else():
                if full:
                    m.d.sync += cb.eq(0)
                with m.If(kxb != kxb_n - 1):
                    m.d.sync += kxb.eq(kxb + 1)
                with m.Else():
                    m.d.sync += kxb.eq(0)
                    with m.If(kyb != kyb_n - 1):
                        m.d.sync += kyb.eq(kyb + 1)
                    with m.Else():
                        m.d.sync += kyb.eq(0)
                        with m.If(g != groups - 1):
                            m.d.sync += g.eq(g + 1)
                        with m.Else():
                            m.d.sync += g.eq(0)
                            self._next_position(m, co, co_q, co_m, ro, base_q, base_m,
                                                image_last, out_w, out_h, t, r, kyb_n,
                                                bank_rows)
        return m

    @staticmethod
    def _next_position(m, co, co_q, co_m, ro, base_q, base_m, image_last, out_w, out_h, t, r,
                       kyb_n, bank_rows):
        with m.If(co != out_w - 1):
            m.d.sync += co.eq(co + 1)
            with m.If(co_m == t - 1):
                m.d.sync += [co_m.eq(0), co_q.eq(co_q + 1)]
            with m.Else():
                m.d.sync += co_m.eq(co_m + 1)
        with m.Else():
            m.d.sync += [co.eq(0), co_q.eq(0), co_m.eq(0)]
            m.d.sync += ro.eq(Mux(ro == out_h - 1, 0, ro + 1))
            # Next row: one ring row on; next image: kh rows (kh / r bank rows) on.
            with m.If(image_last):
                nxt = base_q + kyb_n
                m.d.sync += base_q.eq(Mux(nxt >= bank_rows, nxt - bank_rows, nxt))
            with m.Elif(base_m == r - 1):
                m.d.sync += [base_m.eq(0),
                             base_q.eq(Mux(base_q == bank_rows - 1, 0, base_q + 1))]
            with m.Else():
                m.d.sync += base_m.eq(base_m + 1)

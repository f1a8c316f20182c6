"""The line buffer of a MAC stage: a ring of input rows, banked so a step reads its window."""

from amaranth.hdl import Module, Mux, Signal
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out
from amaranth.utils import ceil_log2

from .arith import address_eq, address_layout, counter_shape, select

__all__ = ["LineBuffer", "ring_geometry", "read_layout"]


def ring_geometry(in_shape, kernel, split):
    """Return ``{"rows", "bank_rows", "bank_cols", "address", "depth"}`` of the ring.

    The ring holds ``rows = 2 kh`` input rows in ``r × t`` banks: ``bank_rows = rows / r`` ring
    rows and ``bank_cols = ⌈width / t⌉`` columns per bank, one channel block per word, the word
    address a :class:`~amaranth.lib.data.StructLayout` ``address`` of the channel block, the
    column and the ring row (:func:`~hw.arith.address_layout`: fields of zero bits left out;
    ``depth`` words).
    """
    channels, _, width = in_shape
    kh, _ = kernel
    c_block, t, r = split
    bank_rows = 2 * kh // r
    bank_cols = -(-width // t)
    address = address_layout({"block": ceil_log2(channels // c_block),
                              "col": ceil_log2(bank_cols), "row": ceil_log2(bank_rows)})
    return {"rows": 2 * kh, "bank_rows": bank_rows, "bank_cols": bank_cols,
            "address": address, "depth": bank_rows << (address.size - ceil_log2(bank_rows))}


def read_layout(in_shape, kernel, split):
    """Return the layout of a window read: which window a step reads, and which part of it.

    ``row_q``/``row_m``: the window's first ring row // r and % r; ``ky``: the step's row block
    (rows ``ky·r`` … of the window); ``col_q``/``col_m``: the output column // t and % t;
    ``kx``: the tap block (taps ``kx·t`` …); ``block``: the channel block.
    """
    channels, _, width = in_shape
    kh, kw = kernel
    c_block, t, r = split
    return data.StructLayout({
        "row_q": counter_shape(2 * kh // r), "row_m": counter_shape(r),
        "ky": counter_shape(kh // r),
        "col_q": counter_shape(width - kw + 1), "col_m": counter_shape(t),
        "kx": counter_shape(kw // t),
        "block": counter_shape(channels // c_block),
    })


class LineBuffer(wiring.Component):
    """Keep the last ``2 kh`` rows of a position stream; read a step's ``r × t × c_block`` codes.

    The input streams the ``channels / c_block`` channel blocks of each position in order,
    positions row-major. Ring row ``s`` lies in bank row ``s mod r``, column ``x`` in bank
    column ``x mod t``; each of the ``r·t`` banks is a :class:`~amaranth.lib.memory.Memory`
    of one channel block per word, with one synchronous read port, so a step reads each bank
    once, without word select. The input is accepted while the ring has a free row.

    A read ``rd`` (layout :func:`read_layout`) taken when ``en`` is high yields, two advancing
    cycles later (:attr:`latency`: the bank read, then the rotation into window order, which is
    registered), ``x[(i·t + j)·c_block + s]`` = channel ``block·c_block + s`` at window row
    ``ky·r + i``, tap ``kx·t + j`` of the window at ``(row_q·r + row_m, col_q·t + col_m)``.
    ``free`` ring rows (from the window's first) are released in a cycle it is nonzero.

    Parameters
    ----------
    code : shape-castable
        Shape of one channel's code.
    in_shape : (int, int, int)
        ``(channels, height, width)``.
    kernel : (int, int)
        ``(kh, kw)``.
    split : (int, int, int)
        ``(c_block, t, r)``, dividing ``channels``, ``kw`` and ``kh``.

    Members
    -------
    i : ``In(stream.Signature(ArrayLayout(code, c_block)))``
    avail : ``Out(1)``
        At least ``kh`` complete rows from the window's first row are in the ring.
    rd : ``In(read_layout(in_shape, kernel, split))``
    en : ``In(1)``
        The read pipeline advances.
    free : ``In(range(kh + 1))``
    x : ``Out(ArrayLayout(code, c_block·t·r))``
    """
    #: Advancing cycles from a read to its codes: the bank read and the rotation register.
    latency = 2

    def __init__(self, *, code, in_shape, kernel, split):
        channels, height, width = in_shape
        kh, kw = kernel
        c_block, t, r = split
        if channels % c_block or kw % t or kh % r:
            raise ValueError(f"split {tuple(split)} does not divide (channels, kw, kh) = "
                             f"{(channels, kw, kh)}")
        if kh > height or kw > width:
            raise ValueError(f"kernel {kh}x{kw} is larger than the input {height}x{width}")
        self._code = code
        self._in_shape, self._kernel, self._split = tuple(in_shape), tuple(kernel), tuple(split)
        super().__init__({
            "i": In(stream.Signature(data.ArrayLayout(code, c_block))),
            "avail": Out(1),
            "rd": In(read_layout(in_shape, kernel, split)),
            "en": In(1),
            "free": In(counter_shape(kh + 1)),
            "x": Out(data.ArrayLayout(code, c_block * t * r)),
        })

    def elaborate(self, platform):
        m = Module()
        channels, _, width = self._in_shape
        kh, _ = self._kernel
        c_block, t, r = self._split
        blocks = channels // c_block
        geo = ring_geometry(self._in_shape, self._kernel, self._split)
        ring_rows, bank_rows, bank_cols = geo["rows"], geo["bank_rows"], geo["bank_cols"]
        word = data.ArrayLayout(self._code, c_block)

        # Writer: the position's column and ring row, each as (// t or r, % t or r).
        wr_col = Signal(counter_shape(width))
        wc_q = Signal(counter_shape(bank_cols))
        wc_m = Signal(counter_shape(t))
        ws_q = Signal(counter_shape(bank_rows))
        ws_m = Signal(counter_shape(r))
        wr_ch = Signal(counter_shape(blocks))
        filled = Signal(counter_shape(ring_rows + 1))       # complete rows from the window's
        accept = Signal()
        row_written = Signal()
        m.d.comb += [self.i.ready.eq(filled < ring_rows), accept.eq(self.i.valid & self.i.ready),
                     self.avail.eq(filled >= kh)]
        with m.If(accept & (wr_ch != blocks - 1)):
            m.d.sync += wr_ch.eq(wr_ch + 1)
        with m.Elif(accept):
            m.d.sync += wr_ch.eq(0)
            with m.If(wr_col == width - 1):
                m.d.comb += row_written.eq(1)
                m.d.sync += [wr_col.eq(0), wc_q.eq(0), wc_m.eq(0)]
                with m.If(ws_m == r - 1):
                    m.d.sync += [ws_m.eq(0), ws_q.eq(Mux(ws_q == bank_rows - 1, 0, ws_q + 1))]
                with m.Else():
                    m.d.sync += ws_m.eq(ws_m + 1)
            with m.Else():
                m.d.sync += wr_col.eq(wr_col + 1)
                with m.If(wc_m == t - 1):
                    m.d.sync += [wc_m.eq(0), wc_q.eq(wc_q + 1)]
                with m.Else():
                    m.d.sync += wc_m.eq(wc_m + 1)
        m.d.sync += filled.eq(filled + row_written - self.free)

        wr_addr = Signal(geo["address"])
        m.d.comb += address_eq(wr_addr, block=wr_ch, col=wc_q, row=ws_q)
        rd = self.rd
        banks = [[None] * t for _ in range(r)]
        for i in range(r):
            row = Signal(counter_shape(2 * bank_rows), name=f"rd_row{i}")
            row_w = Signal(counter_shape(bank_rows), name=f"rd_row_w{i}")
            m.d.comb += [row.eq(rd.row_q + rd.ky + (rd.row_m > i)),
                         row_w.eq(Mux(row >= bank_rows, row - bank_rows, row))]
            for j in range(t):
                col = Signal(counter_shape(bank_cols), name=f"rd_col{i}_{j}")
                addr = Signal(geo["address"], name=f"rd_addr{i}_{j}")
                m.d.comb += col.eq(rd.col_q + rd.kx + (rd.col_m > j))
                m.d.comb += address_eq(addr, block=rd.block, col=col, row=row_w)
                mem = Memory(shape=word, depth=geo["depth"], init=[])
                m.submodules[f"ring_{i}_{j}"] = mem
                wr = mem.write_port()
                m.d.comb += [wr.addr.eq(wr_addr), wr.data.eq(self.i.payload),
                             wr.en.eq(accept & (ws_m == i) & (wc_m == j))]
                port = banks[i][j] = mem.read_port()
                m.d.comb += [port.addr.eq(addr), port.en.eq(self.en)]

        # The read data arrive a cycle later: rotate bank (row, column) into window order.
        rm = Signal.like(rd.row_m, name="rot_rm")
        cm = Signal.like(rd.col_m, name="rot_cm")
        with m.If(self.en):
            m.d.sync += [rm.eq(rd.row_m), cm.eq(rd.col_m)]
        bank_data = [[banks[i][j].data.as_value() for j in range(t)] for i in range(r)]
        for i in range(r):
            ri = i if r == 1 else Signal(counter_shape(r), name=f"rot_r{i}")
            if r > 1:
                m.d.comb += ri.eq(Mux(rm + i >= r, rm + i - r, rm + i))
            for j in range(t):
                cj = j if t == 1 else Signal(counter_shape(t), name=f"rot_c{i}_{j}")
                if t > 1:
                    m.d.comb += cj.eq(Mux(cm + j >= t, cm + j - t, cm + j))
                rows = [select(m, cj, bank_data[ii], word, f"rot{i}_{j}_{ii}") if t > 1
                        else data.View(word, bank_data[ii][0]) for ii in range(r)]
                lane = select(m, ri, rows, word, f"lane{i}_{j}") if r > 1 else rows[0]
                with m.If(self.en):
                    m.d.sync += [self.x[(i * t + j) * c_block + s].eq(lane[s])
                                 for s in range(c_block)]
        return m

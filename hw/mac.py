"""The MAC stage: sliding window (or buffered vector) feeding a PE × SIMD multiply array."""

import numpy as np
from amaranth.hdl import Cat, Const, Module, Mux, Signal, signed
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out
from amaranth.utils import ceil_log2

from .arith import counter_shape, format_range, format_shape, rom_depth, select

__all__ = ["MacStage", "tree_sum", "simd_split", "simd_options", "group_steps", "tree_stages",
           "mac_extra_latency", "shift_add_product", "TREE_FANIN", "LARGE_MEMORY_BITS",
           "LOADED_WEIGHTS"]

#: Terms summed in one pipeline stage of the adder tree (3 adder levels).
TREE_FANIN = 8

#: Weight memories of at least this many bits are flagged ``large`` in :meth:`resources`
#: (candidates for iCE40 SPRAM / UltraRAM; each lane's weights are one memory with one
#: synchronous read port, so a platform can map them one by one).
LARGE_MEMORY_BITS = 16 * 1024


#: Name prefix of the loadable weight memories (``weight_load``); synthesis scripts select
#: them by it (e.g. to map them to iCE40 SPRAM, which has no initial contents).
LOADED_WEIGHTS = "loaded_weights"


def tree_sum(values):
    """Return the sum of ``values`` as a balanced adder tree."""
    values = list(values)
    while len(values) > 1:
        values = [values[i] + values[i + 1] if i + 1 < len(values) else values[i]
                  for i in range(0, len(values), 2)]
    return values[0]


def tree_stages(simd):
    """Return the registered stages of the adder tree of ``simd`` products.

    Each stage sums groups of :data:`TREE_FANIN` terms; the last (at most ``TREE_FANIN``
    terms) is summed in the accumulate cycle.
    """
    n, stages = simd, 0
    while n > TREE_FANIN:
        n = -(-n // TREE_FANIN)
        stages += 1
    return stages


def mac_extra_latency(simd, lut):
    """Return the pipeline cycles a :class:`MacStage` adds after its last step's issue.

    The result of a position is valid ``steps + 6 + tree_stages(simd) (+ 2 with a LUT)``
    cycles after its first step is issued (see :class:`MacStage`).
    """
    return 6 + tree_stages(simd) + (2 if lut else 0)


def simd_options(channels, kh, kw):
    """Return ``{simd: (c_block, t, r)}`` of every SIMD a window of ``kh·kw·channels`` takes.

    ``simd = c_block · t · r`` with ``c_block | channels`` (channels of one position),
    ``t | kw`` (consecutive taps of a window row) and ``r | kh`` (window rows); every divisor of
    ``kh·kw·channels`` splits so (prime by prime). When several
    splits give the same ``simd`` the one with the largest ``c_block``, then ``t``, is used
    (fewest memory banks).
    """
    options = {}
    for c in _divisors(channels):
        for t in _divisors(kw):
            for r in _divisors(kh):
                simd = c * t * r
                if simd not in options or (c, t) > options[simd][:2]:
                    options[simd] = (c, t, r)
    return dict(sorted(options.items()))


def simd_split(channels, kh, kw, simd):
    """Return the ``(c_block, t, r)`` split of ``simd`` (see :func:`simd_options`) or None."""
    return simd_options(channels, kh, kw).get(simd)


def _divisors(n):
    return [d for d in range(1, n + 1) if n % d == 0]


def group_steps(connections, out_channels, channels, pe, c_block):
    """Return, per group of ``pe`` output channels, the channel blocks its steps visit.

    A block of ``c_block`` input channels is visited when at least one output channel of
    the group is connected to one of its channels (``connections[o, c]``, None: all are).
    """
    blocks = channels // c_block
    if connections is None:
        return [list(range(blocks)) for _ in range(out_channels // pe)]
    conn = np.asarray(connections).reshape(out_channels, blocks, c_block).any(axis=2)
    return [[b for b in range(blocks) if conn[g * pe:(g + 1) * pe, b].any()]
            for g in range(out_channels // pe)]


def _check_int(label, what, value, minimum=1):
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise TypeError(f"{label}: {what} must be an integer >= {minimum}, not {value!r}")
    return value


class MacStage(wiring.Component):
    """Convolution, dense or RBF layer on a position stream.

    A window of ``kernel = (kh, kw)`` positions slides over the ``(channels, height, width)``
    input with stride 1 (a dense layer is the window that covers its whole input, so it computes
    one output position per image). Each cycle ``pe`` output channels × ``simd`` window
    elements are multiplied (``op="mul"``: ``w·x``; ``op="sqdiff"``: ``(x - w)²``) and
    accumulated; ``simd = c_block·t·r`` (:func:`simd_split`) takes ``c_block`` channels of
    ``t`` consecutive taps of ``r`` window rows, and the steps walk the window in
    ``(ky, kx, channel block)`` order. After the steps of a group of ``pe`` output channels the
    accumulators get the bias, requantization and activation (or, for a ``final`` layer, leave
    raw). With a connection table the steps of a group visit only the channel blocks connected
    to one of its outputs.

    The input streams ``c_block`` channels of a position per beat (positions row-major, the
    channel blocks of a position in order); it is kept in a ring of ``2 kh`` rows, banked
    ``r × t`` ways (ring row ``s`` in bank row ``s mod r``, column ``x`` in bank column
    ``x mod t``), one channel block per memory word, so a step reads ``r·t`` distinct memories,
    each with one synchronous read port and no word select; the next image's first rows stream
    in while the last output row is computed. The output streams each group of ``pe`` output
    channels as its own beat as soon as it is computed (no register holds a whole position).

    Pipeline (all registers advance together; a full output freezes them): issue → ring and
    weight reads → window mux, and the weight words registered beside it (the multiplier's
    operands are registers: no block-RAM read or mux shares its cycle) → a private copy of
    each multiplier's operands → multiply → the products registered twice →
    ``tree_stages(simd)`` adder stages → accumulate → requantize (→ registered LUT index →
    synchronous LUT read) → output register with a skid buffer, so no ready signal crosses the
    stage combinationally.

    Cycles per image, fed and drained without stalls:
    ``max(height·width·blocks, out_h·out_w · Σ_groups steps)``,
    ``steps = (kh/r)(kw/t)·blocks`` of the group, ``blocks = channels / c_block``.

    Parameters
    ----------
    label : str
        Names the layer in messages, e.g. ``"layers[2] 'c3'"``.
    in_shape : (int, int, int)
        ``(channels, height, width)`` of the input stream.
    in_format, weight_format : dict
        Number formats of the input codes and of the weights (the centers for ``sqdiff``).
    weight : array ``[out_channels, channels, kh, kw]``
        Integer weights (RBF centers).
    bias : array ``[out_channels]`` or None
        Integer biases at the accumulator scale.
    acc_bits : int
        Accumulator width (bit growth of the integer model).
    activation : :class:`~hw.arith.Activation` or None
        Requantization and activation; ``None`` for a final layer (scores are the accumulators).
    op : ``"mul"`` or ``"sqdiff"``
    pe, simd : int
        Folding: ``pe`` must divide ``out_channels``; ``simd`` must divide the window length
        ``kh·kw·channels`` as ``c_block·t·r`` (:func:`simd_options`).
    connections : array ``[out_channels, channels]`` of 0/1, or None
        Connection table; unconnected pairs must have zero weights.
    dense : bool
        Name the window ``in_features`` in messages (a dense layer).
    weight_load : bool
        Keep the weights in writable memories without initial contents (e.g. iCE40 SPRAM),
        filled through the ``w`` stream after reset, instead of ROMs. Each lane's memory has
        one address shared by its write and read ports (a single-port RAM). The stage issues
        no step before ``loaded``; the arithmetic is the same as with ROMs.
    lut_mul : bool
        Build the products from shifted partial products (adders only) instead of the ``*``
        operator, so synthesis keeps them out of DSP blocks (e.g. a ninth multiplier on an
        iCE40 UP5K, which has 8); the arithmetic is the same.

    Members
    -------
    i : ``In(stream.Signature(ArrayLayout(in code, c_block)))``
    o : ``Out(stream.Signature(ArrayLayout(out code, pe)))``
        One beat per group of ``pe`` output channels, groups of a position in order.
    w : ``In(stream.Signature(weight code))`` (``weight_load`` only)
        The weights, one code per beat, in :meth:`load_codes` order.
    loaded : ``Out(1)`` (``weight_load`` only)
        High once every weight has been written (until reset).
    """
    def __init__(self, *, label, in_shape, in_format, weight_format, weight, bias, acc_bits,
                 activation, op="mul", pe=1, simd=1, connections=None, dense=False,
                 weight_load=False, lut_mul=False):
        weight = np.asarray(weight, dtype=np.int64)
        if weight.ndim != 4:
            raise ValueError(f"{label}: weight must have 4 dimensions [O, C, kh, kw], "
                             f"not shape {weight.shape}")
        out_channels, channels, kh, kw = weight.shape
        if tuple(in_shape)[0] != channels:
            raise ValueError(f"{label}: weight has {channels} input channels but the input "
                             f"has {in_shape[0]}")
        _, height, width = in_shape
        if kh > height or kw > width:
            raise ValueError(f"{label}: kernel {kh}x{kw} is larger than the input "
                             f"{height}x{width}")
        _check_int(label, "pe", pe)
        _check_int(label, "simd", simd)
        _check_int(label, "acc_bits", acc_bits, 2)
        if out_channels % pe:
            raise ValueError(f"{label}: pe={pe} does not divide out_channels={out_channels}")
        message = simd_error(label, channels, kh, kw, simd, dense=dense)
        if message:
            raise ValueError(message)
        if op not in ("mul", "sqdiff"):
            raise ValueError(f"{label}: op must be 'mul' or 'sqdiff', not {op!r}")
        lo, hi = format_range(weight_format)
        if weight.size and (weight.min() < lo or weight.max() > hi):
            raise ValueError(f"{label}: weights leave the format {weight_format!r}")
        if bias is None:
            bias = np.zeros(out_channels, dtype=np.int64)
        bias = np.asarray(bias, dtype=np.int64).reshape(-1)
        if bias.shape != (out_channels,):
            raise ValueError(f"{label}: bias must have {out_channels} entries, "
                             f"not {bias.shape[0]}")
        if activation is not None and len(activation.shifts) != out_channels:
            raise ValueError(f"{label}: acc_frac must have {out_channels} entries")
        if connections is not None:
            connections = np.asarray(connections, dtype=np.int64)
            if connections.shape != (out_channels, channels):
                raise ValueError(f"{label}: connections must have shape "
                                 f"{(out_channels, channels)}, not {connections.shape}")
            if np.any(weight[connections == 0]):
                raise ValueError(f"{label}: nonzero weights of unconnected (output, input) "
                                 f"pairs would be skipped")
        self._label = label
        self._in_shape = (channels, height, width)
        self._kernel = (kh, kw)
        self._out_channels = out_channels
        self._in_format = dict(in_format)
        self._weight_format = dict(weight_format)
        self._weight = weight
        self._bias = bias
        self._acc_bits = acc_bits
        self._activation = activation
        self._op = op
        self._pe = pe
        self._simd = simd
        self._split = simd_split(channels, kh, kw, simd)
        self._steps = group_steps(connections, out_channels, channels, pe, self._split[0])
        if activation is None:
            out_code = signed(acc_bits)
        else:
            out_code = format_shape(activation.out_format)
        in_layout = data.ArrayLayout(format_shape(in_format), self._split[0])
        out_layout = data.ArrayLayout(out_code, pe)
        if not isinstance(weight_load, bool):
            raise TypeError(f"{label}: weight_load must be a bool, not {weight_load!r}")
        if not isinstance(lut_mul, bool):
            raise TypeError(f"{label}: lut_mul must be a bool, not {lut_mul!r}")
        self._weight_load = weight_load
        self._lut_mul = lut_mul
        members = {"i": In(stream.Signature(in_layout)), "o": Out(stream.Signature(out_layout))}
        if weight_load:
            members["w"] = In(stream.Signature(format_shape(weight_format)))
            members["loaded"] = Out(1)
        super().__init__(members)

    label = property(lambda self: self._label)
    in_shape = property(lambda self: self._in_shape)
    kernel = property(lambda self: self._kernel)
    out_channels = property(lambda self: self._out_channels)
    pe = property(lambda self: self._pe)
    simd = property(lambda self: self._simd)
    acc_bits = property(lambda self: self._acc_bits)

    @property
    def split(self):
        """``(c_block, t, r)``: channels, row taps and rows of the window read per step."""
        return self._split

    @property
    def out_shape(self):
        """``(out_channels, out_h, out_w)`` of the output stream."""
        _, h, w = self._in_shape
        kh, kw = self._kernel
        return (self._out_channels, h - kh + 1, w - kw + 1)

    @property
    def fold(self):
        """MAC steps of a group of ``pe`` output channels with a full connection table."""
        kh, kw = self._kernel
        return kh * kw * self._in_shape[0] // self._simd

    @property
    def groups(self):
        """Groups of ``pe`` output channels computed one after the other."""
        return self._out_channels // self._pe

    @property
    def steps(self):
        """MAC steps of one output position (all groups; fewer with a sparse table)."""
        c_block, t, r = self._split
        kh, kw = self._kernel
        return (kh // r) * (kw // t) * sum(len(blocks) for blocks in self._steps)

    @property
    def latency(self):
        """Cycles from a position's first issued step to its output being valid, minus steps."""
        lut = self._activation is not None and self._activation.table is not None
        return mac_extra_latency(self._simd, lut)

    @property
    def cycles(self):
        """Cycles per image when fed and drained without stalls."""
        c, h, w = self._in_shape
        _, ho, wo = self.out_shape
        return max(h * w * (c // self._split[0]), ho * wo * self.steps)

    lut_mul = property(lambda self: self._lut_mul)

    def resources(self):
        """Return the stage's memories and multipliers (see :func:`mac_resources`)."""
        c, h, w = self._in_shape
        table = None if self._activation is None else self._activation.table
        return mac_resources(
            in_bits=format_shape(self._in_format).width,
            w_bits=format_shape(self._weight_format).width, acc_bits=self._acc_bits,
            in_shape=self._in_shape, kernel=self._kernel, out_channels=self._out_channels,
            pe=self._pe, simd=self._simd, rom_rows=len(self._weight_init(0)),
            bias=bool(np.any(self._bias)),
            lut_bits=0 if table is None else len(table) * format_shape(
                self._activation.out_format).width)

    @property
    def weight_load(self):
        """Whether the weights are loaded through ``w`` (else they are ROM contents)."""
        return self._weight_load

    def load_codes(self):
        """Return the weight codes in the order the ``w`` stream takes them.

        Lane by lane (``pe`` lanes), each lane's memory words in address order, each word's
        ``simd`` elements in order; the same words the ROMs would hold.
        """
        return [v for lane in range(self._pe) for row in self._weight_init(lane) for v in row]

    def _weight_init(self, lane):
        kh, kw = self._kernel
        c_block, t, r = self._split
        rows = []
        for g, blocks in enumerate(self._steps):
            o = g * self._pe + lane
            for kyb in range(kh // r):
                for kxb in range(kw // t):
                    for cb in blocks:
                        rows.append([int(self._weight[o, cb * c_block + s, kyb * r + i,
                                                      kxb * t + j])
                                     for i in range(r) for j in range(t)
                                     for s in range(c_block)])
        return rows

    def _weight_rams(self, m, read_addr, adv, w_code):
        """Build the loadable weight memories; return their read ports (one per lane)."""
        pe, simd = self._pe, self._simd
        rows = len(self._weight_init(0))
        lane = Signal(counter_shape(pe))
        addr = Signal(counter_shape(rows))
        elem = Signal(counter_shape(simd))
        width = w_code.width
        gathered = Signal(width * simd)
        word = Signal(width * simd)
        if simd == 1:
            m.d.comb += word.eq(self.w.payload)
        else:
            m.d.comb += word.eq(Cat(gathered[width:], self.w.payload))
        take = Signal()
        write = Signal()
        m.d.comb += [self.w.ready.eq(~self.loaded), take.eq(self.w.valid & self.w.ready),
                     write.eq(take & (elem == simd - 1))]
        with m.If(take):
            m.d.sync += gathered.eq(word)
            m.d.sync += elem.eq(Mux(elem == simd - 1, 0, elem + 1))
        with m.If(write):
            with m.If(addr == rows - 1):
                m.d.sync += addr.eq(0)
                with m.If(lane == pe - 1):
                    m.d.sync += self.loaded.eq(1)
                with m.Else():
                    m.d.sync += lane.eq(lane + 1)
            with m.Else():
                m.d.sync += addr.eq(addr + 1)
        shared = Signal(counter_shape(rows))
        m.d.comb += shared.eq(Mux(self.loaded, read_addr, addr))
        ports = []
        for k in range(pe):
            ram = Memory(shape=data.ArrayLayout(w_code, simd), depth=rom_depth(rows), init=[])
            m.submodules[f"{LOADED_WEIGHTS}_{k}"] = ram
            wr = ram.write_port()
            rd = ram.read_port()
            # Reads only once loaded, writes only before: never both in one cycle, as a
            # single-port RAM without read-during-write (iCE40 SPRAM) requires.
            m.d.comb += [wr.addr.eq(shared), wr.data.eq(word), wr.en.eq(write & (lane == k)),
                         rd.addr.eq(shared), rd.en.eq(adv & self.loaded)]
            ports.append(rd)
        return ports

    def elaborate(self, platform):
        m = Module()
        channels, height, width = self._in_shape
        kh, kw = self._kernel
        _, out_h, out_w = self.out_shape
        pe, simd, groups = self._pe, self._simd, self.groups
        c_block, t, r = self._split
        blocks = channels // c_block
        kyb_n, kxb_n = kh // r, kw // t
        ring_rows = 2 * kh
        bank_rows = ring_rows // r                          # ring rows per bank row
        bank_cols = -(-width // t)                          # columns per bank column
        col_bits = ceil_log2(bank_cols)
        ch_bits = ceil_log2(blocks)
        bank_depth = bank_rows << (col_bits + ch_bits)
        in_code = format_shape(self._in_format)
        w_code = format_shape(self._weight_format)
        word = data.ArrayLayout(in_code, c_block)

        def ring_addr(chunk, col, row):
            return Cat(chunk[:ch_bits], col[:col_bits], row)

        # Line buffer ring, r × t banks: writer side.
        wr_col = Signal(counter_shape(width))
        wc_q = Signal(counter_shape(bank_cols))             # column // t
        wc_m = Signal(counter_shape(t))                     # column % t
        ws_q = Signal(counter_shape(bank_rows))             # ring row // r
        ws_m = Signal(counter_shape(r))                     # ring row % r
        wr_ch = Signal(counter_shape(blocks))               # channel block of the position
        filled = Signal(counter_shape(ring_rows + 1))       # complete rows from the base row
        accept = Signal()
        m.d.comb += [self.i.ready.eq(filled < ring_rows), accept.eq(self.i.valid & self.i.ready)]
        row_written = Signal()
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
        banks = [[None] * t for _ in range(r)]
        for i in range(r):
            for j in range(t):
                mem = Memory(shape=word, depth=bank_depth, init=[])
                m.submodules[f"ring_{i}_{j}"] = mem
                wr = mem.write_port()
                m.d.comb += [
                    wr.addr.eq(ring_addr(wr_ch, wc_q, ws_q)),
                    wr.data.eq(self.i.payload),
                    wr.en.eq(accept & (ws_m == i) & (wc_m == j)),
                ]
                banks[i][j] = mem.read_port()

        # Issue stage (P0): window counters and addresses.
        adv = Signal()
        co_q = Signal(counter_shape(out_w))                 # output column // t
        co_m = Signal(counter_shape(t))                     # output column % t
        co = Signal(counter_shape(out_w))
        ro = Signal(counter_shape(out_h))
        g = Signal(counter_shape(groups))
        kyb = Signal(counter_shape(kyb_n))
        kxb = Signal(counter_shape(kxb_n))
        base_q = Signal(counter_shape(bank_rows))           # window's first ring row // r
        base_m = Signal(counter_shape(r))                   # window's first ring row % r
        wa = Signal(counter_shape(len(self._weight_init(0))))   # weight ROM address
        can = Signal()
        issue = Signal()
        if self._weight_load:
            m.d.comb += can.eq((filled >= kh) & self.loaded)
        else:
            m.d.comb += can.eq(filled >= kh)
        m.d.comb += issue.eq(can & adv)

        # Channel blocks of the current group: a counter, or a table for a sparse layer.
        full = all(bl == list(range(blocks)) for bl in self._steps)
        cb = Signal(counter_shape(blocks))
        cb_last = Signal()
        cb_first = Signal()
        if full:
            m.d.comb += [cb_last.eq(cb == blocks - 1), cb_first.eq(cb == 0)]
            cb_value = cb
        else:
            table = [b for bl in self._steps for b in bl]
            lasts = [int(k == len(bl) - 1) for bl in self._steps for k in range(len(bl))]
            firsts = [int(k == 0) for bl in self._steps for k in range(len(bl))]
            cp = Signal(counter_shape(len(table)))
            cp_start = Signal(counter_shape(len(table)))
            cb_value = Signal(counter_shape(blocks))
            m.d.comb += [
                cb_value.eq(select(m, cp, table, counter_shape(blocks), "cb_table")),
                cb_last.eq(select(m, cp, lasts, 1, "cb_last_table")),
                cb_first.eq(select(m, cp, firsts, 1, "cb_first_table")),
            ]
        step_first = Signal()
        step_last = Signal()
        group_last = Signal()
        row_last = Signal()
        image_last = Signal()
        m.d.comb += [
            step_first.eq(cb_first & (kxb == 0) & (kyb == 0)),
            step_last.eq(cb_last & (kxb == kxb_n - 1) & (kyb == kyb_n - 1)),
            group_last.eq(step_last & (g == groups - 1)),
            row_last.eq(group_last & (co == out_w - 1)),
            image_last.eq(row_last & (ro == out_h - 1)),
        ]
        for i in range(r):
            row = Signal(counter_shape(2 * bank_rows), name=f"rd_row{i}")
            m.d.comb += row.eq(base_q + kyb + (base_m > i))
            row_w = Signal(counter_shape(bank_rows), name=f"rd_row_w{i}")
            m.d.comb += row_w.eq(Mux(row >= bank_rows, row - bank_rows, row))
            for j in range(t):
                col = Signal(counter_shape(bank_cols), name=f"rd_col{i}_{j}")
                m.d.comb += col.eq(co_q + kxb + (co_m > j))
                port = banks[i][j]
                m.d.comb += [port.addr.eq(ring_addr(cb_value, col, row_w)), port.en.eq(adv)]

        release = Signal(counter_shape(kh + 1))
        with m.If(issue & row_last):
            m.d.comb += release.eq(Mux(image_last, kh, 1))
        m.d.sync += filled.eq(filled + row_written - release)

        with m.If(issue):
            m.d.sync += wa.eq(Mux(group_last, 0, wa + 1))
            if not full:
                with m.If(~cb_last):
                    m.d.sync += cp.eq(cp + 1)
                with m.Elif(~step_last):
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
                            with m.If(co != out_w - 1):
                                m.d.sync += co.eq(co + 1)
                                with m.If(co_m == t - 1):
                                    m.d.sync += [co_m.eq(0), co_q.eq(co_q + 1)]
                                with m.Else():
                                    m.d.sync += co_m.eq(co_m + 1)
                            with m.Else():
                                m.d.sync += [co.eq(0), co_q.eq(0), co_m.eq(0)]
                                m.d.sync += ro.eq(Mux(ro == out_h - 1, 0, ro + 1))
                                # Next row: one ring row on; next image: kh rows (= kh/r
                                # bank rows) on.
                                with m.If(image_last):
                                    nxt = base_q + kyb_n
                                    m.d.sync += base_q.eq(Mux(nxt >= bank_rows,
                                                              nxt - bank_rows, nxt))
                                with m.Elif(base_m == r - 1):
                                    m.d.sync += [base_m.eq(0),
                                                 base_q.eq(Mux(base_q == bank_rows - 1, 0,
                                                               base_q + 1))]
                                with m.Else():
                                    m.d.sync += base_m.eq(base_m + 1)

        def stage(fields, name):
            regs = {}
            for key, value in fields.items():
                reg = Signal.like(value, name=f"{name}_{key}")
                with m.If(adv):
                    m.d.sync += reg.eq(value)
                regs[key] = reg
            return regs

        # P1: ring words and weight words read (both addressed at issue); select the window
        # elements.
        p1 = stage({"valid": issue, "first": step_first, "last": step_last, "g": g,
                    "rm": base_m, "cm": co_m}, "p1")
        bank_sel = [[banks[i][j].data.as_value() for j in range(t)] for i in range(r)]
        x_regs = []
        for i in range(r):
            ri = i if r == 1 else Signal(counter_shape(r), name=f"rot_r{i}")
            if r > 1:
                m.d.comb += ri.eq(Mux(p1["rm"] + i >= r, p1["rm"] + i - r, p1["rm"] + i))
            for j in range(t):
                cj = j if t == 1 else Signal(counter_shape(t), name=f"rot_c{i}_{j}")
                if t > 1:
                    m.d.comb += cj.eq(Mux(p1["cm"] + j >= t, p1["cm"] + j - t, p1["cm"] + j))
                lane_shape = c_block * in_code.width
                rows = [select(m, cj, bank_sel[ii], lane_shape, f"rot{i}_{j}_{ii}") if t > 1
                        else bank_sel[ii][0] for ii in range(r)]
                lane = select(m, ri, rows, lane_shape, f"lane{i}_{j}") if r > 1 else rows[0]
                view = data.View(data.ArrayLayout(in_code, c_block), lane)
                for s in range(c_block):
                    x = Signal(in_code, name=f"x{i}_{j}_{s}")
                    with m.If(adv):
                        m.d.sync += x.eq(view[s])
                    x_regs.append(x)

        # Weight ROMs, one per PE lane (one synchronous read port each), addressed at issue
        # (``wa`` is a register), read in P1 like the ring banks.
        w_ports = []
        if self._weight_load:
            w_ports = self._weight_rams(m, wa, adv, w_code)
        for lane in range(pe if not self._weight_load else 0):
            init = self._weight_init(lane)
            rom = Memory(shape=data.ArrayLayout(w_code, simd), depth=rom_depth(len(init)),
                         init=init)
            m.submodules[f"weights_{lane}"] = rom
            port = rom.read_port()
            m.d.comb += [port.addr.eq(wa), port.en.eq(adv)]
            w_ports.append(port)

        # P2: window elements and weight words in registers (neither a block-RAM read nor a
        # mux shares a cycle with the multiplier); multiply into registers (P3).
        p2 = stage({k: p1[k] for k in ("valid", "first", "last", "g")}, "p2")
        w_ops = []
        for p in range(pe):
            lane_ops = []
            for s in range(simd):
                reg = Signal(w_code, name=f"w{p}_{s}")
                with m.If(adv):
                    m.d.sync += reg.eq(w_ports[p].data[s])
                lane_ops.append(reg)
            w_ops.append(lane_ops)
        x_ops = x_regs

        def widen(v, shape):
            return v.as_signed() if shape.signed else Cat(v, Const(0, 1)).as_signed()

        # P3: each multiplier's own copy of its operands, so placement can put it beside the
        # multiplier (a DSP block may sit far from the shared window registers). Copies of one
        # window element differ only in their (don't-care) reset values, which keeps synthesis
        # from merging them back into one register.
        # P4: the products; P5: the products again, so neither the route into nor the one out
        # of a DSP block shares a cycle with logic.
        def reg_of(value, name, init=0):
            reg = Signal.like(value, name=name, init=init)
            with m.If(adv):
                m.d.sync += reg.eq(value)
            return reg

        terms = []
        x_range = 1 << in_code.width
        for p in range(pe):
            lane_terms = []
            for s in range(simd):
                w = reg_of(w_ops[p][s], f"wa{p}_{s}")
                x_init = p % x_range - (x_range // 2 if in_code.signed and
                                        p % x_range >= x_range // 2 else 0)
                x = reg_of(x_ops[s], f"xa{p}_{s}", x_init)
                if self._op == "mul":
                    a, b = w, x
                else:
                    a = b = widen(x, in_code) - widen(w, w_code)
                product = shift_add_product(a, b) if self._lut_mul else a * b
                prod = reg_of(product, f"prod{p}_{s}")
                lane_terms.append(reg_of(prod, f"prod2_{p}_{s}"))
            terms.append(lane_terms)
        p3 = stage(p2, "p3")
        p4 = stage(p3, "p4")
        prev, ctl = p4, stage(p4, "p5")
        for level in range(tree_stages(simd)):
            nxt = []
            for p in range(pe):
                sums = []
                for k in range(0, len(terms[p]), TREE_FANIN):
                    value = tree_sum(terms[p][k:k + TREE_FANIN])
                    reg = Signal.like(value, name=f"tree{level}_{p}_{k // TREE_FANIN}")
                    with m.If(adv):
                        m.d.sync += reg.eq(value)
                    sums.append(reg)
                nxt.append(sums)
            terms = nxt
            prev, ctl = ctl, stage(ctl, f"t{level}")

        # Accumulate, in the cycle the last tree terms are valid (the bias ROM is read one
        # cycle earlier, on the group in flight).
        acc_shape = signed(self._acc_bits)
        if np.any(self._bias):
            bias_rom = Memory(shape=data.ArrayLayout(acc_shape, pe), depth=rom_depth(groups),
                              init=[[int(self._bias[gg * pe + p]) for p in range(pe)]
                                    for gg in range(groups)])
            m.submodules.bias = bias_rom
            bias_port = bias_rom.read_port()
            m.d.comb += [bias_port.addr.eq(prev["g"]), bias_port.en.eq(adv)]
            bias_of = [bias_port.data[p] for p in range(pe)]
        else:
            bias_of = [Const(0, acc_shape) for _ in range(pe)]
        pa = ctl
        acc = [Signal(acc_shape, name=f"acc{p}") for p in range(pe)]
        for p in range(pe):
            nxt = Mux(pa["first"], bias_of[p], acc[p]) + tree_sum(terms[p])
            with m.If(adv & pa["valid"]):
                m.d.sync += acc[p].eq(nxt)

        # Requantize + activation of a finished group (acc holds it for one cycle).
        done = stage({"valid": pa["valid"] & pa["last"], "g": pa["g"]}, "pq")
        if self._activation is None:
            codes, res = acc, done
        else:
            act = self._activation
            pre = [act.requantize(m, acc[p], [act.shifts[gg * pe + p] for gg in range(groups)],
                                  done["g"]) for p in range(pe)]
            if act.table is None:
                codes, res = pre, done
            else:
                pre_regs = []
                for p in range(pe):
                    reg = Signal.like(pre[p], name=f"pre{p}")
                    with m.If(adv):
                        m.d.sync += reg.eq(pre[p])
                    pre_regs.append(reg)
                lut = act.lut_memory()
                m.submodules.lut = lut
                codes = [act.lookup(m, reg, lut, adv) for reg in pre_regs]
                res = stage(stage(done, "pl"), "pd")

        # Each finished group is an output beat: output register with a skid buffer of one
        # group, so no ready signal crosses the stage combinationally.
        elem = self.o.payload.shape().elem_shape
        res_valid = res["valid"]
        skid_valid = Signal()
        skid = [Signal(elem, name=f"skid{p}") for p in range(pe)]
        m.d.comb += adv.eq(~skid_valid)

        def load(group):
            return [self.o.valid.eq(1)] + [self.o.payload[p].eq(group[p]) for p in range(pe)]

        with m.If(~self.o.valid | self.o.ready):
            with m.If(skid_valid):
                m.d.sync += load(skid)
                m.d.sync += skid_valid.eq(0)
            with m.Elif(res_valid):
                m.d.sync += load(codes)
            with m.Else():
                m.d.sync += self.o.valid.eq(0)
        with m.Elif(adv & res_valid):
            m.d.sync += [skid_valid.eq(1)] + [skid[p].eq(codes[p]) for p in range(pe)]
        return m


def shift_add_product(a, b):
    """Return ``a * b`` built from ``b``'s bits as shifted, gated copies of ``a`` summed in a
    balanced tree (a multiplier of adders that synthesis does not map to a DSP block)."""
    a = a.as_signed() if a.shape().signed else Cat(a, Const(0, 1)).as_signed()
    bits = b.shape().width
    terms = []
    for k in range(bits):
        term = Mux(b[k], a << k, 0)
        terms.append(-term if (k == bits - 1 and b.shape().signed) else term)
    width = a.shape().width + bits + 1
    return tree_sum(terms).as_signed()[:width].as_signed()


def simd_error(label, channels, kh, kw, simd, *, dense=False):
    """Return the message of an invalid ``simd`` for a window, or None when it is valid."""
    window = kh * kw * channels
    if dense:
        what = (f"in_features={window}" if kh * kw == 1 else
                f"in_features={window} ({channels} channels x {kh}x{kw} positions)")
    else:
        what = f"the window kh·kw·C = {kh}·{kw}·{channels} = {window}"
    if window % simd:
        return f"{label}: simd={simd} does not divide {what}"
    return None                 # every divisor of kh·kw·C splits as c·t·r (prime by prime)


def mac_resources(*, in_bits, w_bits, acc_bits, in_shape, kernel, out_channels, pe, simd,
                  rom_rows, bias, lut_bits):
    """Return the memories and multipliers of a :class:`MacStage`.

    ``{"multipliers", "memory_bits": {"ring", "weights", "bias", "lut"}, "weight_memories":
    [{"depth", "width", "bits", "large"}] (one per PE lane), "ring_banks": {"count", "depth",
    "width"}}``. ``large`` marks weight memories of at least :data:`LARGE_MEMORY_BITS` bits.
    """
    channels, _, width = in_shape
    kh, kw = kernel
    c_block, t, r = simd_split(channels, kh, kw, simd)
    bank_depth = (2 * kh // r) << (ceil_log2(-(-width // t)) + ceil_log2(channels // c_block))
    word = c_block * in_bits
    w_depth = rom_depth(rom_rows)
    w_width = simd * w_bits
    lanes = [{"depth": w_depth, "width": w_width, "bits": w_depth * w_width,
              "large": w_depth * w_width >= LARGE_MEMORY_BITS} for _ in range(pe)]
    return {
        "multipliers": pe * simd,
        "memory_bits": {
            "ring": r * t * bank_depth * word,
            "weights": sum(lane["bits"] for lane in lanes),
            "bias": rom_depth(out_channels // pe) * pe * acc_bits if bias else 0,
            "lut": lut_bits,
        },
        "weight_memories": lanes,
        "ring_banks": {"count": r * t, "depth": bank_depth, "width": word},
    }

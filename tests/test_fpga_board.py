"""fpga.board: board bitstreams of a tiny model (and of LeNet-5, slow)."""

import json

import pytest

from core.errors import UserError
from core.paths import CONFIG_DIR
from fpga.board import BOARD_DEVICES, BOARDS, build_board, main, uart_divisor
from fpga.devices import DEVICES
from fpga.link import model_reply_layout, reply_bytes
from fpga.tools import TOOL_ENV, missing_tools


def _needs(family):
    missing = missing_tools(*TOOL_ENV[family].values())
    return pytest.mark.skipif(missing is not None, reason=f"FPGA tools missing: {missing}")



def test_boards_name_known_devices():
    assert set(BOARD_DEVICES) == set(BOARDS)
    for board, (_, family) in BOARDS.items():
        assert DEVICES[BOARD_DEVICES[board]].family == family


@_needs("ice40")
def test_icebreaker_bitstream_tiny(tiny, tmp_path):
    meta, arrays = tiny
    summary = build_board("icebreaker", meta, arrays, None, tmp_path, baud=115200,
                          progress=lambda s: None)
    bitstream = tmp_path / "lenet_board.bin"
    assert summary["bitstream"] == str(bitstream)
    assert bitstream.stat().st_size > 100_000                  # a UP5K image is ~104 kB
    assert summary["divisor"] == 104 and summary["clock_hz"] == 12e6
    assert summary["reply_bytes"] == reply_bytes(model_reply_layout(meta))
    assert json.loads((tmp_path / "lenet_board.json").read_text()) == summary


@pytest.mark.slow
@_needs("ecp5")
def test_ulx3s_bitstream_tiny(tiny, tmp_path):
    meta, arrays = tiny
    summary = build_board("ulx3s-85f", meta, arrays, None, tmp_path, progress=lambda s: None)
    assert (tmp_path / "lenet_board.bit").stat().st_size > 100_000
    assert summary["divisor"] == round(25e6 / 115200)


@pytest.mark.slow
@_needs("ice40")
def test_icebreaker_bitstream_lenet5(tmp_path):
    # The full LeNet-5 (8 bits) with the config's up5k table: fits the iCEBreaker's UP5K.
    assert main(["--config", str(CONFIG_DIR / "lenet5.toml"), "--board", "icebreaker",
                 "--out", str(tmp_path)]) == 0
    assert (tmp_path / "lenet_board.bin").stat().st_size > 100_000
    summary = json.loads((tmp_path / "lenet_board.json").read_text())
    assert summary["load"] == ["f5", "f6", "out"]


def test_unknown_board(tiny, tmp_path):
    meta, arrays = tiny
    with pytest.raises(UserError) as exc:
        build_board("nope", meta, arrays, None, tmp_path / "out")
    assert str(exc.value) == "unknown board 'nope'; known: icebreaker, ulx3s-85f, upduino_v3"
    assert not (tmp_path / "out").exists()


def test_uart_divisor():
    assert uart_divisor(12e6, 115200) == 104 and uart_divisor(12e6, 4_000_000) == 3
    for baud, message in (
            (0, "--baud=0 must be a positive integer; leave it out for 115200"),
            (5_000_000, "--baud=5000000 is too fast for the 12 MHz board clock: the UART needs "
                        "at least 3 clock cycles per bit; give at most 4000000"),
            (2_600_000, "--baud=2600000 cannot be reached from the 12 MHz board clock: 5 cycles "
                        "per bit give 2,400,000 baud (7.7% off, more than 2%); give 2400000 or "
                        "2000000")):
        with pytest.raises(UserError) as exc:
            uart_divisor(12e6, baud)
        assert str(exc.value) == message


def test_bad_baud_writes_nothing(tiny, tmp_path):
    meta, arrays = tiny
    with pytest.raises(UserError):
        build_board("icebreaker", meta, arrays, None, tmp_path / "out", baud=0)
    assert not (tmp_path / "out").exists()

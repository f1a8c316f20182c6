"""Board bitstreams: the accelerator with its UART link on a board of ``amaranth-boards``.

``python -m fpga.board --config configs/lenet5.toml --board icebreaker [--baud 115200]
[--folding ... | --target-cycles N] [--load f5,f6] [--qmodel DIR] [--out build/<p>/board]``
writes the bitstream of :class:`fpga.gateware.BoardTop` (UART receiver, image FIFO, byte link,
UART transmitter; the byte protocol of :mod:`fpga.link`) with Amaranth's platform flow and the
YoWASP tools.
"""

import argparse
import json
import os
import shutil
import time
from contextlib import contextmanager
from pathlib import Path

from core.errors import cli

from .cli import add_model_arguments, load_argument, resolve_model
from .devices import spram_script
from .gateware import BoardTop
from .link import model_reply_layout, reply_bytes
from .tools import TOOL_ENV, say, tool_path

__all__ = ["BOARDS", "BOARD_DEVICES", "board_platform", "build_board", "main"]


def _icebreaker():
    from amaranth_boards.icebreaker import ICEBreakerPlatform
    return ICEBreakerPlatform


def _ulx3s_85f():
    from amaranth_boards.ulx3s import ULX3S_85F_Platform
    return ULX3S_85F_Platform


def _upduino_v3():
    from amaranth_boards.upduino_v3 import UpduinoV3Platform
    return UpduinoV3Platform


#: Boards: name → (platform class factory, family); all from amaranth-boards (imported only
#: when a board is built).
BOARDS = {
    "icebreaker": (_icebreaker, "ice40"),
    "upduino_v3": (_upduino_v3, "ice40"),
    "ulx3s-85f": (_ulx3s_85f, "ecp5"),
}

#: The :data:`fpga.devices.DEVICES` key of each board's FPGA (selects the config's
#: ``[hardware.devices.<device>]`` table and the DSP budget of derived foldings).
BOARD_DEVICES = {"icebreaker": "up5k", "upduino_v3": "up5k", "ulx3s-85f": "ecp5-85"}


def board_platform(board):
    """Return ``(platform, family)`` of ``board`` (a :data:`BOARDS` key)."""
    if board not in BOARDS:
        raise ValueError(f"unknown board {board!r}; known: {', '.join(sorted(BOARDS))}")
    factory, family = BOARDS[board]
    return factory()(), family


@contextmanager
def _toolchain(platform, family):
    """Point Amaranth's toolchain variables at the YoWASP tools while building.

    Programming tools the platform names (e.g. ``openFPGALoader``) are replaced by ``true``
    when missing: the build does not program the board.
    """
    env = {var: os.environ.get(var) or tool_path(name) for var, name in TOOL_ENV[family].items()}
    for name in platform.required_tools:
        var = name.upper().replace("-", "_")
        if var not in env and not os.environ.get(var) and shutil.which(name) is None:
            env[var] = shutil.which("true")
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def build_board(board, meta, arrays, folding=None, out_dir="build/board", *, baud=115200,
                name="lenet_board", load=(), progress=say):
    """Build the bitstream of :class:`~fpga.gateware.BoardTop` for ``board``; return a summary.

    The summary (also written as ``<out_dir>/<name>.json``) has ``board``, ``bitstream``
    (path), ``baud``, ``clock_hz``, ``divisor``, ``seconds``, ``folding``, ``load`` and
    ``reply_bytes``. The tools are the YoWASP ones, or those the ``YOSYS``/``NEXTPNR_*``/
    ``*PACK`` environment variables name.
    """
    platform, family = board_platform(board)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    start = time.monotonic()
    progress(f"[board {board}] building {name} (yosys, nextpnr, pack) in {out}")
    overrides = {}
    if load and spram_script(family):
        overrides["script_after_read"] = spram_script(family)
    if family == "ice40" and platform.device.startswith("iCE40UP"):
        overrides["synth_opts"] = "-dsp" + (" -spram" if load else "")
    with _toolchain(platform, family):
        platform.build(BoardTop(meta, arrays, folding, baud=baud, load=load), name=name,
                       build_dir=str(out), do_program=False, **overrides)
    suffix = ".bin" if family == "ice40" else ".bit"
    bitstream = out / f"{name}{suffix}"
    seconds = time.monotonic() - start
    clock = platform.default_clk_frequency
    summary = {
        "board": board, "bitstream": str(bitstream), "baud": baud, "clock_hz": clock,
        "divisor": round(clock / baud), "seconds": round(seconds, 1),
        "folding": folding, "load": list(load),
        "reply_bytes": reply_bytes(model_reply_layout(meta)),
    }
    (out / f"{name}.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    progress(f"[board {board}] {bitstream} ({seconds:.0f} s)")
    return summary


@cli
def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m fpga.board",
                                     description="Build a board bitstream: accelerator + UART.")
    add_model_arguments(parser)
    parser.add_argument("--board", required=True, choices=sorted(BOARDS))
    parser.add_argument("--baud", type=int, default=115200, help="UART baud rate (115200)")
    args = parser.parse_args(argv)
    meta, arrays, folding, _, preset_dir = resolve_model(parser, args, BOARD_DEVICES[args.board])
    out = Path(args.out) if args.out else preset_dir / "board" / args.board
    build_board(args.board, meta, arrays, folding, out, baud=args.baud,
                load=load_argument(parser, args, meta))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

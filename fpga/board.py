"""Board bitstreams: the accelerator with its UART link on a board of ``amaranth-boards``.

``python -m fpga.board --config configs/lenet5.toml --board icebreaker [--baud 115200]
[--folding ... | --target-cycles N] [--load f5,f6] [--qmodel DIR] [--out build/<p>/board]``
writes the bitstream of :class:`fpga.gateware.BoardTop` (UART receiver, image FIFO, byte link,
UART transmitter; the byte protocol of :mod:`fpga.link`) with Amaranth's platform flow and the
YoWASP tools.
"""

import hashlib
import os
import shutil
import subprocess
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

from core.errors import UserError, cli
from core.provenance import (
    BuildLock,
    changed,
    describe_changes,
    read_json,
    sha256_json,
    write_bytes,
    write_json,
)
from hw.folding import check_folding, check_load

from .cli import ArgumentParser, add_model_arguments, load_argument, output_folder, resolve_model
from .devices import spram_script
from .dsp import with_products
from .gateware import BoardTop
from .link import model_reply_layout, reply_bytes
from .tools import TOOL_ENV, ToolError, say, tail_text, tool_path, tool_versions

__all__ = ["BOARDS", "BOARD_DEVICES", "MAX_BAUD_ERROR", "board_platform", "uart_divisor",
           "build_board", "main"]

#: The largest relative difference between the baud rate asked for and the one the divisor
#: gives (clock / divisor) that a UART on the other end still reads reliably.
MAX_BAUD_ERROR = 0.02


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
        raise UserError(f"unknown board {board!r}; known: {', '.join(sorted(BOARDS))}")
    factory, family = BOARDS[board]
    try:
        return with_products(factory(), family)(), family
    except ImportError:
        raise UserError("amaranth-boards is missing; install it with "
                        "'.venv/bin/pip install -e .[fpga]'") from None


def uart_divisor(clock_hz, baud):
    """Return the UART divisor (clock cycles per bit) of ``baud`` at ``clock_hz``.

    Raise :class:`UserError` unless ``baud`` is a positive integer whose divisor is at least 3
    (the receiver's minimum) and gives a rate within :data:`MAX_BAUD_ERROR` of ``baud``."""
    if not isinstance(baud, int) or isinstance(baud, bool) or baud <= 0:
        raise UserError(f"--baud={baud!r} must be a positive integer; leave it out for 115200")
    divisor = round(clock_hz / baud)
    fastest = int(clock_hz // 3)
    if divisor < 3:
        raise UserError(f"--baud={baud} is too fast for the {clock_hz / 1e6:g} MHz board clock: "
                        f"the UART needs at least 3 clock cycles per bit; give at most {fastest}")
    error = abs(clock_hz / divisor - baud) / baud
    if error > MAX_BAUD_ERROR:
        raise UserError(f"--baud={baud} cannot be reached from the {clock_hz / 1e6:g} MHz board "
                        f"clock: {divisor} cycles per bit give {clock_hz / divisor:,.0f} baud "
                        f"({100 * error:.1f}% off, more than {100 * MAX_BAUD_ERROR:g}%); give "
                        f"{round(clock_hz / divisor)} or {round(clock_hz / (divisor + 1))}")
    return divisor


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


def _require_board_tools(family):
    for var, name in TOOL_ENV[family].items():
        given = os.environ.get(var)
        if given and shutil.which(given) is None:
            raise ToolError(f"{var}={given} is not an executable program; point it at {name} "
                            f"or unset it to use the YoWASP build")
        if not given:
            try:
                tool_path(name)
            except FileNotFoundError as exc:
                raise ToolError(str(exc)) from None


def _plan_digest(plan):
    h = hashlib.sha256()
    for name in sorted(plan.files):
        content = plan.files[name]
        h.update(f"{name}\0".encode())
        h.update(content.encode("utf-8") if isinstance(content, str) else bytes(content))
    return h.hexdigest()


def build_board(board, meta, arrays, folding=None, out_dir="build/board", *, baud=115200,
                name="lenet_board", load=(), progress=say, reuse=False):
    """Build the bitstream of :class:`~fpga.gateware.BoardTop` for ``board``; return a summary.

    The summary (also written as ``<out_dir>/<name>.json``) has ``board``, ``bitstream``
    (path), ``baud``, ``clock_hz``, ``divisor``, ``seconds``, ``folding``, ``load``,
    ``reply_bytes`` and ``provenance``: ``design`` (SHA-256 of the files Amaranth's build plan
    holds: the design's RTLIL, constraints and scripts), ``options`` (board, baud) and
    ``tools`` (Yosys and nextpnr versions). The tools are the YoWASP ones, or those the
    ``YOSYS``/``NEXTPNR_*``/``*PACK`` environment variables name.

    Every argument (board, baud: :func:`uart_divisor`, folding, load, tools) is checked before
    anything is written. The build runs in a temporary folder under ``out_dir`` and its files
    are renamed into place only when it succeeds; the folder's
    :class:`~core.provenance.BuildLock` is held meanwhile. With ``reuse``, an existing summary
    recorded for the same inputs is returned without building.
    """
    platform, family = board_platform(board)
    clock = platform.default_clk_frequency
    divisor = uart_divisor(clock, baud)
    folding = check_folding(meta, folding)
    load = check_load(meta, load)
    out = output_folder(out_dir)
    _require_board_tools(family)
    overrides = {}
    if load and spram_script(family):
        overrides["script_after_read"] = spram_script(family)
    if family == "ice40" and platform.device.startswith("iCE40UP"):
        overrides["synth_opts"] = "-dsp" + (" -spram" if load else "")
    with BuildLock(out, "board"):
        start = time.monotonic()
        with _toolchain(platform, family):
            plan = platform.build(BoardTop(meta, arrays, folding, baud=baud, load=load),
                                  name=name, do_build=False, do_program=False, **overrides)
        record = {"design": _plan_digest(plan),
                  "options": sha256_json({"board": board, "baud": baud, "name": name}),
                  "tools": sha256_json(tool_versions(family))}
        json_path = out / f"{name}.json"
        previous = read_json(json_path)
        if previous is not None:
            names = changed(previous.get("provenance"), record)
            if reuse and not names and Path(previous.get("bitstream", "")).is_file():
                progress(f"[board {board}] {json_path} was made from the same inputs; kept")
                return previous
            progress(f"[board {board}] rebuilding {json_path}: {describe_changes(names)}")
        progress(f"[board {board}] building {name} (yosys, nextpnr, pack) in {out}")
        with tempfile.TemporaryDirectory(dir=out, prefix=".build-") as tmp:
            with _toolchain(platform, family):
                try:
                    plan.execute_local(tmp)
                except subprocess.CalledProcessError as exc:
                    logs = sorted(Path(tmp).glob("*.rpt")) + sorted(Path(tmp).glob("*.tim"))
                    last = [ln for ln in tail_text(logs[-1]).splitlines() if ln.strip()] \
                        if logs else []
                    raise ToolError(f"the {board} build failed (exit {exc.returncode})"
                                    f"{': ' + last[-1][:200] if last else ''}; nothing in "
                                    f"{out} was changed") from None
            for path in sorted(Path(tmp).iterdir()):
                # <name>.json there is Yosys's netlist; ours (the summary) takes its name.
                if path.is_file() and path.name != json_path.name:
                    write_bytes(out / path.name, path.read_bytes())
        suffix = ".bin" if family == "ice40" else ".bit"
        bitstream = out / f"{name}{suffix}"
        seconds = time.monotonic() - start
        summary = {
            "board": board, "bitstream": str(bitstream), "baud": baud, "clock_hz": clock,
            "divisor": divisor, "seconds": round(seconds, 1),
            "folding": folding, "load": list(load),
            "reply_bytes": reply_bytes(model_reply_layout(meta)),
            "provenance": record,
        }
        write_json(json_path, summary)
    progress(f"[board {board}] {bitstream} ({seconds:.0f} s)")
    return summary


@cli
def main(argv=None):
    parser = ArgumentParser(prog="python -m fpga.board",
                            description="Build a board bitstream: accelerator + UART.")
    add_model_arguments(parser)
    parser.add_argument("--board", required=True, choices=sorted(BOARDS))
    parser.add_argument("--baud", type=int, default=115200, help="UART baud rate (115200)")
    parser.add_argument("--force", action="store_true",
                        help="build even when the bitstream was made from the same inputs")
    args = parser.parse_args(argv)
    platform, _ = board_platform(args.board)
    uart_divisor(platform.default_clk_frequency, args.baud)
    out = output_folder(args.out) if args.out else None
    meta, arrays, folding, _, preset_dir = resolve_model(args, BOARD_DEVICES[args.board])
    load = load_argument(args, meta)
    out = out if out is not None else output_folder(preset_dir / "board" / args.board)
    build_board(args.board, meta, arrays, folding, out, baud=args.baud, load=load,
                reuse=not args.force)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Host side of the UART link: send images, read classes and scores, compare with golden.

``python -m fpga.host --config configs/lenet5.toml --board icebreaker --port /dev/ttyUSB1
[--baud 115200] [--images 16] [--images-file FILE]`` classifies images on a board built by
:mod:`fpga.board` (the byte protocol of :mod:`fpga.link`) and compares every class and score
with the golden model.
``python -m fpga.host --self-test [--config ... | --qmodel DIR]`` needs no hardware: it
simulates the UART top (:class:`fpga.gateware.UartAccelerator`) in Amaranth's simulator, drives
its ``rx`` pin with the bytes this module encodes, decodes its ``tx`` pin and compares with the
golden model (a small random model unless a model is given).
"""

import time
from pathlib import Path

import numpy as np
from amaranth.sim import Simulator

from core.errors import UserError, cli
from golden import IntegerModel, random_images, random_qmodel

from .board import BOARD_DEVICES, BOARDS
from .cli import ArgumentParser, add_model_arguments, load_argument, positive, resolve_model
from .gateware import ByteLink, UartAccelerator
from .link import decode_reply, encode_image, model_reply_layout, reply_bytes

__all__ = ["SerialLink", "simulate_uart", "check", "read_images", "check_images",
           "MIN_DIVISOR", "main"]

#: The fewest clock cycles per bit the UART receiver (:class:`fpga.uart.UartRx`) takes.
MIN_DIVISOR = 3


class SerialLink:
    """The board of the integer model ``meta`` on a serial port (needs ``pyserial``).

    Send the weights first with :meth:`load_weights` when the bitstream was built with
    ``--load``. A missing pyserial, a port that cannot be opened, a baud rate the port refuses
    and a board that does not answer within ``timeout`` seconds each raise
    :class:`UserError`.
    """
    def __init__(self, meta, port, baud=115200, timeout=5.0):
        try:
            import serial
        except ImportError:
            raise UserError("pyserial is missing, and talking to a board needs it: "
                            "'.venv/bin/pip install pyserial' (or --self-test, which needs no "
                            "board)") from None
        self._meta = meta
        self._reply = model_reply_layout(meta)
        self._port = port
        self._timeout = timeout
        try:
            self._serial = serial.Serial(port, baud, timeout=timeout, write_timeout=timeout)
            self._serial.reset_input_buffer()
        except ValueError as exc:
            raise UserError(f"--baud={baud}: the port refuses it ({exc})") from None
        except (OSError, serial.SerialException) as exc:
            raise UserError(f"--port {port}: cannot open it ({exc}); check the device name "
                            f"(e.g. /dev/ttyUSB1) and its permissions") from None
        self._errors = (OSError, serial.SerialException)

    def _write(self, data):
        try:
            self._serial.write(data)
            self._serial.flush()
        except self._errors as exc:
            raise UserError(f"--port {self._port}: writing failed ({exc}); check the "
                            f"cable and that the bitstream is loaded") from None

    def load_weights(self, weights):
        """Send the weight bytes (:meth:`fpga.gateware.ByteLink.weight_stream`), once after the
        bitstream is loaded."""
        self._write(weights)

    def classify(self, image):
        """Send one image; return its decoded reply (``{"cls", "scores"}``)."""
        total = reply_bytes(self._reply)
        self._write(encode_image(self._meta, image))
        try:
            reply = self._serial.read(total)
        except self._errors as exc:
            raise UserError(f"--port {self._port}: reading failed ({exc})") from None
        if len(reply) != total:
            raise UserError(f"no answer from the board on {self._port}: {len(reply)} of {total} "
                            f"reply bytes within {self._timeout:g} s; check the port, the baud "
                            f"rate and that the bitstream is loaded")
        return decode_reply(self._reply, reply)

    def close(self):
        """Close the port."""
        self._serial.close()


def simulate_uart(meta, arrays, images, folding=None, *, divisor=4, max_cycles=None, load=()):
    """Simulate :class:`~fpga.gateware.UartAccelerator` on ``images``; return the decoded
    replies (``{"cls", "scores"}`` each).

    The testbench writes the weight bytes (with ``load``) and each image's bytes bit by bit on
    ``rx`` (8N1, ``divisor`` cycles per bit, back to back) and decodes the bytes on ``tx`` the
    way a UART does.
    """
    dut = UartAccelerator(meta, arrays, folding, divisor=divisor, load=load)
    layout = dut.link.reply
    total = reply_bytes(layout)
    sent = dut.link.weight_stream() + b"".join(encode_image(meta, img) for img in images)
    want = total * len(images)
    received = bytearray()
    if max_cycles is None:
        max_cycles = 40 * divisor * (len(sent) + want) + 200_000 * len(images)

    async def host_tx(ctx):
        ctx.set(dut.rx, 1)
        await ctx.tick().repeat(4 * divisor)
        for byte in sent:
            for bit in [0] + [(byte >> i) & 1 for i in range(8)] + [1]:
                ctx.set(dut.rx, bit)
                await ctx.tick().repeat(divisor)

    async def host_rx(ctx):
        cycle = 0
        while len(received) < want:
            _, _, tx = await ctx.tick().sample(dut.tx)
            cycle += 1
            if cycle > max_cycles:
                raise AssertionError(f"received {len(received)} of {want} reply bytes after "
                                     f"{max_cycles} cycles")
            if tx:
                continue
            await ctx.tick().repeat(divisor // 2)          # middle of the start bit
            byte = 0
            for i in range(8):
                await ctx.tick().repeat(divisor)
                byte |= ctx.get(dut.tx) << i
            await ctx.tick().repeat(divisor)               # stop bit
            cycle += divisor // 2 + 9 * divisor
            received.append(byte)
        assert not ctx.get(dut.overrun), "UART receive overrun"

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(host_tx, background=True)
    sim.add_testbench(host_rx)
    sim.run()
    return [decode_reply(layout, bytes(received[n * total:(n + 1) * total]))
            for n in range(len(images))]


def check(meta, arrays, images, replies):
    """Compare decoded replies with the golden model; return ``(mismatches, golden_result)``.

    ``mismatches`` lists the indices of the images whose class or any score differs.
    """
    expect = IntegerModel(meta, arrays).run(np.asarray(images))
    bad = [n for n, reply in enumerate(replies)
           if reply["cls"] != int(expect["classes"][n])
           or reply["scores"] != [int(v) for v in expect["scores"][n]]]
    return bad, expect


def check_images(meta, images, source):
    """Raise :class:`UserError` unless every image of ``images`` is one the byte protocol
    sends for ``meta`` (shape, 8-bit codes); ``source`` names where they came from."""
    for n, image in enumerate(images):
        try:
            encode_image(meta, image)
        except (ValueError, TypeError) as exc:
            raise UserError(f"{source}: image {n}: {exc}") from None


def read_images(path, count):
    """Return ``(images, labels)``: the first ``count`` images of an ``.npy`` or ``.npz`` file.

    An ``.npy`` holds uint8 images ``[N, H, W]`` or ``[N, C, H, W]`` (labels None); an ``.npz``
    holds ``images`` (and optionally ``labels``), or ``test_images`` and ``test_labels`` as the
    data cache ``build/data/mnist.npz`` does.
    """
    path = Path(path)
    if not path.is_file():
        raise UserError(f"--images-file {path}: no such file; give an .npy of uint8 images or "
                        f"an .npz with 'images' (and 'labels')")
    try:
        if path.suffix == ".npy":
            return np.load(path, allow_pickle=False)[:count], None
        with np.load(path, allow_pickle=False) as z:
            for images, labels in (("images", "labels"), ("test_images", "test_labels")):
                if images in z:
                    return z[images][:count], (z[labels][:count] if labels in z else None)
    except (OSError, ValueError, EOFError) as exc:
        raise UserError(f"--images-file {path}: unreadable ({exc}); give an .npy of uint8 "
                        f"images or an .npz with 'images' (and 'labels')") from None
    raise UserError(f"--images-file {path}: no 'images' or 'test_images' array; give an .npz "
                    f"with 'images' (and 'labels')")


#: The layers of the random model of ``--self-test`` without a model.
SELF_TEST_LAYERS = [{"kind": "conv", "out_channels": 2, "kernel": 3},
                    {"kind": "pool", "mode": "max", "size": 2},
                    {"kind": "dense", "out_features": 4}]


@cli
def main(argv=None):
    parser = ArgumentParser(prog="python -m fpga.host", description=__doc__.split("\n")[0])
    add_model_arguments(parser)
    parser.add_argument("--port", help="serial port of the board, e.g. /dev/ttyUSB1")
    parser.add_argument("--board", choices=sorted(BOARDS),
                        help="the board the bitstream was built for: its device's config table "
                             "gives the folding and loaded layers, as in fpga.board")
    parser.add_argument("--baud", type=int, default=115200)
    parser.add_argument("--timeout", type=float, default=5.0,
                        help="seconds to wait for each reply (5)")
    parser.add_argument("--images", type=int, default=16, help="how many images (16)")
    parser.add_argument("--images-file",
                        help=".npy of uint8 images or .npz with 'images' (and 'labels'), e.g. "
                             "build/data/mnist.npz (its test split); default: random images")
    parser.add_argument("--self-test", action="store_true",
                        help="no hardware: simulate the UART top (random model without "
                             "--qmodel/--config)")
    parser.add_argument("--divisor", type=int, default=None,
                        help=f"clock cycles per bit in --self-test (4, at least {MIN_DIVISOR})")
    args = parser.parse_args(argv)
    if args.self_test and args.port:
        raise UserError("give --port (a board) or --self-test (simulation), not both")
    if not args.self_test and not args.port:
        raise UserError("give --port (a board) or --self-test (simulation)")
    positive("--images", args.images, integer=True, default="16")
    if args.self_test:
        divisor = 4 if args.divisor is None else args.divisor
        if divisor < MIN_DIVISOR:
            raise UserError(f"--divisor={divisor} must be at least {MIN_DIVISOR} clock cycles "
                            f"per bit (the UART receiver's minimum); leave it out for 4")
    elif args.divisor is not None:
        raise UserError("--divisor applies to --self-test only; a board's divisor is its clock "
                        "/ --baud")
    else:
        positive("--baud", args.baud, integer=True, default="115200")
        positive("--timeout", args.timeout, default="5 seconds")
    if args.config or args.qmodel:
        device = BOARD_DEVICES[args.board] if args.board else None
        meta, arrays, folding, _, _ = resolve_model(args, device)
    elif args.self_test:
        if args.folding or args.target_cycles or args.load:
            raise UserError("--folding, --target-cycles and --load need a model: give "
                            "--config or --qmodel")
        meta, arrays = random_qmodel(SELF_TEST_LAYERS, 0, height=6, pad=1)
        folding = None
    else:
        raise UserError("give --config or --qmodel with --port")
    load = load_argument(args, meta)
    if args.images_file:
        images, labels = read_images(args.images_file, args.images)
        if len(images) < args.images:
            raise UserError(f"--images={args.images} but {args.images_file} holds "
                            f"{len(images)}; give at most {len(images)}")
        check_images(meta, images, f"--images-file {args.images_file}")
    else:
        images, labels = random_images(meta, args.images, 0), None
    start = time.monotonic()
    if args.self_test:
        replies = simulate_uart(meta, arrays, images, folding, divisor=divisor, load=load)
    else:
        link = SerialLink(meta, args.port, args.baud, timeout=args.timeout)
        try:
            if load:
                link.load_weights(ByteLink(meta, arrays, folding, load=load).weight_stream())
            replies = [link.classify(img) for img in images]
        finally:
            link.close()
    seconds = time.monotonic() - start
    bad, expect = check(meta, arrays, images, replies)
    for n, reply in enumerate(replies):
        label = f" label {int(labels[n])}" if labels is not None else ""
        mark = "ok" if n not in bad else f"MISMATCH (golden {int(expect['classes'][n])})"
        print(f"image {n}: class {reply['cls']}{label} {mark}")
    where = "simulated UART" if args.self_test else args.port
    print(f"{len(replies) - len(bad)}/{len(replies)} replies equal to golden ({where}, "
          f"{seconds:.1f} s)")
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main())

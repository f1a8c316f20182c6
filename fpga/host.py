"""Host side of the UART link (:mod:`fpga.board`): send images, read classes and scores.

Protocol: the host sends an image as ``H·W·C`` pixel bytes (row-major, the ``C`` channels of a
position together); the board answers ``1 + K·B`` bytes: the class, then ``K`` scores of
``B = ceil(score_bits / 8)`` bytes each, little-endian two's complement.

``python -m fpga.host --qmodel build/lenet5 --port /dev/ttyUSB1 [--baud 115200] [--images 16]``
classifies test images on the board and compares every class and score with the golden model.
``python -m fpga.host --self-test [--qmodel DIR]`` needs no hardware: it simulates the UART top
(:class:`fpga.board.UartAccelerator`) in Amaranth's simulator, drives its ``rx`` pin with the
bytes this module encodes, decodes its ``tx`` pin and compares with the golden model (a small
random model unless ``--qmodel`` is given).
"""

import argparse
import sys
import time

import numpy as np

from .board import UartAccelerator, reply_format

__all__ = ["encode_image", "decode_reply", "SerialLink", "simulate_uart", "check", "main"]


def encode_image(meta, image):
    """Return the bytes the host sends for one image (``[H, W]`` or ``[C, H, W]`` codes)."""
    inp = meta["input"]
    c, h, w = inp.get("channels", 1), inp["height"], inp["width"]
    image = np.asarray(image)
    if image.shape == (h, w) and c == 1:
        image = image[None]
    if image.shape != (c, h, w):
        raise ValueError(f"image must have shape {(h, w) if c == 1 else (c, h, w)}, "
                         f"not {image.shape}")
    if image.min() < 0 or image.max() > 255:
        raise ValueError("the byte protocol sends 8-bit unsigned pixel codes")
    return image.transpose(1, 2, 0).astype(np.uint8).tobytes()


def decode_reply(meta, data):
    """Return ``{"cls": int, "scores": [int, ...]}`` of one answer."""
    k, nb, total = reply_format(meta)
    if len(data) != total:
        raise ValueError(f"an answer has {total} bytes, got {len(data)}")
    scores = [int.from_bytes(data[1 + j * nb:1 + (j + 1) * nb], "little", signed=True)
              for j in range(k)]
    return {"cls": data[0], "scores": scores}


class SerialLink:
    """The board on a serial port (needs ``pyserial``)."""
    def __init__(self, meta, port, baud=115200, timeout=5.0):
        """Open ``port``; send the weights first with :meth:`load_weights` if the board needs
        them (bitstream built with ``--load``)."""
        try:
            import serial
        except ImportError:
            raise RuntimeError("pyserial is missing: '.venv/bin/pip install pyserial'") from None
        self._meta = meta
        self._serial = serial.Serial(port, baud, timeout=timeout)
        self._serial.reset_input_buffer()

    def load_weights(self, data):
        """Send the weight bytes (once after the bitstream is loaded)."""
        self._serial.write(data)
        self._serial.flush()

    def classify(self, image):
        """Send one image, return its decoded answer."""
        total = reply_format(self._meta)[2]
        self._serial.write(encode_image(self._meta, image))
        data = self._serial.read(total)
        if len(data) != total:
            raise TimeoutError(f"the board sent {len(data)} of {total} answer bytes; check "
                               f"the port, the baud rate and that the bitstream is loaded")
        return decode_reply(self._meta, data)

    def close(self):
        self._serial.close()


def simulate_uart(meta, arrays, images, folding=None, *, divisor=4, max_cycles=None, load=()):
    """Simulate :class:`~fpga.board.UartAccelerator` on ``images``; return the decoded answers.

    The testbench writes each image's bytes bit by bit on ``rx`` (8N1, ``divisor`` cycles per
    bit, back to back) and decodes the bytes on ``tx`` the way a UART would.
    """
    from amaranth.sim import Simulator
    dut = UartAccelerator(meta, arrays, folding, divisor=divisor, load=load)
    k, nb, total = reply_format(meta)
    stream = dut.link.weight_stream() + b"".join(encode_image(meta, img) for img in images)
    want = total * len(images)
    received = bytearray()
    if max_cycles is None:
        max_cycles = 40 * divisor * (len(stream) + want) + 200_000 * len(images)

    async def host_tx(ctx):
        ctx.set(dut.rx, 1)
        await ctx.tick().repeat(4 * divisor)
        for byte in stream:
            for bit in [0] + [(byte >> i) & 1 for i in range(8)] + [1]:
                ctx.set(dut.rx, bit)
                await ctx.tick().repeat(divisor)

    async def host_rx(ctx):
        cycle = 0
        while len(received) < want:
            _, _, tx = await ctx.tick().sample(dut.tx)
            cycle += 1
            if cycle > max_cycles:
                raise AssertionError(f"received {len(received)} of {want} answer bytes after "
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
    return [decode_reply(meta, bytes(received[n * total:(n + 1) * total]))
            for n in range(len(images))]


def check(meta, arrays, images, answers):
    """Compare answers with the golden model; return ``(mismatches, golden_result)``."""
    import golden
    expect = golden.IntegerModel(meta, arrays).run(np.asarray(images))
    bad = []
    for n, ans in enumerate(answers):
        if ans["cls"] != int(expect["classes"][n]) or \
                ans["scores"] != [int(v) for v in expect["scores"][n]]:
            bad.append(n)
    return bad, expect


def _random_model(seed=0):
    from golden import random_qmodel
    spec = [{"kind": "conv", "out_channels": 2, "kernel": 3},
            {"kind": "pool", "mode": "max", "size": 2},
            {"kind": "dense", "out_features": 4}]
    return random_qmodel(spec, seed, height=6, pad=1)


def _images(meta, n, config):
    if config is not None:
        try:
            from quant.data import load_dataset
            split = load_dataset(config.dataset).test
            return split.images[:n], split.labels[:n]
        except Exception as exc:                            # noqa: BLE001
            print(f"no test images ({exc}); using random images", file=sys.stderr)
    from golden import random_images
    return random_images(meta, n, 0), None


def main(argv=None):
    from .synth import add_model_arguments
    parser = argparse.ArgumentParser(prog="python -m fpga.host", description=__doc__.split("\n")[0])
    add_model_arguments(parser)
    parser.add_argument("--port", help="serial port of the board, e.g. /dev/ttyUSB1")
    parser.add_argument("--baud", type=int, default=115200)
    parser.add_argument("--images", type=int, default=16, help="how many images (16)")
    parser.add_argument("--self-test", action="store_true",
                        help="no hardware: simulate the UART top (random model without "
                             "--qmodel/--config)")
    parser.add_argument("--divisor", type=int, default=4,
                        help="clock cycles per bit in --self-test (4)")
    args = parser.parse_args(argv)
    if not args.self_test and not args.port:
        parser.error("give --port (a board) or --self-test (simulation)")
    config = None
    if args.config or args.qmodel:
        from .synth import resolve_model
        meta, arrays, folding, _ = resolve_model(parser, args)
        if args.config:
            from core.config import load_config
            config = load_config(args.config)
    else:
        if not args.self_test:
            parser.error("give --config or --qmodel with --port")
        meta, arrays = _random_model()
        folding = None
    load = ()
    if args.load:
        from .synth import load_argument
        load = load_argument(parser, args, meta)
    images, labels = _images(meta, args.images, config)
    start = time.monotonic()
    if args.self_test:
        answers = simulate_uart(meta, arrays, images, folding, divisor=args.divisor, load=load)
    else:
        link = SerialLink(meta, args.port, args.baud)
        try:
            if load:
                from .board import ByteLink
                link.load_weights(ByteLink(meta, arrays, folding, load=load).weight_stream())
            answers = [link.classify(img) for img in images]
        finally:
            link.close()
    seconds = time.monotonic() - start
    bad, expect = check(meta, arrays, images, answers)
    for n, ans in enumerate(answers):
        label = f" label {int(labels[n])}" if labels is not None else ""
        mark = "ok" if n not in bad else f"MISMATCH (golden {int(expect['classes'][n])})"
        print(f"image {n}: class {ans['cls']}{label} {mark}")
    where = "simulated UART" if args.self_test else args.port
    print(f"{len(answers) - len(bad)}/{len(answers)} answers equal to golden ({where}, "
          f"{seconds:.1f} s)")
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main())

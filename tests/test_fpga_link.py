"""fpga.link: the reply layout, decoding replies, encoding images."""

import numpy as np
import pytest
from amaranth.hdl import signed, unsigned
from amaranth.lib import data

from fpga.link import decode_reply, encode_image, model_reply_layout, reply_bytes, reply_layout
from golden import random_qmodel
from hw.output import output_layout

TINY = [{"kind": "conv", "out_channels": 2, "kernel": 3},
        {"kind": "pool", "mode": "max", "size": 2},
        {"kind": "dense", "out_features": 4}]


@pytest.fixture(scope="module")
def tiny():
    return random_qmodel(TINY, 3, height=6, pad=1)


def test_reply_layout_is_class_byte_then_whole_byte_scores():
    layout = reply_layout(output_layout(10, 24))          # LeNet-5: docs/fpga.md
    assert layout == data.StructLayout({"cls": unsigned(8),
                                        "scores": data.ArrayLayout(signed(24), 10)})
    assert reply_bytes(layout) == 31
    assert reply_layout(output_layout(3, 16))["scores"].shape == data.ArrayLayout(signed(16), 3)


def test_reply_layout_rejects_more_than_256_classes():
    with pytest.raises(ValueError) as exc:
        reply_layout(output_layout(257, 16))
    assert str(exc.value) == ("the byte protocol sends the class as one byte; num_classes=257 "
                              "exceeds 256")


def test_model_reply_layout(tiny):
    meta, _ = tiny
    layout = model_reply_layout(meta)
    nb = (meta["output"]["score_bits"] + 7) // 8
    assert reply_bytes(layout) == 1 + 4 * nb
    assert layout == reply_layout(output_layout(4, meta["output"]["score_bits"]))


def test_decode_reply_reads_little_endian_twos_complement():
    layout = reply_layout(output_layout(4, 12))          # 2 bytes per score
    scores = [-5, 7, -(2 ** 15), 2 ** 15 - 1]
    reply = bytes([2]) + b"".join(v.to_bytes(2, "little", signed=True) for v in scores)
    assert decode_reply(layout, reply) == {"cls": 2, "scores": scores}


def test_decode_reply_is_the_layouts_const():
    layout = reply_layout(output_layout(3, 9))
    value = layout.const({"cls": 1, "scores": [-256, 255, -1]})
    reply = value.as_bits().to_bytes(reply_bytes(layout), "little")
    assert decode_reply(layout, reply) == {"cls": 1, "scores": [-256, 255, -1]}


def test_decode_reply_rejects_wrong_length():
    layout = reply_layout(output_layout(4, 12))
    with pytest.raises(ValueError) as exc:
        decode_reply(layout, b"abc")
    assert str(exc.value) == "a reply has 9 bytes, got 3"


def test_encode_image(tiny):
    meta, _ = tiny
    image = np.arange(36, dtype=np.uint8).reshape(6, 6)
    assert encode_image(meta, image) == bytes(range(36))
    assert encode_image(meta, image[None]) == bytes(range(36))
    with pytest.raises(ValueError) as exc:
        encode_image(meta, image[:5])
    assert str(exc.value) == "image must have shape (6, 6), not (5, 6)"
    with pytest.raises(ValueError) as exc:
        encode_image(meta, np.full((6, 6), 256))
    assert str(exc.value) == "the byte protocol sends 8-bit unsigned pixel codes"

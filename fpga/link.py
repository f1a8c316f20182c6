"""The byte protocol between a host and the accelerator: images out, answers back.

- The host sends one image as ``H·W·C`` bytes: the raw 8-bit pixel codes, row-major, the ``C``
  channels of a position together (:func:`encode_image`).
- The board answers one reply per image, the bytes of :func:`reply_layout` lowest first: the
  class (one byte), then the ``K`` scores, each sign-extended to ``B = ceil(score_bits / 8)``
  bytes, little-endian two's complement: ``1 + K·B`` bytes.

The gateware serializer (:class:`fpga.gateware.ReplySerializer`) fills that layout and the host
(:func:`decode_reply`) reads it: one description of the bit positions for both sides.
"""

import numpy as np
from amaranth.hdl import Shape, signed, unsigned
from amaranth.lib import data

from hw.output import output_layout

__all__ = ["reply_layout", "model_reply_layout", "reply_bytes", "encode_image", "decode_reply"]


def reply_layout(layout):
    """Return the reply layout of an accelerator whose output payload layout is ``layout``.

    ``layout`` is :func:`hw.output.output_layout` (``cls``, ``scores``, ``last``); the reply is
    ``StructLayout({"cls": unsigned(8), "scores": ArrayLayout(signed(8·B), K)})``, a whole
    number of bytes.
    """
    scores = layout["scores"].shape
    if scores.length > 256:
        raise ValueError(f"the byte protocol sends the class as one byte; "
                         f"num_classes={scores.length} exceeds 256")
    score_bytes = (Shape.cast(scores.elem_shape).width + 7) // 8
    return data.StructLayout({"cls": unsigned(8),
                              "scores": data.ArrayLayout(signed(8 * score_bytes), scores.length)})


def model_reply_layout(meta):
    """Return :func:`reply_layout` of the accelerator of the integer model ``meta``."""
    return reply_layout(output_layout(int(meta["num_classes"]),
                                      int(meta["output"]["score_bits"])))


def reply_bytes(layout):
    """Return the bytes of one reply of ``layout`` (:func:`reply_layout`)."""
    return data.Layout.cast(layout).size // 8


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


def decode_reply(layout, reply):
    """Return ``{"cls": int, "scores": [int, ...]}`` of one reply of ``layout`` (bytes)."""
    total = reply_bytes(layout)
    if len(reply) != total:
        raise ValueError(f"a reply has {total} bytes, got {len(reply)}")
    fields = data.Const(layout, int.from_bytes(reply, "little"))
    return {"cls": fields.cls, "scores": list(fields.scores)}

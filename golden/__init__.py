"""Bit-exact NumPy specification of the integer model (see ``golden/README.md``).

``golden.load(directory)`` reads and verifies ``qmodel.json`` + ``qmodel.npz``;
:meth:`IntegerModel.run` gives the classes, scores, saturation counts and per-layer outputs that
the fake-quantized PyTorch model and the RTL must reproduce exactly. :mod:`golden.layers` holds
the arithmetic, :mod:`golden.random_model` builds random valid models for tests.
"""

from . import layers
from .model import (
    FORMAT_VERSION,
    JSON_NAME,
    NPZ_NAME,
    IntegerModel,
    QModelError,
    array_sha256,
    load,
    save,
)
from .random_model import random_images, random_qmodel

__all__ = [
    "layers", "IntegerModel", "QModelError", "load", "save", "array_sha256",
    "random_qmodel", "random_images", "FORMAT_VERSION", "JSON_NAME", "NPZ_NAME",
]

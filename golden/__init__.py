"""Bit-exact NumPy specification of the integer model (see ``golden/README.md``).

``golden.load(directory)`` reads and verifies ``qmodel.json`` + ``qmodel.npz``;
:meth:`IntegerModel.run` gives the classes, scores, saturation counts and per-layer outputs that
the fake-quantized PyTorch model and the RTL must reproduce exactly. :mod:`golden.layers` holds
the arithmetic, :mod:`golden.ops` the op of every layer kind (registry ``OPS``: checks,
reference, float32 stage), :mod:`golden.fast` the float32 machinery, and
:mod:`golden.random_model` builds random valid models for tests (registry ``RANDOM``).
Importing ``golden`` fills both registries.
"""

from . import layers, ops
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
from .ops import OPS
from .random_model import RANDOM, random_images, random_qmodel

__all__ = [
    "layers", "ops", "OPS", "RANDOM", "IntegerModel", "QModelError", "load", "save", "array_sha256",
    "random_qmodel", "random_images", "FORMAT_VERSION", "JSON_NAME", "NPZ_NAME",
]

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("PYTHONDONTWRITEBYTECODE", "1")


import numpy as np  # noqa: E402
import pytest  # noqa: E402

from golden import IntegerModel, random_qmodel  # noqa: E402
from golden import layers as L  # noqa: E402

#: LeNet-5's layers with a full C3 and max pooling (416,520 MACs on its 32x32 input).
LENET5 = (
    {"kind": "conv", "out_channels": 6, "kernel": 5, "name": "c1"},
    {"kind": "pool", "mode": "max", "size": 2, "name": "s2"},
    {"kind": "conv", "out_channels": 16, "kernel": 5, "name": "c3"},
    {"kind": "pool", "mode": "max", "size": 2, "name": "s4"},
    {"kind": "dense", "out_features": 120, "name": "f5"},
    {"kind": "dense", "out_features": 84, "name": "f6"},
    {"kind": "dense", "out_features": 10, "name": "out"},
)

#: The smallest model with a MAC, a pool and a dense output (6x6 input, pad 1): the FPGA link.
TINY = (
    {"kind": "conv", "out_channels": 2, "kernel": 3},
    {"kind": "pool", "mode": "max", "size": 2},
    {"kind": "dense", "out_features": 4},
)

#: TINY with a hidden dense layer (``dense2``) whose weights can be loaded.
LOADABLE = TINY[:2] + ({"kind": "dense", "out_features": 6}, {"kind": "dense", "out_features": 4})


@pytest.fixture(autouse=True)
def discard_unused_elaboratables():
    """Silence Amaranth's "created but never used" for components a test built but did not
    elaborate (the generator builds stages to inspect them); every test gets it."""
    yield
    from hw.simulation import discard_unused
    discard_unused()


def _fresh(spec):
    return [dict(entry) for entry in spec]


@pytest.fixture
def lenet5_spec():
    """Return a copy of :data:`LENET5` (a list of dicts the test may change)."""
    return _fresh(LENET5)


@pytest.fixture(scope="module")
def lenet5():
    """Return ``(meta, arrays)`` of a random integer LeNet-5 (:data:`LENET5`, 28x28, pad 2)."""
    return random_qmodel(_fresh(LENET5), 0, height=28, pad=2, calibration=2)


@pytest.fixture
def tiny():
    """Return ``(meta, arrays)`` of a random integer :data:`TINY` model."""
    return random_qmodel(_fresh(TINY), 3, height=6, pad=1)


@pytest.fixture
def loadable():
    """Return ``(meta, arrays)`` of a random integer :data:`LOADABLE` model."""
    return random_qmodel(_fresh(LOADABLE), 5, height=6, pad=1)


def position_beats(x, lanes=None):
    """Return the maps ``x`` (``[N, C, H, W]``) as a map stage takes them: positions row-major,
    each position's channels in beats of ``lanes`` channels (``None``: all of them)."""
    n, c, h, w = x.shape
    lanes = lanes or c
    return [[int(v) for v in x[i, k:k + lanes, r, q]] for i in range(n) for r in range(h)
            for q in range(w) for k in range(0, c, lanes)]


def random_codes(rng, fmt, shape, codes="random"):
    """Return codes of the format ``fmt`` in an array of ``shape``: ``"random"`` (uniform over
    the range), ``"min"`` or ``"max"`` (all at one end) or ``"extreme"`` (each at either end)."""
    lo, hi = L.format_range(fmt)
    if codes == "min":
        return np.full(shape, lo)
    if codes == "max":
        return np.full(shape, hi)
    if codes == "extreme":
        return np.where(rng.integers(0, 2, shape) == 1, hi, lo)
    return rng.integers(lo, hi, endpoint=True, size=shape)


def golden_replies(meta, arrays, images):
    """Return golden's reply to each of ``images``: ``{"cls", "scores"}`` of Python ints, as
    the host decodes the accelerator's replies (:func:`fpga.link.decode_reply`)."""
    expect = IntegerModel(meta, arrays).run(images)
    return [{"cls": int(c), "scores": [int(v) for v in s]}
            for c, s in zip(expect["classes"], expect["scores"], strict=True)]

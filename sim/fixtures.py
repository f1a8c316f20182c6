"""Helpers for the tests of sim/: the real lenet5 integer model and cached fast RTL builds."""

from pathlib import Path

import golden
from core.config import load_config
from core.data import load_dataset
from core.paths import CONFIG_DIR, build_dir
from hw.folding import derive_folding

from .flow import ensure_qmodel, ensure_rtl

__all__ = ["QMODEL_DIR", "TEST_TARGET_CYCLES", "lenet5_qmodel", "fast_rtl", "mnist_images"]

QMODEL_DIR = build_dir("lenet5")
#: Cycles per image of the folding the tests simulate (quick to simulate and to build).
TEST_TARGET_CYCLES = 4096


def lenet5_qmodel():
    """Return ``golden.IntegerModel`` of the default preset (checkpoint/quantize if needed)."""
    ensure_qmodel(load_config(CONFIG_DIR / "lenet5.toml"), QMODEL_DIR)
    return golden.load(QMODEL_DIR)


def fast_rtl(tag="fast", arrays=None, target=TEST_TARGET_CYCLES):
    """Generate (or reuse) the lenet5 RTL with a fast folding under build/lenet5/sim-tests/."""
    model = lenet5_qmodel()
    folding = derive_folding(model.meta, target, dict(model.arrays))
    rtl_dir = QMODEL_DIR / "sim-tests" / tag / "rtl"
    paths, cycles, folding = ensure_rtl(QMODEL_DIR, folding, rtl_dir, arrays=arrays)
    return Path(paths["top"]), cycles, folding


def mnist_images(n, first=0):
    """Return ``(images, labels)`` of MNIST test images ``first..first+n``."""
    test = load_dataset("mnist").test
    return test.images[first:first + n], test.labels[first:first + n]

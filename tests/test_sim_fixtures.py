"""sim.fixtures: the lenet5 integer model, MNIST slices and where the test RTL is built."""

import numpy as np

from core.data import load_dataset
from core.paths import build_dir
from sim import fixtures


def test_mnist_images_are_a_slice_of_the_test_split():
    test = load_dataset("mnist").test
    images, labels = fixtures.mnist_images(3, first=5)
    assert np.array_equal(images, test.images[5:8]) and np.array_equal(labels, test.labels[5:8])
    assert images.dtype == np.uint8 and images.shape == (3, 28, 28)


def test_lenet5_qmodel_comes_from_the_preset_folder(monkeypatch):
    ensured = []
    monkeypatch.setattr(fixtures, "ensure_qmodel", lambda config, out: ensured.append(
        (config.path.name, out)))
    monkeypatch.setattr(fixtures.golden, "load", lambda folder: f"model in {folder}")
    assert fixtures.QMODEL_DIR == build_dir("lenet5")
    assert fixtures.lenet5_qmodel() == f"model in {fixtures.QMODEL_DIR}"
    assert ensured == [("lenet5.toml", fixtures.QMODEL_DIR)]


def test_fast_rtl_builds_per_tag_with_the_test_folding(monkeypatch):
    model = type("Model", (), {"meta": {"layers": []}, "arrays": {"w": 1}})()
    calls = []
    monkeypatch.setattr(fixtures, "lenet5_qmodel", lambda: model)
    monkeypatch.setattr(fixtures, "derive_folding", lambda meta, target, arrays: [target])

    def ensure_rtl(qmodel_dir, folding, rtl_dir, arrays=None):
        calls.append((qmodel_dir, folding, rtl_dir, arrays))
        return {"top": rtl_dir / "lenet_accel.v"}, {"cycles_per_image": 7}, folding

    monkeypatch.setattr(fixtures, "ensure_rtl", ensure_rtl)
    top, cycles, folding = fixtures.fast_rtl("corrupt", arrays={"w": 2})
    rtl = fixtures.QMODEL_DIR / "sim-tests" / "corrupt" / "rtl"
    assert (top, cycles, folding) == (rtl / "lenet_accel.v", {"cycles_per_image": 7},
                                      [fixtures.TEST_TARGET_CYCLES])
    assert calls == [(fixtures.QMODEL_DIR, [fixtures.TEST_TARGET_CYCLES], rtl, {"w": 2})]

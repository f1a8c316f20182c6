"""Quantization: the fake-quantized PyTorch model equals golden/ exactly, for every preset."""

import copy
import dataclasses

import numpy as np
import pytest
import torch

from core.config import load_config
from golden.model import IntegerModel
from quant.data import load_dataset
from quant.model import load_checkpoint
from quant.quantize import export, fake_predict, quantize
from quant.train import ROOT, evaluate, train

PRESETS = ["lenet5", "lenet5-tanh", "lenet5-1998"]


@pytest.fixture(scope="module")
def data():
    return load_dataset("mnist")


@pytest.fixture(scope="module")
def models(data):
    """The shipped lenet5 checkpoint; briefly trained models for the other presets.

    Exactness does not depend on accuracy, so a short training is enough here; the fully
    trained presets are checked by `make test-slow`.
    """
    out = {"lenet5": load_checkpoint(load_config("lenet5"), ROOT / "checkpoints" / "lenet5.pt")}
    for preset in PRESETS[1:]:
        out[preset], _ = train(load_config(preset), data, epochs=1, limit=3000,
                               log=lambda *a: None)
    return out


def golden_of(qnet):
    meta, arrays = export(qnet)
    return IntegerModel(meta, arrays)


def assert_identical(qnet, images):
    golden = golden_of(qnet).run(images, taps=True)
    fake = fake_predict(qnet, images, taps=True)
    for name, codes in golden["taps"].items():
        other = fake["taps"][name].reshape(codes.shape)
        assert np.array_equal(codes, other), f"layer {name}: {(codes != other).sum()} differ"
    assert np.array_equal(golden["scores"], fake["scores"])
    assert golden["saturations"] == {k: fake["saturations"].get(k, 0)
                                     for k in golden["saturations"]}
    return golden


@pytest.mark.parametrize("preset", PRESETS)
def test_golden_equals_fake_quant_on_full_test_set(preset, models, data):
    config = load_config(preset)
    qnet = quantize(config, copy.deepcopy(models[preset]), data)
    golden = assert_identical(qnet, data.test.images)
    assert len(golden["scores"]) == 10_000


@pytest.mark.parametrize("bits", [2, 5, 16])
@pytest.mark.parametrize("per_channel", [False, True])
@pytest.mark.parametrize("preset", PRESETS)
def test_exact_at_every_width(preset, bits, per_channel, models, data):
    config = load_config(preset)
    qnet = quantize(config, copy.deepcopy(models[preset]), data, bits, bits,
                    per_channel=per_channel)
    assert_identical(qnet, data.test.images[:300])


def test_w8a8_ptq_within_a_tenth_of_float(models, data):
    config = load_config("lenet5")
    model = models["lenet5"]
    qnet = quantize(config, copy.deepcopy(model), data)
    result = golden_of(qnet).run(data.test.images)
    quantized = (result["classes"] == data.test.labels).mean()
    assert abs(quantized - evaluate(model, data.test)) <= 0.001


def test_accumulators_hold_extreme_inputs(models, data):
    for preset in PRESETS:
        qnet = quantize(load_config(preset), copy.deepcopy(models[preset]), data, 16, 16)
        golden = golden_of(qnet)
        images = np.stack([np.full((28, 28), 255, np.uint8), np.zeros((28, 28), np.uint8),
                           (np.indices((28, 28)).sum(0) % 2 * 255).astype(np.uint8)])
        golden.check_accumulators(images)


def test_per_layer_override(models, data):
    config = load_config("lenet5")
    text = config.path.read_text() + "\n[quant.layers.c3]\nwbits = 4\nabits = 6\n"
    from core.config import parse_config
    custom = parse_config(text, config.path)
    model = copy.deepcopy(models["lenet5"])
    model.config = custom
    qnet = quantize(custom, model, data)
    meta, _ = export(qnet)
    c3 = next(d for d in meta["layers"] if d["name"] == "c3")
    assert c3["weight_format"]["bits"] == 4 and c3["out_format"]["bits"] == 6
    assert meta["layers"][3]["in_format"]["bits"] == 6
    assert_identical(qnet, data.test.images[:200])


def small_train(data, n):
    split = type(data.train)(data.train.images[:n], data.train.labels[:n])
    return type(data)(data.name, split, data.val, data.test)


@pytest.mark.parametrize("preset", PRESETS)
def test_qat_model_stays_exact(preset, models, data):
    config = load_config(preset)
    config = dataclasses.replace(config, quant=dict(config.quant, qat_epochs=1))
    qat = quantize(config, copy.deepcopy(models[preset]), small_train(data, 512), 4, 4,
                   use_qat=True, log=lambda *a: None)
    changed = any(not torch.equal(a, b) for a, b in zip(
        qat.model.parameters(), models[preset].parameters(), strict=True))
    assert changed
    assert_identical(qat, data.test.images[:300])


@pytest.mark.slow
def test_qat_improves_w3a3(models, data):
    config = load_config("lenet5")
    small = small_train(data, 4000)
    ptq = quantize(config, copy.deepcopy(models["lenet5"]), small, 3, 3)
    torch.manual_seed(0)
    qat = quantize(config, copy.deepcopy(models["lenet5"]), small, 3, 3, use_qat=True,
                   log=lambda *a: None)
    test = data.test.images[:2000], data.test.labels[:2000]
    acc = lambda q: (golden_of(q).run(test[0])["classes"] == test[1]).mean()
    assert acc(qat) > acc(ptq)
    assert_identical(qat, data.test.images[:200])

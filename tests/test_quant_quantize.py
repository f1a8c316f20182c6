"""Quantization: the fake-quantized PyTorch model equals golden/ exactly, for every preset."""

import copy
import dataclasses
import json
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from core.config import load_config, parse_config
from core.data import load_dataset
from core.kinds import gap_scale
from golden import layers as GL
from golden.model import IntegerModel
from quant.layers import MODULES, Counts, activation_fn, float_parameters
from quant.model import load_checkpoint
from quant.quantize import export, fake_predict, plan_formats, quantize
from quant.train import ROOT, evaluate, train

PRESETS = ["lenet5", "lenet5-tanh", "lenet5-1998", "lenet5-bn-gap"]


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
    for counted in ("saturations", "clamps"):
        assert golden[counted] == {k: fake[counted].get(k, 0) for k in golden[counted]}
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
    custom = parse_config(text, config.path)
    model = copy.deepcopy(models["lenet5"])
    model.config = custom
    qnet = quantize(custom, model, data)
    meta, _ = export(qnet)
    c3 = next(d for d in meta["layers"] if d["name"] == "c3")
    assert c3["weight_format"]["bits"] == 4 and c3["out_format"]["bits"] == 6
    assert meta["layers"][3]["in_format"]["bits"] == 6
    assert_identical(qnet, data.test.images[:200])


@pytest.mark.parametrize("preset", ["lenet5-1998", "lenet5-bn-gap"])      # every kind
def test_an_override_changes_exactly_what_the_kind_says(preset, models, data):
    """core.kinds decides which [quant.layers] widths a layer takes (the config refuses the
    others): each accepted one sets its width here, each refused one would change nothing."""
    model = copy.deepcopy(models[preset])
    config = model.config
    images = data.train.images[:20]
    same = lambda plan: json.dumps(plan, sort_keys=True, default=np.ndarray.tolist)
    base = same(plan_formats(model, images))
    widths = {"wbits": lambda p: p.get("weight", {}).get("bits"),
              "abits": lambda p: (p.get("out") or {}).get("bits")}
    for i, layer in enumerate(config.exported):
        for key, width in widths.items():
            model.config = dataclasses.replace(config, quant={
                **config.quant, "layers": {layer.name: {key: 3}}})
            plan = plan_formats(model, images)
            if layer.spec.bits_noop(key, layer.final) is None:
                assert width(plan[i]) == 3, (layer.name, key)
            else:
                assert same(plan) == base, (layer.name, key)


def test_bn_gap_exact_at_4_bits_per_channel(models, data):
    config = load_config("lenet5-bn-gap")
    qnet = quantize(config, copy.deepcopy(models["lenet5-bn-gap"]), data, 4, 4,
                    per_channel=True)
    golden = assert_identical(qnet, data.test.images[:300])
    assert set(golden["taps"]) == {"c1", "s2", "c3", "s4", "c5", "gap", "f6", "out"}


def test_bn_gap_export(models, data):
    """Batchnorms have no record: the conv or dense before them carries the fold and the
    batchnorm's activation; the gap record holds gap_scale of its 5x5 map."""
    qnet = quantize(load_config("lenet5-bn-gap"), copy.deepcopy(models["lenet5-bn-gap"]), data)
    meta, arrays = export(qnet)
    layers = {d["name"]: d for d in meta["layers"]}
    assert list(layers) == ["c1", "s2", "c3", "s4", "c5", "gap", "f6", "out"]
    assert [layers[n]["activation"] for n in ("c1", "c3", "c5", "f6")] == [{"kind": "relu"}] * 4
    mul, shift = gap_scale(25)
    assert (mul, shift) == (41943, 20)
    c5 = layers["c5"]["out_format"]
    assert layers["gap"] == {
        "name": "gap", "kind": "gap", "in_format": c5, "out_format": c5, "in_shape": [120, 5, 5],
        "out_shape": [120, 1, 1], "mul": mul, "shift": shift, "final": False, "arrays": {}}
    w, _ = float_parameters(qnet.model, qnet.config.exported[0])
    frac = layers["c1"]["weight_format"]["frac"]
    codes = np.floor(w.detach().numpy() * 2.0 ** frac + 0.5).clip(-128, 127)
    assert np.array_equal(arrays["c1.weight"], codes.astype(np.int64))


def test_gap_rounds_half_up_and_saturates_like_golden():
    """The fake-quantized gap equals golden's on random codes, the extremes of the format and
    sums near rounding ties."""
    layer = next(x for x in load_config("lenet5-bn-gap").exported if x.kind == "gap")
    fmt = {"bits": 4, "frac": 2, "signed": True}
    codes = torch.randint(-8, 8, (64, 120, 5, 5), generator=torch.Generator().manual_seed(0))
    codes[0] = 7
    codes[1] = -8
    codes[2] = 0
    codes[2, :, 0, :3] = torch.arange(-60, 60).view(120, 1) % 7 - 3  # small sums, near ties
    qnet = SimpleNamespace(config=SimpleNamespace(exported=[layer]), plan=[{"in": fmt}])
    counts = Counts({}, {})
    out = MODULES["gap"].forward(qnet, 0, codes.double() / 4, counts, torch.float64)
    mul, shift = gap_scale(25)
    expected, saturations = GL.global_avgpool(codes.numpy().astype(np.int64), mul, shift, fmt)
    assert np.array_equal((out * 4).numpy().astype(np.int64), expected)
    assert counts == Counts({"gap": saturations}, {})


def test_batchnorm_fold_matches_the_float_model(models, data):
    """Float conv/dense + batchnorm in eval mode equals the folded float weights (float-vs-float:
    the only comparison with a tolerance)."""
    model = copy.deepcopy(models["lenet5-bn-gap"]).eval()
    config = model.config
    taps = {}
    images = torch.from_numpy(data.test.images[:64])
    with torch.no_grad():
        model(images, taps=taps)
        for layer in config.exported:
            if not layer.folded:
                continue
            w, b = float_parameters(model, layer)
            previous = config.layers[layer.index - 1].name if layer.index else None
            x = (model.prepare(images) if previous is None else taps[previous]).double()
            expected = taps[layer.folded[-1].name].double()
            act = activation_fn(layer.activation)
            if w.dim() == 4:
                got = act(F.conv2d(x, w, b, padding=layer.padding))
            else:
                got = act(F.linear(x.flatten(1), w, b))
            assert torch.allclose(got, expected, atol=1e-4, rtol=1e-4), layer.name


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


def test_qat_trains_through_the_fold(models, data):
    """QAT reaches the conv weights and the batchnorm's γ and β through the fold; the running
    statistics the fold reads stay those of the float model."""
    config = load_config("lenet5-bn-gap")
    config = dataclasses.replace(config, quant=dict(config.quant, qat_epochs=1))
    float_model = models["lenet5-bn-gap"]
    qat = quantize(config, copy.deepcopy(float_model), small_train(data, 256), 4, 4,
                   use_qat=True, log=lambda *a: None)
    for name in ("conv.weight", "conv.bias"):
        assert not torch.equal(qat.model.layers[0].get_parameter(name),
                               float_model.layers[0].get_parameter(name))
    after, before = qat.model.layers[1].bn, float_model.layers[1].bn
    assert not torch.equal(after.weight, before.weight)
    assert not torch.equal(after.bias, before.bias)
    assert torch.equal(after.running_mean, before.running_mean)
    assert torch.equal(after.running_var, before.running_var)


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

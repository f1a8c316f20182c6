"""quant.fakequant: QuantLeNet computes golden's integers on real-valued tensors (float64) and
trains through straight-through estimators (float32)."""

import numpy as np
import pytest
import torch

from core.config import load_config
from golden import layers as GL
from golden.model import IntegerModel
from quant.fakequant import QuantLeNet
from quant.formats import code_range
from quant.layers import Counts, activation_fn, float_parameters
from quant.model import build_model
from quant.quantize import export, plan_formats

IMAGES = np.random.default_rng(0).integers(0, 256, (8, 28, 28), dtype=np.uint8)


def _qnet(preset):
    model = build_model(load_config(preset))
    return QuantLeNet(model, plan_formats(model, IMAGES))


@pytest.fixture(scope="module")
def relu():
    return _qnet("lenet5")


@pytest.fixture(scope="module")
def tanh():
    return _qnet("lenet5-tanh")


def _frac(frac, ndim):
    """2^frac along dimension 0 of a tensor of ``ndim`` dimensions (a per-channel frac)."""
    return np.ldexp(1.0, np.asarray(frac)).reshape((-1,) + (1,) * (ndim - 1))


def _with_weights(qnet):
    return [i for i, p in enumerate(qnet.plan) if "weight" in p]


@pytest.mark.parametrize("preset", ["lenet5", "lenet5-tanh"])
def test_weights_are_rounded_half_up_and_clamped(preset, relu, tanh):
    qnet = relu if preset == "lenet5" else tanh
    for i in _with_weights(qnet):
        fmt = qnet.plan[i]["weight"]
        w, _ = float_parameters(qnet.model, qnet.config.exported[i])
        w = w.detach().numpy()
        scale = _frac(fmt["frac"], w.ndim)
        lo, hi = code_range(fmt)
        want = np.clip(np.floor(w * scale + 0.5), lo, hi)
        got = qnet.weight(i).detach().numpy() * scale
        assert np.array_equal(got, want), qnet.config.exported[i].name


def test_bias_is_a_code_at_the_accumulator_scale(relu):
    for i in _with_weights(relu):
        p = relu.plan[i]
        _, b = float_parameters(relu.model, relu.config.exported[i])
        scale = _frac(p["acc_frac"], 1)
        lo, hi = code_range({"bits": p["acc_bits"] - 1, "signed": True})
        want = np.clip(np.floor(b.detach().numpy() * scale + 0.5), lo, hi)
        assert np.array_equal(relu.bias(i).detach().numpy() * scale, want)


def test_the_final_layer_keeps_its_accumulators(relu):
    last = len(relu.plan) - 1
    acc = torch.randn(3, 10, dtype=torch.float64)
    counts = Counts({}, {})
    assert relu.activate(last, acc, counts) is acc and counts == Counts({}, {})


def test_requantize_rounds_ties_half_up_clamps_and_counts(relu):
    i = 0                                           # c1: relu into an unsigned format
    p, name = relu.plan[i], relu.config.exported[i].name
    fmt = p["requant"]
    lo, hi = code_range(fmt)
    shifts = [a - fmt["frac"] for a in p["acc_frac"]]
    assert fmt == p["out"] and not fmt["signed"] and min(shifts) >= 1
    # Accumulator codes at every half step from below -1 to beyond the top of the format.
    halves = np.arange(-6, 2 * hi + 8)
    codes = np.stack([halves << (s - 1) for s in shifts])          # [C, N]
    acc = torch.tensor(codes / _frac(p["acc_frac"], 2), requires_grad=True)
    counts = Counts({name: 5}, {})
    out = relu.activate(i, acc.view(1, len(shifts), 1, -1), counts).view(len(shifts), -1)
    rounded = np.stack([(c + (1 << (s - 1))) >> s for c, s in zip(codes, shifts, strict=True)])
    assert np.array_equal(rounded[0, :4], [-3, -2, -2, -1])        # -3, -2.5, -2, -1.5
    want = np.clip(rounded, lo, hi)
    assert np.array_equal(out.detach().numpy() * 2.0 ** fmt["frac"], want)
    assert counts == Counts({name: 5 + int((rounded > hi).sum())}, {})  # ReLU: no saturation
    out.sum().backward()
    inside = (rounded >= lo) & (rounded <= hi)
    assert np.array_equal(acc.grad.numpy(), inside.astype(float))  # straight through, or 0


def test_a_lookup_table_activation_reads_the_table(tanh):
    i = 0                                           # c1: tanh through a table
    p, spec = tanh.plan[i], tanh.config.exported[i]
    fmt = p["requant"]
    lo, hi = code_range(fmt)
    pre = np.arange(lo, hi + 1)
    shift = p["acc_frac"][0] - fmt["frac"]
    acc = torch.tensor((pre << shift) / 2.0 ** p["acc_frac"][0]).view(1, 1, 1, -1)
    acc = acc.expand(1, len(p["acc_frac"]), 1, -1).contiguous().requires_grad_()
    out = tanh.activate(i, acc, Counts({}, {}))
    want = p["lut"][pre - lo] / 2.0 ** p["out"]["frac"]
    for c in range(len(p["acc_frac"])):
        assert np.array_equal(out[0, c, 0].detach().numpy(), want)
    out.sum().backward()
    x = torch.tensor(pre / 2.0 ** fmt["frac"], requires_grad=True)
    activation_fn(spec.activation)(x).sum().backward()
    assert torch.equal(acc.grad[0, 0, 0], x.grad)   # the gradient of the float function


@pytest.mark.parametrize("lossless", [(True, True), (False, True), (False, False)])
def test_lookup_table_input_clamps_at_a_lossless_end_are_clamps(tanh, lossless):
    i = 0                                           # c1: tanh through a table
    p, name = tanh.plan[i], tanh.config.exported[i].name
    fmt = p["requant"]
    lo, hi = code_range(fmt)
    assert tanh.lossless[i] == GL.lut_lossless(p["lut"], "tanh", p["out"])
    pre = np.arange(lo - 3, hi + 5)                 # 3 below the range, 4 above
    shift = p["acc_frac"][0] - fmt["frac"]
    acc = torch.tensor((pre << shift) / 2.0 ** p["acc_frac"][0]).view(1, 1, 1, -1)
    acc = acc.expand(1, len(p["acc_frac"]), 1, -1).contiguous()
    saved, tanh.lossless[i] = tanh.lossless[i], lossless
    try:
        counts = Counts({}, {})
        tanh.activate(i, acc, counts)
    finally:
        tanh.lossless[i] = saved
    channels = len(p["acc_frac"])
    ends = {True: 0, False: 0}
    ends[lossless[0]] += 3 * channels
    ends[lossless[1]] += 4 * channels
    assert counts == Counts({name: ends[False]}, {name: ends[True]})


@pytest.mark.parametrize("preset", ["lenet5", "lenet5-tanh"])
def test_forward_in_float64_is_golden(preset, relu, tanh):
    qnet = relu if preset == "lenet5" else tanh
    taps, sat, clamps = {}, {}, {}
    with torch.no_grad():
        qnet(torch.from_numpy(IMAGES), taps=taps, saturations=sat, clamps=clamps)
    expected = IntegerModel(*export(qnet)).run(IMAGES, taps=True)
    assert list(taps) == [layer.name for layer in qnet.config.exported]
    for name, codes in expected["taps"].items():
        assert taps[name].dtype == torch.int64
        assert np.array_equal(taps[name].numpy().reshape(codes.shape), codes), name
    assert np.array_equal(taps[qnet.config.exported[-1].name].numpy(), expected["scores"])
    assert {k: sat.get(k, 0) for k in expected["saturations"]} == expected["saturations"]
    assert {k: clamps.get(k, 0) for k in expected["clamps"]} == expected["clamps"]


def test_float32_training_reaches_every_parameter(relu):
    relu.zero_grad()
    scores = relu(torch.from_numpy(IMAGES[:2]), dtype=torch.float32)
    assert scores.dtype == torch.float32
    scores.square().sum().backward()
    for name, param in relu.model.named_parameters():
        assert param.grad is not None and param.grad.abs().sum() > 0, name
    relu.zero_grad()

"""The PyTorch-side registries: an entry per kind, the batchnorm fold, the exporters' labels."""

import numpy as np
import pytest
import torch
from torch import nn

from core.config import load_config, parse_config
from core.kinds import KINDS
from quant import layers as QL
from quant.layers import EXPORTERS, MODULES, float_layer, float_parameters
from quant.model import build_model


@pytest.mark.parametrize("registry", [MODULES, EXPORTERS])
def test_every_kind_has_an_entry(registry):
    assert registry.missing() == ()
    assert set(registry.kinds()) == set(KINDS)


def _trained_like(model):
    """Give every batchnorm non-trivial statistics and affine parameters."""
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                c = module.num_features
                module.running_mean.copy_(torch.randn(c, generator=gen))
                module.running_var.copy_(torch.rand(c, generator=gen) + 0.1)
                module.weight.copy_(torch.randn(c, generator=gen))
                module.bias.copy_(torch.randn(c, generator=gen))
    return model.eval()


def test_fold_follows_the_formula():
    model = _trained_like(build_model(load_config("lenet5-bn-gap")))
    c1 = model.config.exported[0]
    w, b = float_parameters(model, c1)
    conv, bn = model.layers[0].conv, model.layers[1].bn
    s = bn.weight.double() / torch.sqrt(bn.running_var.double() + bn.eps)
    assert w.dtype == torch.float64
    assert torch.equal(w, conv.weight.double() * s.view(-1, 1, 1, 1))
    assert torch.equal(b, (conv.bias.double() - bn.running_mean.double()) * s + bn.bias.double())


def test_folded_float_weights_compute_the_float_model():
    """Float-vs-float (eval mode): the only comparison with a tolerance."""
    model = _trained_like(build_model(load_config("lenet5-bn-gap")))
    config = model.config
    x = torch.rand(4, 1, 28, 28, dtype=torch.float64)
    with torch.no_grad():
        taps = {}
        model(x.float(), taps=taps)
        c1 = config.exported[0]
        w, b = float_parameters(model, c1)
        got = torch.relu(nn.functional.conv2d(x, w, b, padding=c1.padding))
        assert torch.allclose(got, taps[float_layer(c1).name].double(), atol=1e-5)
        f6 = next(layer for layer in config.exported if layer.name == "f6")
        w, b = float_parameters(model, f6)
        got = torch.relu(nn.functional.linear(taps["gap"].double().flatten(1), w, b))
        assert torch.allclose(got, taps["bn6"].double(), atol=1e-5)


def test_fold_is_differentiable():
    model = _trained_like(build_model(load_config("lenet5-bn-gap")))
    w, b = float_parameters(model, model.config.exported[0], torch.float32)
    (w.sum() + b.sum()).backward()
    conv, bn = model.layers[0].conv, model.layers[1].bn
    for p in (conv.weight, conv.bias, bn.weight, bn.bias):
        assert p.grad is not None and p.grad.abs().sum() > 0


def test_batchnorm_eps_comes_from_the_config():
    text = load_config("lenet5-bn-gap").path.read_text().replace(
        'name = "bn1"\n', 'name = "bn1"\neps = 0.001\n')
    model = build_model(parse_config(text))
    assert model.layers[1].bn.eps == 0.001 and model.layers[4].bn.eps == 1e-5


def test_float_layer_is_the_last_folded():
    config = load_config("lenet5-bn-gap")
    assert [float_layer(layer).name for layer in config.exported] == [
        "bn1", "s2", "bn3", "s4", "bn5", "gap", "bn6", "out"]


@pytest.mark.parametrize("preset, labels", [
    ("lenet5", ["conv", "maxpool", "conv", "maxpool", "dense", "dense", "dense"]),
    ("lenet5-tanh", ["conv", "avgpool", "conv", "avgpool", "dense", "dense", "dense"]),
    ("lenet5-1998", ["conv", "subsample", "conv", "subsample", "conv", "dense", "rbf"]),
    ("lenet5-bn-gap", ["conv", "batchnorm", "maxpool", "conv", "batchnorm", "maxpool", "conv",
                       "batchnorm", "gap", "dense", "batchnorm", "dense"]),
])
def test_labels(preset, labels):
    config = load_config(preset)
    assert [EXPORTERS[layer.kind].label(layer) for layer in config.layers] == labels


def test_kinds_without_weights_or_record_say_so():
    model = build_model(load_config("lenet5"))
    with pytest.raises(TypeError, match=r"^PoolKind: this layer kind has no weights$"):
        MODULES["pool"].parameters(model.layers[1])
    with pytest.raises(TypeError, match=r"^BatchNormExporter: this layer kind has no record$"):
        EXPORTERS["batchnorm"].record(None, 0, {})


def test_tap_values():
    codes = np.array([[3, -2]])
    fmt = {"bits": 8, "frac": 2, "signed": True}
    assert EXPORTERS["gap"].tap_value({"final": False, "out_format": fmt}, codes).tolist() == \
        [[0.75, -0.5]]
    assert EXPORTERS["dense"].tap_value({"final": True, "acc_frac": [3, 3]}, codes).tolist() == \
        [[0.375, -0.25]]
    assert EXPORTERS["rbf"].tap_value({"final": True, "in_format": fmt}, codes).tolist() == \
        [[-0.1875, 0.125]]


@pytest.mark.parametrize("base,missing", [
    (QL.TorchKind, "build"), (QL.Quantized, "forward"), (QL._Affine, "accumulate")])
def test_an_entry_missing_a_method_cannot_be_made(base, missing):
    # The base classes are abstract: an entry that forgets one of their methods fails when it
    # is made (at registration), not when the method is first called.
    methods = {name: lambda self, *args: None for name in ("build", "forward", "accumulate")
               if name != missing}
    entry = type("Partial", (base,), methods)
    with pytest.raises(TypeError, match=f"abstract method '?{missing}'?"):
        entry()

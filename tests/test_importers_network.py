"""The network builder: layer specs, folds and the one-line errors, without any framework."""

import numpy as np
import pytest
import torch

from core.config import parse_config
from importers.network import SUPPORTED, ModelImportError, Network, Normalization
from importers.run import config_text, float_model

RNG = np.random.default_rng(0)


def _net(size=8):
    return Network(source="m.onnx", input_shape=(1, size, size))


def _conv(net, out_c=2, in_c=1, k=3, **kw):
    net.at(0, "c", "Conv").conv(RNG.normal(size=(out_c, in_c, k, k)), RNG.normal(size=out_c),
                                **kw)


def test_layers_become_the_specs_of_core_kinds():
    net = _net()
    _conv(net, padding=1)
    net.at(1, "r", "Relu").activation("relu")
    net.at(2, "p", "MaxPool").pool("max", 2)
    net.at(3, "f", "Flatten").flatten()
    net.at(4, "d", "Gemm").dense(RNG.normal(size=(3, 32)), None)
    net.at(5, "s", "Softmax").softmax()
    imported = net.finish(Normalization(scale=256))
    assert [t["kind"] for t in imported.layers] == ["conv", "pool", "dense"]
    assert imported.layers[0] == {"name": "c", "kind": "conv", "out_channels": 2, "kernel": 3,
                                  "padding": 1, "activation": "relu"}
    config = parse_config(config_text(imported, "m"))
    assert [la.out_shape for la in config.layers] == [(2, 8, 8), (2, 4, 4), (3, 1, 1)]


def test_channels_last_flatten_reorders_the_dense_weights():
    weight = RNG.normal(size=(3, 2 * 4 * 4))
    net = _net(4)
    _conv(net, k=1)
    net.at(1, "f", "Flatten").flatten("nhwc")
    net.at(2, "d", "Dense").dense(weight, None)
    imported = net.finish(Normalization(scale=256))
    ours = imported.weights[1][0]
    for c in range(2):
        for y in range(4):
            for x in range(4):
                assert np.array_equal(ours[:, c * 16 + y * 4 + x], weight[:, (y * 4 + x) * 2 + c])


def test_batchnorm_and_normalization_are_folded_exactly():
    net = _net()
    w, b = RNG.normal(size=(2, 1, 3, 3)), RNG.normal(size=2)
    net.at(0, "c", "Conv").conv(w, b)
    gamma, beta, mean, var = (RNG.uniform(0.5, 2, size=2) for _ in range(4))
    net.at(1, "bn", "BatchNormalization").batchnorm(gamma, beta, mean, var, 1e-5)
    net.at(2, "f", "Flatten").flatten()
    net.at(3, "d", "Gemm").dense(RNG.normal(size=(3, 72)), None)
    norm = Normalization(scale=255, mean=0.13, std=0.31)
    imported = net.finish(norm)
    config = parse_config(config_text(imported, "m"))
    model = float_model(config, imported).double()
    pixels = RNG.integers(0, 256, size=(4, 8, 8))
    x = torch.from_numpy(pixels / 256.0).unsqueeze(1)
    got = model.layers[0].pre_activation(x).detach().numpy()
    src = (pixels / 255.0 - 0.13) / 0.31
    ref = np.zeros((4, 2, 6, 6))
    for o in range(2):
        for y in range(6):
            for q in range(6):
                ref[:, o, y, q] = (src[:, y:y + 3, q:q + 3] * w[o, 0]).sum(axis=(1, 2)) + b[o]
        ref[:, o] = (ref[:, o] - mean[o]) * gamma[o] / np.sqrt(var[o] + 1e-5) + beta[o]
    assert np.abs(got - ref).max() < 1e-5


def test_activation_moves_across_a_max_pool():
    net = _net()
    _conv(net)
    net.at(1, "p", "MaxPool").pool("max", 2)
    net.at(2, "r", "Relu").activation("tanh")
    assert net._entries[0].table["activation"] == "tanh"


@pytest.mark.parametrize("build, message", [
    (lambda n: n.at(1, "up", "Upsample").unsupported(),
     f"m.onnx: layer 1 'up' (Upsample) is not supported; supported: {SUPPORTED}"),
    (lambda n: n.at(1, "p", "AveragePool").pool("avg", 2, stride=1),
     f"m.onnx: layer 1 'p' (AveragePool) is not supported (window (2, 2), stride (1, 1), "
     f"padding (0,): only a square window equal to its stride, no padding); supported: "
     f"{SUPPORTED}"),
    (lambda n: (n.at(1, "p", "AveragePool").pool("avg", 2), n.at(2, "r", "Relu")
                .activation("relu")),
     f"m.onnx: layer 2 'r' (Relu) is not supported (relu here: an activation must follow a "
     f"conv or dense layer without one (or that layer's max pooling)); supported: "
     f"{SUPPORTED}"),
    (lambda n: n.at(1, "e", "Elu").activation("elu"),
     f"m.onnx: layer 1 'e' (Elu) is not supported (activation 'elu': only relu, tanh, "
     f"sigmoid, identity and a final softmax); supported: {SUPPORTED}"),
    (lambda n: (n.at(1, "s", "Softmax").softmax(), n.at(2, "p", "MaxPool").pool("max", 2)),
     "m.onnx: layer 2 'p' (MaxPool) follows the final softmax 's'; a softmax is only dropped "
     "as the network's last layer"),
])
def test_unsupported_layers_are_named_with_their_position(build, message):
    net = _net()
    _conv(net)
    with pytest.raises(ModelImportError) as info:
        build(net)
    assert str(info.value) == message


def test_a_mean_is_not_folded_into_a_padded_first_layer():
    net = _net()
    _conv(net, padding=1)
    net.at(1, "f", "Flatten").flatten()
    net.at(2, "d", "Gemm").dense(RNG.normal(size=(3, 128)), None)
    with pytest.raises(ModelImportError) as info:
        net.finish(Normalization(mean=0.1307, std=0.3081))
    assert str(info.value) == (
        "m.onnx: the first layer 'c' pads its input with zeros, and with --mean 0.1307 a "
        "padded zero of the normalized input is the pixel 33.3285, not 0 as the hardware pads: "
        "the fold would not be exact; import a model trained with --mean 0 or without padding "
        "on its first layer")


def test_the_output_layer_gives_raw_scores():
    net = _net()
    _conv(net)
    net.at(1, "f", "Flatten").flatten()
    net.at(2, "d", "Dense").dense(RNG.normal(size=(3, 72)), None)
    net.at(2, "d", "Dense").activation("relu")
    with pytest.raises(ModelImportError) as info:
        net.finish(Normalization())
    assert str(info.value) == (
        "m.onnx: the output layer 'd' has activation 'relu'; the flow takes raw scores (the "
        "logits) from the last layer: end with a dense layer without activation, or with "
        "softmax")


def test_a_colour_input_is_refused():
    with pytest.raises(ModelImportError) as info:
        Network(source="m.keras", input_shape=(3, 32, 32))
    assert str(info.value) == (
        "m.keras: the input is 3x32x32 (channels x height x width); the flow takes one square "
        "8-bit image: give a model of 1xNxN images")

"""Read a Keras model (``.keras``, or legacy ``.h5``) with Keras 3 on its PyTorch backend.

No TensorFlow: ``KERAS_BACKEND=torch`` is set before Keras is first imported. The model's layers
are walked in order (a ``Sequential`` model, or a functional one that is a chain) and fed to the
:class:`importers.network.Network` by the table :data:`LAYERS`, keyed by the Keras class name.
Keras keeps maps channels last: kernels ``(kh, kw, in, out)`` are transposed to ``(out, in, kh,
kw)``, a ``Flatten`` reads channels last (the next dense layer's weights are reordered), and a
layer's fused ``activation=`` becomes the activation after it.
"""

import os

from .network import ModelImportError, Network

__all__ = ["read_keras", "LAYERS"]


def _fused(net, layer):
    name = layer.get_config().get("activation", "linear")
    if name != "linear":
        net.activation(name)


def _conv(net, layer):
    cfg = layer.get_config()
    weights = layer.get_weights()
    kernel = weights[0].transpose(3, 2, 0, 1)
    bias = weights[1] if cfg.get("use_bias", True) else None
    kh = kernel.shape[2]
    padding = cfg["padding"]
    if padding == "same" and kh % 2 == 0:
        net.unsupported(f"'same' padding of an even {kh}x{kh} kernel pads unevenly")
    net.conv(kernel, bias, padding=kh // 2 if padding == "same" else 0,
             stride=tuple(cfg.get("strides", (1, 1))),
             dilation=tuple(cfg.get("dilation_rate", (1, 1))), groups=cfg.get("groups", 1))
    _fused(net, layer)


def _pool(mode):
    def read(net, layer):
        cfg = layer.get_config()
        size = tuple(cfg["pool_size"])
        c, h, w = net.shape
        if cfg.get("padding") == "same" and (h % size[0] or w % size[1]):
            net.unsupported("'same' padding of a pooling window that does not divide the map")
        net.pool(mode, size, stride=tuple(cfg.get("strides") or size))
    return read


def _dense(net, layer):
    weights = layer.get_weights()
    net.dense(weights[0].T, weights[1] if layer.get_config().get("use_bias", True) else None)
    _fused(net, layer)


def _batchnorm(net, layer):
    cfg = layer.get_config()
    axis = cfg.get("axis", -1)
    if axis not in (-1, [-1], 3, [3]) and not (net.shape[1:] == (1, 1) and axis in (1, [1])):
        net.unsupported(f"batch normalization over axis {axis}: only the channels (-1)")
    weights = list(layer.get_weights())
    gamma = weights.pop(0) if cfg.get("scale", True) else 1.0
    beta = weights.pop(0) if cfg.get("center", True) else 0.0
    mean, var = weights
    net.batchnorm(gamma + 0 * mean, beta + 0 * mean, mean, var, cfg.get("epsilon", 1e-3))


def _activation(net, layer):
    net.activation(layer.get_config()["activation"])


def _relu(net, layer):
    cfg = layer.get_config()
    if cfg.get("max_value") is not None or cfg.get("negative_slope", 0) or \
            cfg.get("threshold", 0):
        net.unsupported("a ReLU with max_value, negative_slope or threshold")
    net.activation("relu")


#: Keras layer class → how it enters the network.
LAYERS = {
    "Conv2D": _conv, "Dense": _dense,
    "MaxPooling2D": _pool("max"), "AveragePooling2D": _pool("avg"),
    "Flatten": lambda net, layer: net.flatten("nhwc"),
    "Dropout": lambda net, layer: net.dropout(),
    "Activation": _activation, "ReLU": _relu,
    "Softmax": lambda net, layer: net.softmax(),
    "BatchNormalization": _batchnorm,
}


class _KerasNetwork(Network):
    @property
    def shape(self):
        return self._shape


def _keras():
    if "keras" not in __import__("sys").modules:
        os.environ["KERAS_BACKEND"] = "torch"
    try:
        import keras
    except ImportError:
        raise ModelImportError("reading Keras files needs keras and h5py; run `make setup` (it "
                               "installs the importers extra)") from None
    return keras


def _chained(layer, layers, position):
    """Return whether a functional model's ``layer`` takes exactly the output of the layer
    before it (or the model's input, for the first)."""
    nodes = getattr(layer, "_inbound_nodes", [])
    if len(nodes) != 1:
        return False
    parents = [t._keras_history[0] for t in nodes[0].input_tensors]
    if len(parents) != 1:
        return False
    if position == 0:
        return type(parents[0]).__name__ == "InputLayer"
    return parents[0] is layers[position - 1]


def read_keras(path, source):
    """Return the :class:`Network` of a ``.keras`` or ``.h5`` file."""
    keras = _keras()
    try:
        model = keras.models.load_model(str(path), compile=False)
    except Exception as exc:  # Keras and h5py raise many types for a bad file
        first = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else ""
        raise ModelImportError(f"{source}: Keras cannot load it ({type(exc).__name__}: "
                               f"{first}); give a model saved with model.save()") from None
    shape = tuple(model.inputs[0].shape) if getattr(model, "inputs", None) else None
    if shape is None or len(shape) != 4 or None in shape[1:]:
        raise ModelImportError(f"{source}: the input has shape {shape}; give a model of "
                               f"(batch, height, width, 1) images")
    net = _KerasNetwork(source=source, input_shape=(shape[3], shape[1], shape[2]))
    layers = [la for la in model.layers if type(la).__name__ != "InputLayer"]
    for position, layer in enumerate(layers):
        kind = type(layer).__name__
        net.at(position, layer.name, kind)
        cfg = layer.get_config()
        if cfg.get("data_format", "channels_last") != "channels_last":
            net.unsupported("channels_first: only channels_last")
        if kind not in LAYERS:
            net.unsupported()
        if not isinstance(model, keras.Sequential) and not _chained(layer, layers, position):
            net.unsupported("its input is not the previous layer's output: only a chain of "
                            "layers")
        LAYERS[kind](net, layer)
    return net

"""Build the float PyTorch model of a config: one module per config layer, no per-preset classes.

The model takes uint8 images ``[N, H, W]`` (or float pixels already divided by 256), applies the
config's input padding and returns scores: logits for a softmax output, negative squared
distances for an RBF output (so argmax is the class either way).
"""

import os
import tempfile
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from core.errors import UserError

__all__ = ["LeNet", "build_model", "activation_fn", "CheckpointError", "load_checkpoint",
           "save_checkpoint"]


class CheckpointError(UserError):
    """A checkpoint is missing, corrupt or belongs to another config."""


def activation_fn(name):
    """Return the float function of an activation name."""
    return {
        "relu": torch.relu,
        "tanh": torch.tanh,
        "scaled_tanh": lambda x: 1.7159 * torch.tanh(x * (2.0 / 3.0)),
        "sigmoid": torch.sigmoid,
        "none": lambda x: x,
    }[name]


class ConvLayer(nn.Module):
    def __init__(self, layer):
        super().__init__()
        in_c, out_c = layer.in_shape[0], layer.out_shape[0]
        self.conv = nn.Conv2d(in_c, out_c, layer.kernel, padding=layer.padding)
        mask = torch.zeros(out_c, in_c, 1, 1)
        for o, row in enumerate(layer.connections):
            mask[o, list(row), 0, 0] = 1.0
        self.register_buffer("mask", mask, persistent=False)
        if not layer.full:  # fan-in of a sparse map is smaller: rescale the init
            with torch.no_grad():
                fan = mask.sum(dim=1, keepdim=True) * layer.kernel ** 2
                full = in_c * layer.kernel ** 2
                self.conv.weight.mul_(torch.sqrt(full / fan))
        self.act = activation_fn(layer.activation)

    def weight(self):
        return self.conv.weight * self.mask

    def forward(self, x):
        return self.act(F.conv2d(x, self.weight(), self.conv.bias, padding=self.conv.padding))


class PoolLayer(nn.Module):
    def __init__(self, layer):
        super().__init__()
        self.mode, self.size = layer.mode, layer.size
        channels = layer.in_shape[0]
        if self.mode == "subsample":
            # LeCun 1998: (sum of the window) x trainable coefficient + trainable bias, squashed.
            self.coef = nn.Parameter(torch.full((channels,), 1.0 / self.size ** 2))
            self.bias = nn.Parameter(torch.zeros(channels))
        self.act = activation_fn(layer.activation)

    def forward(self, x):
        if self.mode == "max":
            return F.max_pool2d(x, self.size)
        window_sum = F.avg_pool2d(x, self.size) * self.size ** 2
        if self.mode == "avg":
            return window_sum / self.size ** 2
        return self.act(window_sum * self.coef.view(1, -1, 1, 1) + self.bias.view(1, -1, 1, 1))


class DenseLayer(nn.Module):
    def __init__(self, layer):
        super().__init__()
        self.fc = nn.Linear(layer.in_features, layer.out_features)
        self.act = activation_fn(layer.activation)

    def forward(self, x):
        return self.act(self.fc(x.flatten(1)))


class RBFLayer(nn.Module):
    """Euclidean RBF output: scores are negative squared distances to fixed ±1 centers."""

    def __init__(self, layer, seed):
        super().__init__()
        gen = torch.Generator().manual_seed(seed + 1998)
        codes = torch.randint(0, 2, (layer.out_features, layer.in_features), generator=gen)
        self.register_buffer("centers", codes.float() * 2 - 1)

    def forward(self, x):
        x = x.flatten(1)
        return -((x.unsqueeze(1) - self.centers.unsqueeze(0)) ** 2).sum(dim=2)


class LeNet(nn.Module):
    """The network of a :class:`core.config.Config`."""

    def __init__(self, config):
        super().__init__()
        self.config = config
        self.pad = config.input_pad
        layers = []
        for layer in config.layers:
            if layer.kind == "conv":
                layers.append(ConvLayer(layer))
            elif layer.kind == "pool":
                layers.append(PoolLayer(layer))
            elif layer.kind == "dense":
                layers.append(DenseLayer(layer))
            else:
                layers.append(RBFLayer(layer, config.train["seed"]))
        self.layers = nn.ModuleList(layers)

    @staticmethod
    def prepare(images):
        """Turn uint8 images [N, H, W] into float pixels [N, 1, H, W] (value = p / 256)."""
        if images.dtype == torch.uint8:
            images = images.to(torch.float32) / 256.0
        return images.unsqueeze(1) if images.dim() == 3 else images

    def forward(self, images, taps=None):
        x = self.prepare(images)
        if self.pad:
            x = F.pad(x, (self.pad,) * 4)
        for spec, layer in zip(self.config.layers, self.layers, strict=True):
            x = layer(x)
            if taps is not None:
                taps[spec.name] = x
        return x


def build_model(config):
    """Return a freshly initialised :class:`LeNet` seeded by ``config.train['seed']``."""
    torch.manual_seed(config.train["seed"])
    return LeNet(config)


def save_checkpoint(model, config, path):
    """Write ``{"state_dict", "weights_sha256", "preset"}`` atomically to ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {"state_dict": model.state_dict(), "weights_sha256": config.weights_sha256,
               "preset": config.name}
    with tempfile.NamedTemporaryFile(dir=path.parent, suffix=".pt", delete=False) as tmp:
        torch.save(payload, tmp)
    os.replace(tmp.name, path)


def load_checkpoint(config, path):
    """Return the :class:`LeNet` of ``config`` with the weights of checkpoint ``path``."""
    path = Path(path)
    fix = f"run `make train PRESET={config.name}`"
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {path}; {fix}")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for corrupt files
        msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"{path} is not a readable checkpoint ({msg[:120]}); {fix}") \
            from None
    if not isinstance(payload, dict) or "state_dict" not in payload:
        raise CheckpointError(f"{path} has no state_dict; {fix}")
    if payload.get("preset") != config.name:
        raise CheckpointError(f"{path} was trained for preset {payload.get('preset')!r}, not "
                              f"{config.name!r}; {fix}")
    model = LeNet(config)
    try:
        model.load_state_dict(payload["state_dict"])
    except RuntimeError as exc:
        first = str(exc).splitlines()[0]
        raise CheckpointError(f"{path} does not fit the network of {config.path.name} "
                              f"({first}); {fix}") from None
    model.checkpoint_weights_sha256 = payload.get("weights_sha256")
    return model

"""Build the float PyTorch model of a config: one module per config layer, no per-preset classes.

Each layer's module comes from its kind's entry in :data:`quant.layers.MODULES`.

The model takes uint8 images ``[N, H, W]`` (or float pixels already divided by 256), applies the
config's input padding and returns scores: logits for a softmax output, negative squared
distances for an RBF output (so argmax is the class either way).
"""

import copy
import os
import tempfile
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from core.errors import UserError

from .layers import MODULES, activation_fn

__all__ = ["LeNet", "build_model", "activation_fn", "CheckpointError", "load_checkpoint",
           "save_checkpoint"]


class CheckpointError(UserError):
    """A checkpoint is missing, corrupt or belongs to another config."""


class LeNet(nn.Module):
    """The network of a :class:`core.config.Config`."""

    def __init__(self, config):
        super().__init__()
        self.config = config
        self.pad = config.input_pad
        self.layers = nn.ModuleList(MODULES[layer.kind].build(layer, config)
                                    for layer in config.layers)

    def __deepcopy__(self, memo):
        """Copy the weights and share the config (it is immutable)."""
        memo[id(self.config)] = self.config
        clone = type(self).__new__(type(self))
        memo[id(self)] = clone
        clone.__setstate__(copy.deepcopy(self.__dict__, memo))
        return clone

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

"""Build the float PyTorch model of a config: one module per config layer, no per-preset classes.

Each layer's module comes from its kind's entry in :data:`quant.layers.MODULES`.

The model takes uint8 images ``[N, H, W]`` (or float pixels already divided by 256), applies the
config's input padding and returns scores: logits for a softmax output, negative squared
distances for an RBF output (so argmax is the class either way).
"""

import copy
import io
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from core.errors import UserError
from core.paths import SHIPPED_DIR
from core.provenance import write_bytes
from core.records import checkpoint_recorded, make_command

from .layers import MODULES, activation_fn

__all__ = ["LeNet", "build_model", "activation_fn", "CheckpointError", "read_checkpoint",
           "model_from_payload", "load_checkpoint", "save_checkpoint"]


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


def save_checkpoint(model, config, path, provenance=None):
    """Write ``{"state_dict", "weights_sha256", "preset", "provenance"}`` atomically to ``path``
    (a temporary file in its folder, then a rename); ``provenance`` is the checkpoint's record
    (:func:`core.records.checkpoint_record`)."""
    payload = {"state_dict": model.state_dict(), "weights_sha256": config.weights_sha256,
               "preset": config.name}
    if provenance is not None:
        payload["provenance"] = dict(provenance)
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    write_bytes(path, buffer.getvalue())


def _folder_of(path):
    """Return the OUT folder whose ``model.pt`` is ``path`` (None for another file name: the
    hint then names the config's own folder)."""
    path = Path(path)
    return path.parent if path.name == "model.pt" else None


def _restore_hint(config, path):
    make = make_command("checkpoint", config, out=_folder_of(path))
    if (SHIPPED_DIR / f"{config.name}.pt").is_file():
        return f"delete it and run `{make}` to restore the shipped checkpoint"
    return f"delete it and run `{make}` to train a new one"


def read_checkpoint(config, path):
    """Return the payload (a dict) of checkpoint ``path`` for ``config``, without building the
    network: a missing, unreadable or foreign file raises :class:`CheckpointError`."""
    path = Path(path)
    if path.is_dir():
        raise CheckpointError(f"checkpoint {path} is a folder, not a file; give the path of a "
                              f"model.pt, or {_restore_hint(config, path)}")
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {path}; run "
                              f"`{make_command('checkpoint', config, out=_folder_of(path))}`")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # torch raises many types for corrupt files; its advice is not ours
        raise CheckpointError(f"{path} is corrupt (truncated, or not a PyTorch checkpoint); "
                              f"{_restore_hint(config, path)}") from None
    if not isinstance(payload, dict) or not isinstance(payload.get("state_dict"), dict):
        raise CheckpointError(f"{path} is corrupt (no state_dict); {_restore_hint(config, path)}")
    if payload.get("preset") != config.name:
        raise CheckpointError(f"{path} was trained for preset {payload.get('preset')!r}, not "
                              f"{config.name!r}; give the checkpoint of {config.name!r} or run "
                              f"`{make_command('train', config, out=_folder_of(path))}`")
    return payload


def model_from_payload(config, payload, path):
    """Return the :class:`LeNet` of ``config`` holding the weights of a checkpoint payload."""
    model = LeNet(config)
    try:
        model.load_state_dict(payload["state_dict"])
    except RuntimeError as exc:
        first = str(exc).splitlines()[0]
        raise CheckpointError(f"{path} does not fit the network of {config.path.name} "
                              f"({first}); run "
                              f"`{make_command('train', config, out=_folder_of(path))}`") from None
    model.checkpoint_weights_sha256 = payload.get("weights_sha256")
    model.checkpoint_provenance = checkpoint_recorded(config, payload)
    return model


def load_checkpoint(config, path):
    """Return the :class:`LeNet` of ``config`` with the weights of checkpoint ``path``; its
    ``checkpoint_provenance`` is the checkpoint's record
    (:func:`core.records.checkpoint_recorded`)."""
    return model_from_payload(config, read_checkpoint(config, path), path)

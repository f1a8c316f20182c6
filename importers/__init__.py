"""Bring your own model: turn a trained PyTorch, ONNX or Keras model into a config and a float
checkpoint of the flow (``build/<stem>/config.toml`` + ``model.pt``), exactly.

``python -m importers MODEL`` (``make import MODEL=<file>``) reads a ``.pt2``, ``.onnx``,
``.keras`` or ``.h5`` file; :func:`from_module` takes an ``nn.Module`` in Python. The readers
(:mod:`.torch_source`, :mod:`.onnx_source`, :mod:`.keras_source`) feed each source layer to
:class:`.network.Network`, which emits the layer specs of :mod:`core.kinds`; :mod:`.run` writes
the files. Nothing in core/, golden/, hw/, fpga/ or sim/ imports this package.
"""

from .network import ModelImportError, Normalization
from .run import from_module, import_file

__all__ = ["ModelImportError", "Normalization", "from_module", "import_file"]

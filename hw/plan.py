"""The stage plan: how the layers of an integer model become hardware stages.

:data:`STAGES` has one entry per exported layer kind (a :class:`LayerStages` subclass): given
the layer's record and input shape it knows the zero padding its input needs, its MAC geometry
(MAC kinds) and the planned stages (:mod:`hw.stages`) it becomes for the channels per beat
coming in and its folding entry. :func:`plan` chains them from the integer model, inserting the
padders, :class:`~hw.regroup.Regroup` stages and the classifier between them: :mod:`hw.top`
builds the components of the planned stages, :mod:`hw.cycles` adds their figures up, and
neither walks the layers again.
"""

from abc import ABC, abstractmethod

import numpy as np

from core.kinds import KINDS, record_shape
from core.registry import Registry

from .arith import format_shape
from .geometry import MacGeometry, simd_error
from .regroup import regroup_steps
from .stages import (
    PlannedClassifier,
    PlannedGap,
    PlannedMac,
    PlannedPadder,
    PlannedPool,
    PlannedRegroup,
    need_arrays,
    record_activation,
)

__all__ = ["STAGES", "LayerStages", "plan", "layer_plans", "layer_shapes", "mac_layers",
           "mac_geometry"]

#: The hardware stage of each exported layer kind (a :class:`LayerStages` subclass).
STAGES = Registry("hardware stage", exported_only=True)


# -- the registry entries -----------------------------------------------------------------------

class LayerStages(ABC):
    """How one layer becomes hardware stages (the :data:`STAGES` entry of its kind).

    Parameters
    ----------
    index : int
        The layer's index in ``qmodel.json``.
    record : dict
        Its record.
    in_shape : (int, int, int)
        Its input shape (before its own padding).

    Attributes: ``label`` (``layers[i] 'name'``, for messages), ``name``, ``kind``,
    ``out_shape``, ``padding`` (zero rows and columns its input needs, inserted by a
    :class:`~hw.padder.Padder` in front of it), ``geometry`` (a :class:`MacGeometry` for the
    kinds on the MAC array, else ``None``) and ``window`` (the products summed per output of
    those kinds, as :meth:`core.kinds.LayerKind.mac_window` states it, else ``None``).
    """
    padding = 0
    geometry = None
    window = None

    def __init__(self, index, record, in_shape):
        self.index, self.record, self.in_shape = index, record, tuple(in_shape)
        self.name = record.get("name", "?")
        self.kind = record["kind"]
        self.label = f"layers[{index}] {self.name!r}"
        self.out_shape = tuple(record_shape(record, in_shape))

    @property
    def mac(self):
        """Whether the layer runs on the MAC array (and so takes a folding entry)."""
        return KINDS[self.kind].mac

    @abstractmethod
    def stages(self, *, lanes, fold, arrays, load, final):
        """Return the layer's planned stages, given the channels per beat coming in (``lanes``),
        its folding entry (MAC kinds), the arrays (or ``None``: figures only), the names of the
        layers with loaded weights and whether it is the final layer."""


class _MacLayer(LayerStages):
    #: What the MAC array computes: ``"mul"`` (w·x) or ``"sqdiff"`` ((x - w)²).
    op = "mul"

    @property
    def weight_format(self):
        return self.record["weight_format"]

    @property
    def window(self):
        spec = KINDS[self.kind]
        return spec.mac_window(spec.read_record(self.record, self.in_shape), self.in_shape)[1]

    def simd_error(self, simd):
        """Return the message of a ``simd`` that does not divide :attr:`window`, else None."""
        (channels, _, _), (kh, kw), _, dense = self.geometry
        return simd_error(self.label, channels, kh, kw, simd, dense=dense, window=self.window)

    def operands(self, arrays):
        """Return ``(weight[O, C, kh, kw], bias[O] or None)`` for :class:`MacStage`."""
        names = self.record["arrays"]
        geo = self.geometry
        weight = arrays[names["weight"]].reshape((geo.out_channels,) + geo.in_shape[:1]
                                                 + geo.kernel)
        return weight, arrays[names["bias"]]

    def stages(self, *, lanes, fold, arrays, load, final):
        return [PlannedMac(self, fold=fold, arrays=arrays, load=load, final=final)]


@STAGES.register("conv")
class ConvStages(_MacLayer):
    @property
    def padding(self):
        return int(self.record.get("padding", 0))

    @property
    def geometry(self):
        c, h, w = self.in_shape
        p, k = self.padding, int(self.record["kernel"])
        return MacGeometry((c, h + 2 * p, w + 2 * p), (k, k), self.out_shape[0], False)


@STAGES.register("dense")
class DenseStages(_MacLayer):
    @property
    def geometry(self):
        c, h, w = self.in_shape
        return MacGeometry((c, h, w), (h, w), self.out_shape[0], True)


@STAGES.register("rbf")
class RbfStages(DenseStages):
    op = "sqdiff"

    @property
    def weight_format(self):
        return self.record["in_format"]                   # the centers are input codes

    def operands(self, arrays):
        geo = self.geometry
        centers = arrays[self.record["arrays"]["centers"]]
        return centers.reshape((geo.out_channels,) + geo.in_shape), None


@STAGES.register("pool")
class PoolStages(LayerStages):
    @property
    def mode(self):
        """The :class:`~hw.pool.PoolStage` mode."""
        return self.record["mode"]

    def affine(self, arrays):
        """Return the :class:`~hw.pool.PoolStage` arguments of a trainable pool (none)."""
        return {}

    def stages(self, *, lanes, fold, arrays, load, final):
        return [PlannedPool(self, mode=self.mode, lanes=lanes, arrays=arrays)]


@STAGES.register("subsample")
class SubsampleStages(PoolStages):
    mode = "subsample"

    def affine(self, arrays):
        """Return LeCun's per-map coefficient, bias and activation as PoolStage arguments."""
        arrays = need_arrays(self.label, arrays)
        record, names = self.record, self.record["arrays"]
        return {"coef": arrays[names["weight"]], "bias": arrays[names["bias"]],
                "coef_format": record["weight_format"], "acc_bits": record["acc_bits"],
                "activation": record_activation(self.label, record, arrays, self.out_shape[0])}


@STAGES.register("gap")
class GapStages(LayerStages):
    def stages(self, *, lanes, fold, arrays, load, final):
        return [PlannedGap(self, lanes=lanes)]


def _input_shape(meta):
    inp = meta["input"]
    return (inp.get("channels", 1), inp["height"] + 2 * inp["pad"],
            inp["width"] + 2 * inp["pad"])


def layer_plans(meta):
    """Return the :data:`STAGES` entry of each layer of ``meta``, in order."""
    shape = _input_shape(meta)
    entries = []
    for index, record in enumerate(meta["layers"]):
        entry = STAGES[record["kind"]](index, record, shape)
        entries.append(entry)
        shape = entry.out_shape
    return entries


def layer_shapes(meta):
    """Return the ``(channels, height, width)`` input shape of each layer, in order."""
    return [entry.in_shape for entry in layer_plans(meta)]


def mac_layers(meta):
    """Return the :data:`STAGES` entries of the layers that take a folding entry, in order."""
    return [entry for entry in layer_plans(meta) if entry.mac]


def mac_geometry(record, in_shape):
    """Return the :class:`MacGeometry` of a MAC layer's record with input ``in_shape``."""
    return STAGES[record["kind"]](0, record, in_shape).geometry


def plan(meta, folding=None, arrays=None, *, load=()):
    """Return the planned stages (:class:`PlannedStage`), input to output, of the integer model.

    ``meta`` is ``qmodel.json``; ``folding`` one ``{"pe", "simd"[, "mul"]}`` per MAC layer, as
    :func:`hw.folding.check_folding` returns it (``None``: all 1); ``arrays`` the int64 arrays
    of ``qmodel.npz`` by name (needed to build the components, and for the figures of a layer
    with a connection table); the MAC layers named in ``load`` keep their weights in loadable
    memories. Between stages the channels per beat change only where a stage needs it
    (a :class:`~hw.regroup.Regroup` in front of MAC stages, padders and the classifier).
    """
    if arrays is not None:
        arrays = {name: np.asarray(value, dtype=np.int64) for name, value in arrays.items()}
    layers = meta["layers"]
    if not layers:
        raise ValueError("qmodel has no layers")
    entries = layer_plans(meta)
    last = entries[-1]
    scores = [name for name, k in KINDS.items() if k.exported and k.final != "never"]
    if not last.record.get("final", False) or KINDS[last.kind].final == "never":
        raise ValueError(f"{last.label}: the last layer must be a final "
                         f"{' or '.join(scores)} layer")
    for entry in entries[:-1]:
        if entry.record.get("final", False):
            raise ValueError(f"{entry.label}: only the last layer can be final")
    folds = iter(folding if folding is not None else
                 [{"pe": 1, "simd": 1} for entry in entries if entry.mac])
    inp = meta["input"]
    channels = inp.get("channels", 1)
    stages = []
    # What the stream between the last stage planned and the next carries.
    stream = {"lanes": channels, "code": format_shape(inp["format"]),
              "shape": (channels, inp["height"], inp["width"])}

    def add(stage):
        # The channels per beat change between stages: gather or split (hw.regroup).
        if stage.in_lanes is not None:
            shape = stream["shape"]
            for n_in, n_out in regroup_steps(stream["lanes"], stage.in_lanes):
                stages.append(PlannedRegroup(f"{stage.owner}.regroup", stage.owner,
                                             shape=shape, code=stream["code"], n_in=n_in,
                                             n_out=n_out))
        stages.append(stage)
        stream.update(lanes=stage.out_lanes, code=stage.out_code, shape=stage.out_shape)

    pad = inp["pad"] + entries[0].padding      # the first layer's padding joins the input's
    if pad:
        add(PlannedPadder("input", "input", in_shape=stream["shape"], pad=pad,
                          fmt=inp["format"]))
    for entry in entries:
        if entry.padding and entry is not entries[0]:
            add(PlannedPadder(f"{entry.name}.pad", entry.name, in_shape=entry.in_shape,
                              pad=entry.padding, fmt=entry.record["in_format"]))
        for stage in entry.stages(lanes=stream["lanes"], fold=next(folds) if entry.mac else None,
                                  arrays=arrays, load=load, final=entry is last):
            add(stage)
    add(PlannedClassifier(num_classes=last.out_shape[0], in_bits=last.record["acc_bits"],
                          score_bits=meta["output"]["score_bits"],
                          output=meta["output"]["kind"]))
    return stages

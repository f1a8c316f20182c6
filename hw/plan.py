"""The stage table: one description per hardware stage, read from the integer model.

:func:`plan` turns ``qmodel.json`` + arrays + folding into the list of stage components that
:mod:`hw.top` chains and :mod:`hw.cycles` counts, so a layer kind is described in one place.
"""


import numpy as np

from .arith import Activation, format_shape
from .mac import MacStage, group_steps, simd_split
from .output import ClassifyStage
from .padder import Padder
from .pool import PoolStage
from .regroup import Regroup, regroup_steps

__all__ = ["MAC_KINDS", "plan", "mac_cycles",
           "mac_steps", "mac_group_steps", "connections_of", "mac_c_block"]

#: Layer kinds computed on the PE × SIMD MAC array (and so folded).
MAC_KINDS = ("conv", "dense", "rbf")

def _label(index, layer):
    return f"layers[{index}] {layer.get('name', '?')!r}"

def _per_channel(value, channels):
    if isinstance(value, list):
        return [int(v) for v in value]
    return [int(value)] * channels

def mac_layers(meta):
    """Return ``[(index, layer)]`` of the layers that take a folding entry, in order."""
    return [(i, layer) for i, layer in enumerate(meta["layers"]) if layer["kind"] in MAC_KINDS]


def layer_shapes(meta):
    """Return the ``(channels, height, width)`` input shape of each layer, in order."""
    inp = meta["input"]
    shape = (inp.get("channels", 1), inp["height"] + 2 * inp["pad"],
             inp["width"] + 2 * inp["pad"])
    shapes = []
    for layer in meta["layers"]:
        shapes.append(shape)
        kind = layer["kind"]
        c, h, w = shape
        if kind == "conv":
            k, p = layer["kernel"], layer.get("padding", 0)
            shape = (layer["out_shape"][0], h + 2 * p - k + 1, w + 2 * p - k + 1)
        elif kind in ("pool", "subsample"):
            s = layer["size"]
            shape = (c, h // s, w // s)
        else:
            shape = (layer["out_features"], 1, 1)
    return shapes

def mac_geometry(layer, shape):
    """Return ``(in_shape, kernel, out_channels)`` of a MAC layer as :class:`MacStage` sees it."""
    c, h, w = shape
    if layer["kind"] == "conv":
        p = layer.get("padding", 0)
        k = layer["kernel"]
        return (c, h + 2 * p, w + 2 * p), (k, k), layer["out_shape"][0]
    return (c, h, w), (h, w), layer["out_features"]

def connections_of(layer, arrays):
    """Return the ``[O, C]`` connection table of a conv layer, or None (full).

    When the layer names a table but ``arrays`` does not hold it, raise ``ValueError``: the
    steps, cycles and MACs of a sparse layer depend on its table, and counting it as full would
    silently report a dense layer's figures.
    """
    name = layer.get("arrays", {}).get("connections")
    if name is None or layer["kind"] != "conv":
        return None
    if arrays is None or name not in arrays:
        raise ValueError(f"layer {layer['name']!r} has a connection table ({name!r}) but no "
                         f"arrays were given; pass the integer model's arrays")
    return np.asarray(arrays[name], dtype=np.int64)

def mac_group_steps(in_shape, kernel, out_channels, pe, simd, connections=None):
    """MAC steps of each group of ``pe`` output channels of a :class:`MacStage` position."""
    c, _, _ = in_shape
    kh, kw = kernel
    c_block, t, r = simd_split(c, kh, kw, simd)
    lists = group_steps(connections, out_channels, c, pe, c_block)
    return [(kh // r) * (kw // t) * len(blocks) for blocks in lists]

def mac_steps(in_shape, kernel, out_channels, pe, simd, connections=None):
    """MAC steps of one output position of a :class:`MacStage` (all its groups)."""
    return sum(mac_group_steps(in_shape, kernel, out_channels, pe, simd, connections))

def mac_cycles(in_shape, kernel, out_channels, pe, simd, connections=None):
    """Cycles per image of a :class:`MacStage` (see its docstring)."""
    c, h, w = in_shape
    kh, kw = kernel
    steps = mac_steps(in_shape, kernel, out_channels, pe, simd, connections)
    c_block = simd_split(c, kh, kw, simd)[0]
    return max(h * w * (c // c_block), (h - kh + 1) * (w - kw + 1) * steps)


def mac_c_block(layer, shape, simd):
    """Return the channels per input beat of a MAC layer: ``c_block`` of its SIMD split.

    The channels per beat of the streams: a MAC stage takes one channel block and gives one
    group of ``pe`` output channels per beat; pools keep the beats they are given; padders
    (and the input) carry whole positions; the classifier takes one score per beat.
    """
    in_shape, kernel, _ = mac_geometry(layer, shape)
    return simd_split(in_shape[0], *kernel, simd)[0]

def _activation(label, layer, arrays, channels):
    names = layer.get("arrays", {})
    table = arrays[names["lut"]] if "lut" in names else None
    return Activation(name=label, activation=layer.get("activation", {"kind": "none"}),
                      out_format=layer["out_format"],
                      acc_frac=_per_channel(layer["acc_frac"], channels),
                      table=None if table is None else [int(v) for v in table])

def plan(meta, arrays, folding=None, load=()):
    """Return the list of stage components, input to output, of the integer model.

    ``meta`` is ``qmodel.json``, ``arrays`` the int64 arrays of ``qmodel.npz`` (by name),
    ``folding`` as :func:`hw.folding.check_folding` returns it; the MAC layers named in ``load`` keep their
    weights in loadable memories (``MacStage(weight_load=True)``) instead of ROMs.
    """
    arrays = {name: np.asarray(value, dtype=np.int64) for name, value in arrays.items()}
    inp = meta["input"]
    layers = meta["layers"]
    if not layers:
        raise ValueError("qmodel has no layers")
    last = layers[-1]
    if not last.get("final", False) or last["kind"] not in ("dense", "rbf"):
        raise ValueError(f"{_label(len(layers) - 1, last)}: the last layer must be a final "
                         f"dense or rbf layer")
    stages = []
    pad = inp["pad"]
    first = layers[0]
    folded_pad = first["kind"] == "conv" and first.get("padding", 0) > 0
    if folded_pad:
        pad += first["padding"]
    if pad:
        stages.append(Padder(channels=inp.get("channels", 1), height=inp["height"],
                             width=inp["width"], pad=pad, fmt=inp["format"]))
    shapes = layer_shapes(meta)
    fold_iter = iter(folding)
    lanes = inp.get("channels", 1)

    def regroup(need):
        # Channels per beat change between stages: gather or split (hw.regroup).
        shape = (stages[-1].o.payload.shape().elem_shape if stages
                 else format_shape(inp["format"]))
        for n_in, n_out in regroup_steps(lanes, need):
            stages.append(Regroup(shape=shape, n_in=n_in, n_out=n_out))

    for index, layer in enumerate(layers):
        label = _label(index, layer)
        kind = layer["kind"]
        shape = shapes[index]
        names = layer.get("arrays", {})
        final = layer.get("final", False)
        if kind in MAC_KINDS:
            fold = next(fold_iter)
            in_shape, kernel, out_channels = mac_geometry(layer, shape)
            p = layer.get("padding", 0) if kind == "conv" else 0
            if p and not (index == 0 and folded_pad):
                regroup(shape[0])                 # the padder takes whole positions
                stages.append(Padder(channels=shape[0], height=shape[1], width=shape[2],
                                     pad=p, fmt=layer["in_format"]))
                lanes = shape[0]
            regroup(mac_c_block(layer, shape, fold["simd"]))
            lanes = fold["pe"]
            if kind == "rbf":
                weight = arrays[names["centers"]].reshape((out_channels,) + in_shape)
                bias, weight_format, op = None, layer["in_format"], "sqdiff"
            else:
                if kind == "conv":
                    weight = arrays[names["weight"]]
                else:
                    weight = arrays[names["weight"]].reshape((out_channels,) + in_shape)
                bias, weight_format, op = arrays[names["bias"]], layer["weight_format"], "mul"
            activation = None if final else _activation(label, layer, arrays, out_channels)
            stages.append(MacStage(label=label, in_shape=in_shape,
                                   in_format=layer["in_format"], weight_format=weight_format,
                                   weight=weight, bias=bias, acc_bits=layer["acc_bits"],
                                   activation=activation, op=op, pe=fold["pe"],
                                   simd=fold["simd"],
                                   connections=connections_of(layer, arrays),
                                   dense=kind != "conv",
                                   weight_load=layer["name"] in load,
                                   lut_mul=fold.get("mul") == "lut"))
        elif kind == "pool":
            stages.append(PoolStage(label=label, mode=layer["mode"], size=layer["size"],
                                    in_shape=shape, in_format=layer["in_format"], lanes=lanes))
        elif kind == "subsample":
            stages.append(PoolStage(label=label, mode="subsample", size=layer["size"],
                                    in_shape=shape, in_format=layer["in_format"],
                                    coef=arrays[names["weight"]], bias=arrays[names["bias"]],
                                    coef_format=layer["weight_format"],
                                    acc_bits=layer["acc_bits"],
                                    activation=_activation(label, layer, arrays, shape[0]),
                                    lanes=lanes))
        else:
            raise ValueError(f"{label}: layer kind {kind!r} has no hardware stage; expected "
                             f"conv, pool, subsample, dense or rbf")
        if final and index != len(layers) - 1:
            raise ValueError(f"{label}: only the last layer can be final")
    last = layers[-1]
    out = meta["output"]
    regroup(1)                            # the classifier takes one score per beat
    stages.append(ClassifyStage(num_classes=last["out_features"], in_bits=last["acc_bits"],
                                score_bits=out["score_bits"], kind=out["kind"]))
    return stages

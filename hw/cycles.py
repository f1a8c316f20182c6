"""Cycle model: cycles per image of every stage, initiation interval, latency, cost.

A stage's cycles per image are those it needs when its input is always available and its output
always accepted. Streaming images back to back, the accelerator's interval between results is
the largest of them (``cycles_per_image``); the stages are built so that the RTL reaches exactly
this interval (no bubbles between rows or images; the conv line buffer holds ``2·k`` rows, the
dense input buffer two images). ``latency_cycles`` is the first image's trip through an empty
pipeline, from the cycle its first pixel is accepted to the cycle its result is valid, with the
source presenting pixels back to back and the sink always ready.
"""

import argparse
import json
from pathlib import Path

import numpy as np

import golden

from .arith import format_shape
from .folding import check_folding, derive_folding
from .mac import mac_extra_latency, mac_resources, simd_options
from .plan import (
    MAC_KINDS,
    connections_of,
    layer_shapes,
    mac_c_block,
    mac_cycles,
    mac_geometry,
    mac_group_steps,
)
from .pool import pool_latency, pool_resources
from .regroup import regroup_steps

__all__ = ["stage_table", "cycle_model", "write_cycles_json", "load_qmodel"]


def _lut_bits(layer):
    act = layer.get("activation", {"kind": "none"})
    if layer.get("final", False) or act.get("kind") != "lut":
        return 0
    return (1 << act["in_bits"]) * format_shape(layer["out_format"]).width


def stage_table(meta, folding=None, arrays=None):
    """Return one dict per hardware stage, input to output (as :func:`hw.plan.plan` builds them).

    Each has ``name``, ``kind``, ``cycles`` (per image), ``latency`` (pipeline cycles of the
    stage, see the stage classes), ``multipliers``, ``macs`` (useful multiply-accumulates per
    image: connected pairs only), ``dense_macs`` (as if every table were full) and
    ``resources``; for MAC stages ``pe``, ``simd``, ``split`` and ``steps`` (per output
    position); plus the geometry the latency model needs. A layer with a connection table needs
    ``arrays`` (its steps depend on the table).
    """
    folding = check_folding(meta, folding)
    inp = meta["input"]
    layers = meta["layers"]
    stages = []
    pad = inp["pad"]
    first_pad = layers[0]["kind"] == "conv" and layers[0].get("padding", 0) > 0
    if first_pad:
        pad += layers[0]["padding"]
    channels = inp.get("channels", 1)
    none = {"multipliers": 0, "memory_bits": {}}

    def padder(name, c, h, w, p):
        stages.append({"name": name, "kind": "pad", "cycles": (h + 2 * p) * (w + 2 * p),
                       "latency": 1, "multipliers": 0, "macs": 0, "dense_macs": 0,
                       "in_hw": (h, w), "pad": p, "resources": none})

    lanes = channels

    def regroup(name, need, positions, c):
        # hw.regroup stages between beats of `lanes` and `need` channels.
        for n_in, n_out in regroup_steps(lanes, need):
            stages.append({"name": f"{name}.regroup", "kind": "regroup",
                           "cycles": positions * c // min(n_in, n_out), "latency": 1,
                           "n_in": n_in, "n_out": n_out, "multipliers": 0, "macs": 0,
                           "dense_macs": 0, "resources": none})

    if pad:
        padder("input", channels, inp["height"], inp["width"], pad)
    shapes = layer_shapes(meta)
    folds = iter(folding)
    for index, layer in enumerate(layers):
        kind = layer["kind"]
        c, h, w = shapes[index]
        if kind in MAC_KINDS:
            fold = next(folds)
            p = layer.get("padding", 0) if kind == "conv" else 0
            if p and not (index == 0 and first_pad):
                regroup(layer["name"], c, h * w, c)
                padder(f"{layer['name']}.pad", c, h, w, p)
                lanes = c
            regroup(layer["name"], mac_c_block(layer, shapes[index], fold["simd"]),
                    (h + 2 * p) * (w + 2 * p), c)
            lanes = fold["pe"]
            in_shape, kernel, out_channels = mac_geometry(layer, shapes[index])
            pe, simd = fold["pe"], fold["simd"]
            _, hh, ww = in_shape
            kh, kw = kernel
            positions = (hh - kh + 1) * (ww - kw + 1)
            table = connections_of(layer, arrays)
            pairs = int(table.sum()) if table is not None else out_channels * c
            per_group = mac_group_steps(in_shape, kernel, out_channels, pe, simd, table)
            steps = sum(per_group)
            lut = _lut_bits(layer) > 0
            bias = True
            if arrays is not None and kind != "rbf" and layer["arrays"]["bias"] in arrays:
                bias = bool(np.any(np.asarray(arrays[layer["arrays"]["bias"]])))
            w_format = layer["in_format"] if kind == "rbf" else layer["weight_format"]
            resources = mac_resources(
                in_bits=layer["in_format"]["bits"], w_bits=w_format["bits"],
                acc_bits=layer["acc_bits"], in_shape=in_shape, kernel=kernel,
                out_channels=out_channels, pe=pe, simd=simd, rom_rows=steps,
                bias=kind != "rbf" and bias, lut_bits=_lut_bits(layer))
            c_block, t, r = simd_options(c, kh, kw)[simd]
            stages.append({
                "name": layer["name"], "kind": kind, "blocks": c // c_block,
                "group_steps": per_group,
                "cycles": mac_cycles(in_shape, kernel, out_channels, pe, simd, table),
                "latency": mac_extra_latency(simd, lut),
                "multipliers": pe * simd, "macs": positions * pairs * kh * kw,
                "dense_macs": positions * out_channels * c * kh * kw,
                "pe": pe, "simd": simd, "groups": out_channels // pe, "steps": steps,
                "split": {"c_block": c_block, "t": t, "r": r},
                "in_shape": in_shape, "kernel": kernel, "out_hw": (hh - kh + 1, ww - kw + 1),
                "resources": resources,
            })
        elif kind in ("pool", "subsample"):              # keeps the beats it is given
            s = layer["size"]
            lut = _lut_bits(layer) if kind == "subsample" else 0
            mode = "subsample" if kind == "subsample" else layer["mode"]
            in_bits = layer["in_format"]["bits"]
            part = in_bits if mode == "max" else in_bits + (s * s - 1).bit_length() + 1
            resources = pool_resources(mode, c, w, s, lanes, part, lut)
            stages.append({"name": layer["name"], "kind": kind, "cycles": h * w * (c // lanes),
                           "latency": pool_latency(mode, lut > 0),
                           "multipliers": resources["multipliers"], "macs": 0,
                           "dense_macs": 0, "in_shape": (c, h, w), "size": s,
                           "blocks": c // lanes, "resources": resources})
        else:
            raise ValueError(f"layers[{index}] {layer['name']!r}: layer kind {kind!r} has no "
                             f"hardware stage")
    classes = layers[-1]["out_features"]
    regroup("output", 1, 1, classes)
    stages.append({"name": "output", "kind": "classify", "cycles": classes + 1,
                   "latency": 1, "multipliers": 0, "macs": 0, "dense_macs": 0,
                   "resources": none})
    return stages


def _latency(stages, meta):
    """Follow the first image through an empty pipeline; return its result's valid cycle."""
    inp = meta["input"]
    n_pixels = inp["height"] * inp["width"]
    times = list(range(n_pixels))           # cycle each source beat could be accepted
    for st in stages:
        kind = st["kind"]
        if kind == "pad":
            h, w = st["in_hw"]
            p = st["pad"]
            out, t, j = [], -1, 0
            for r in range(h + 2 * p):
                for c in range(w + 2 * p):
                    inside = p <= r < h + p and p <= c < w + p
                    t = max(t + 1, times[j]) if inside else t + 1
                    if inside:
                        j += 1
                    out.append(t + 1)
            times = out
        elif kind in MAC_KINDS:
            _, hh, ww = st["in_shape"]
            kh, _ = st["kernel"]
            oh, ow = st["out_hw"]
            steps = st["steps"]
            accepted, t = [], -1
            for v in times:
                t = max(t + 1, v)
                accepted.append(t)
            per_row = ww * st["blocks"]
            row_ready = [accepted[(r + 1) * per_row - 1] + 1 for r in range(hh)]
            out, start = [], -steps
            for ro in range(oh):
                for _ in range(ow):
                    start = max(start + steps, row_ready[ro + kh - 1])
                    done = start
                    for group in st["group_steps"]:    # one output beat per group
                        done += group
                        out.append(done + st["latency"])
            times = out
        elif kind == "regroup":
            n_in, n_out = st["n_in"], st["n_out"]
            out, t = [], None
            if n_out >= n_in:                          # gather k beats into one
                k = n_out // n_in
                for j, v in enumerate(times):
                    t = v if t is None else max(t + 1, v)
                    if j % k == k - 1:
                        out.append(t + 1)
            else:                                      # split one beat into k
                k = n_in // n_out
                for v in times:
                    t = v if t is None else max(t + k, v)
                    out.extend(t + 1 + i for i in range(k))
            times = out
        elif kind in ("pool", "subsample"):
            _, h, w = st["in_shape"]
            s = st["size"]
            accepted, t = [], -1
            for v in times:
                t = max(t + 1, v)
                accepted.append(t)
            blocks = st["blocks"]
            times = [accepted[((r * s + s - 1) * w + c * s + s - 1) * blocks + b]
                     + st["latency"]
                     for r in range(h // s) for c in range(w // s) for b in range(blocks)]
        else:
            times = [times[-1] + st["latency"]]
    return times[-1]


def cycle_model(meta, folding=None, arrays=None):
    """Return the cycle model of the accelerator of ``meta`` with ``folding``.

    ``{"cycles_per_image", "latency_cycles", "multipliers", "macs", "dense_macs",
    "memory_bits", "stages"}``: ``multipliers`` counts the PE × SIMD arrays plus the
    per-channel coefficient multipliers of subsampling stages; ``macs`` the useful MACs of one
    image (conv, dense, rbf; connected pairs only), ``dense_macs`` the same with every
    connection table full; ``memory_bits`` the total per kind (``ring``, ``weights``, ``bias``,
    ``lut``, ``partial``). Each stage lists ``name``, ``kind``, ``cycles``, ``latency``,
    ``multipliers``, ``macs``, ``resources`` (and ``pe``, ``simd``, ``split``, ``steps`` for
    MAC stages). ``arrays`` is needed when a layer has a connection table.
    """
    stages = stage_table(meta, folding, arrays)
    keys = ("name", "kind", "cycles", "latency", "multipliers", "macs", "pe", "simd", "split",
            "steps", "resources")
    public = [{k: v for k, v in st.items() if k in keys} for st in stages]
    memory = {}
    for st in stages:
        for kind, bits in st["resources"]["memory_bits"].items():
            memory[kind] = memory.get(kind, 0) + bits
    return {
        "cycles_per_image": max(st["cycles"] for st in stages),
        "latency_cycles": _latency(stages, meta),
        "multipliers": sum(st["multipliers"] for st in stages),
        "macs": sum(st["macs"] for st in stages),
        "dense_macs": sum(st["dense_macs"] for st in stages),
        "memory_bits": memory,
        "stages": public,
    }


def write_cycles_json(model, path):
    """Write a :func:`cycle_model` result as ``cycles.json`` (sorted keys, stable bytes)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(model, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return path


def load_qmodel(json_path):
    """Return ``(meta, arrays)`` of ``qmodel.json`` and the ``qmodel.npz`` beside it, verified."""
    json_path = Path(json_path)
    model = golden.IntegerModel.from_files(json_path, json_path.with_suffix(".npz"))
    return model.meta, model.arrays


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m hw.cycles", description=__doc__.split("\n")[0])
    parser.add_argument("--qmodel", required=True, help="path of qmodel.json")
    parser.add_argument("--folding", help="JSON list of {pe, simd}, or a file holding it")
    parser.add_argument("--target-cycles", type=int, help="derive the folding for this target")
    parser.add_argument("--out", help="write cycles.json here")
    args = parser.parse_args(argv)
    meta, arrays = load_qmodel(args.qmodel)
    if args.target_cycles:
        folding = derive_folding(meta, args.target_cycles, arrays)
    else:
        folding = _load_folding(args.folding)
    model = cycle_model(meta, folding, arrays)
    model["folding"] = check_folding(meta, folding)
    if args.out:
        write_cycles_json(model, args.out)
    print(json.dumps({k: model[k] for k in ("cycles_per_image", "latency_cycles",
                                            "multipliers", "macs", "folding")}))
    return 0


def _load_folding(text):
    if text is None:
        return None
    path = Path(text)
    if path.is_file():
        text = path.read_text(encoding="utf-8")
    return json.loads(text)


if __name__ == "__main__":
    raise SystemExit(main())

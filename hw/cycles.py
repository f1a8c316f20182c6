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

from .plan import MAC_KINDS, check_folding, layer_shapes, mac_cycles, mac_geometry

__all__ = ["stage_table", "cycle_model", "derive_folding", "write_cycles_json", "load_qmodel"]


def _divisors(n):
    return [d for d in range(1, n + 1) if n % d == 0]


def _connected(layer, arrays):
    """Return the connected input channels of each output channel of a conv layer."""
    name = layer.get("arrays", {}).get("connections")
    if arrays is None or name is None or name not in arrays:
        return None
    return [int(v) for v in arrays[name].sum(axis=1)]


def stage_table(meta, folding=None, arrays=None):
    """Return one dict per hardware stage, input to output (as :func:`hw.plan.plan` builds them).

    Each has ``name``, ``kind``, ``cycles`` (per image), ``multipliers``, ``macs`` (useful
    multiply-accumulates per image: connected pairs only when ``arrays`` holds the connection
    table), and for MAC stages ``pe``, ``simd``, ``fold`` and ``groups``; plus the geometry the
    latency model needs.
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

    def padder(name, c, h, w, p):
        stages.append({"name": name, "kind": "pad", "cycles": (h + 2 * p) * (w + 2 * p),
                       "multipliers": 0, "macs": 0, "in_hw": (h, w), "pad": p})

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
                padder(f"{layer['name']}.pad", c, h, w, p)
            in_shape, kernel, out_channels = mac_geometry(layer, shapes[index])
            pe, simd = fold["pe"], fold["simd"]
            _, hh, ww = in_shape
            kh, kw = kernel
            positions = (hh - kh + 1) * (ww - kw + 1)
            connected = _connected(layer, arrays)
            fan = (sum(connected) if connected is not None else out_channels * c) * kh * kw
            stages.append({
                "name": layer["name"], "kind": kind,
                "cycles": mac_cycles(in_shape, kernel, out_channels, pe, simd),
                "multipliers": pe * simd, "macs": positions * fan,
                "pe": pe, "simd": simd, "groups": out_channels // pe,
                "fold": kh * kw * c // simd,
                "in_shape": in_shape, "kernel": kernel, "out_hw": (hh - kh + 1, ww - kw + 1),
            })
        elif kind in ("pool", "subsample"):
            s = layer["size"]
            stages.append({"name": layer["name"], "kind": kind, "cycles": h * w,
                           "multipliers": c if kind == "subsample" else 0, "macs": 0,
                           "in_shape": (c, h, w), "size": s})
        else:
            raise ValueError(f"layers[{index}] {layer['name']!r}: layer kind {kind!r} has no "
                             f"hardware stage")
    stages.append({"name": "output", "kind": "classify", "cycles": 1, "multipliers": 0,
                   "macs": 0})
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
            steps = st["groups"] * st["fold"]
            accepted, t = [], -1
            for v in times:
                t = max(t + 1, v)
                accepted.append(t)
            row_ready = [accepted[(r + 1) * ww - 1] + 1 for r in range(hh)]
            out, start = [], -steps
            for ro in range(oh):
                for _ in range(ow):
                    start = max(start + steps, row_ready[ro + kh - 1])
                    out.append(start + steps + 2)
            times = out
        elif kind in ("pool", "subsample"):
            _, h, w = st["in_shape"]
            s = st["size"]
            accepted, t = [], -1
            for v in times:
                t = max(t + 1, v)
                accepted.append(t)
            times = [accepted[(r * s + s - 1) * w + c * s + s - 1] + 2
                     for r in range(h // s) for c in range(w // s)]
        else:
            times = [times[-1] + 1]
    return times[-1]


def cycle_model(meta, folding=None, arrays=None):
    """Return ``{"cycles_per_image", "latency_cycles", "multipliers", "macs", "stages"}``.

    ``multipliers`` counts the PE × SIMD arrays plus the per-channel coefficient multipliers of
    subsampling stages. ``macs`` counts the useful MACs of one image (conv, dense, rbf).
    """
    stages = stage_table(meta, folding, arrays)
    public = [{k: v for k, v in st.items()
               if k in ("name", "kind", "cycles", "multipliers", "macs", "pe", "simd")}
              for st in stages]
    return {
        "cycles_per_image": max(st["cycles"] for st in stages),
        "latency_cycles": _latency(stages, meta),
        "multipliers": sum(st["multipliers"] for st in stages),
        "macs": sum(st["macs"] for st in stages),
        "stages": public,
    }


def derive_folding(meta, target_cycles):
    """Return the folding with the fewest multipliers whose cycles per image meet the target.

    Each MAC layer gets the ``(pe, simd)`` with the smallest ``pe·simd`` whose stage needs at
    most ``target_cycles`` (ties: fewer cycles, then smaller ``pe``). Raises
    :class:`ValueError` naming the stage when no folding reaches the target.
    """
    if not isinstance(target_cycles, int) or isinstance(target_cycles, bool) \
            or target_cycles < 1:
        raise TypeError(f"target_cycles must be a positive integer, not {target_cycles!r}")
    folding = []
    shapes = layer_shapes(meta)
    for index, layer in enumerate(meta["layers"]):
        if layer["kind"] not in MAC_KINDS:
            continue
        in_shape, kernel, out_channels = mac_geometry(layer, shapes[index])
        best = None
        for pe in _divisors(out_channels):
            for simd in _divisors(in_shape[0]):
                cycles = mac_cycles(in_shape, kernel, out_channels, pe, simd)
                if cycles > target_cycles:
                    continue
                key = (pe * simd, cycles, pe)
                if best is None or key < best[0]:
                    best = (key, {"pe": pe, "simd": simd})
        if best is None:
            fastest = mac_cycles(in_shape, kernel, out_channels, out_channels, in_shape[0])
            raise ValueError(f"layers[{index}] {layer['name']!r}: no folding reaches "
                             f"{target_cycles} cycles per image; fully parallel it needs "
                             f"{fastest}; raise the target")
        folding.append(best[1])
    for st in stage_table(meta, folding):
        if st["cycles"] > target_cycles:
            raise ValueError(f"stage {st['name']!r} ({st['kind']}) needs {st['cycles']} cycles "
                             f"per image whatever the folding; raise the target to at least "
                             f"{st['cycles']}")
    return folding


def write_cycles_json(model, path):
    """Write a :func:`cycle_model` result as ``cycles.json`` (sorted keys, stable bytes)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(model, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return path


def load_qmodel(json_path):
    """Return ``(meta, arrays)`` of ``qmodel.json`` and the ``qmodel.npz`` beside it, verified."""
    json_path = Path(json_path)
    meta = json.loads(json_path.read_text(encoding="utf-8"))
    npz_path = json_path.with_suffix(".npz")
    try:
        import golden
        model = golden.IntegerModel.from_files(json_path, npz_path)
        return model.meta, model.arrays
    except ImportError:                                      # pragma: no cover
        import numpy as np
        with np.load(npz_path, allow_pickle=False) as archive:
            return meta, {key: archive[key] for key in meta["arrays"]}


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m hw.cycles", description=__doc__.split("\n")[0])
    parser.add_argument("--qmodel", required=True, help="path of qmodel.json")
    parser.add_argument("--folding", help="JSON list of {pe, simd}, or a file holding it")
    parser.add_argument("--target-cycles", type=int, help="derive the folding for this target")
    parser.add_argument("--out", help="write cycles.json here")
    args = parser.parse_args(argv)
    meta, arrays = load_qmodel(args.qmodel)
    if args.target_cycles:
        folding = derive_folding(meta, args.target_cycles)
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

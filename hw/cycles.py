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

import golden
from core.provenance import write_bytes

from .folding import check_folding, derive_folding
from .plan import plan

__all__ = ["stage_table", "cycle_model", "first_result_cycle", "cycles_json_text",
           "write_cycles_json", "load_qmodel"]

#: The keys of a stage in :func:`cycle_model`'s ``stages`` (and ``cycles.json``).
PUBLIC_KEYS = ("name", "kind", "cycles", "latency", "multipliers", "macs", "pe", "simd",
               "split", "steps", "resources")


def stage_table(meta, folding=None, arrays=None):
    """Return one dict per hardware stage, input to output: :meth:`hw.stages.PlannedStage.info`
    of the planned stages.

    Each has ``name``, ``kind``, ``cycles`` (per image), ``latency`` (pipeline cycles of the
    stage, see the stage classes), ``multipliers``, ``macs`` (useful multiply-accumulates per
    image: connected pairs only), ``dense_macs`` (as if every table were full) and
    ``resources``; MAC stages add ``pe``, ``simd``, ``split``, ``steps`` (per output
    position), ``groups``, ``in_shape`` and ``kernel``; regroups ``n_in`` and ``n_out``. A
    layer with a connection table needs ``arrays`` (its steps depend on the table).
    """
    return [stage.info() for stage in plan(meta, check_folding(meta, folding), arrays)]


def first_result_cycle(meta, stages):
    """Return the cycle the first image's result is valid, its first pixel accepted at cycle 0
    and the others back to back, through the empty pipeline of planned ``stages``."""
    inp = meta["input"]
    times = list(range(inp["height"] * inp["width"]))
    for stage in stages:
        times = stage.times(times)
    return times[-1]


def cycle_model(meta, folding=None, arrays=None):
    """Return the cycle model of the accelerator of ``meta`` with ``folding``.

    ``{"cycles_per_image", "latency_cycles", "multipliers", "macs", "dense_macs",
    "memory_bits", "stages"}``: ``multipliers`` counts the PE × SIMD arrays plus the
    per-channel multipliers of subsampling and global average pooling stages; ``macs`` the
    useful MACs of one image (conv, dense, rbf; connected pairs only), ``dense_macs`` the same
    with every connection table full; ``memory_bits`` the total per kind (``ring``,
    ``weights``, ``bias``, ``lut``, ``partial``). Each stage lists ``name``, ``kind``,
    ``cycles``, ``latency``, ``multipliers``, ``macs``, ``resources`` (and ``pe``, ``simd``,
    ``split``, ``steps`` for MAC stages). ``arrays`` is needed when a layer has a connection
    table.
    """
    stages = plan(meta, check_folding(meta, folding), arrays)
    memory = {}
    for stage in stages:
        for what, bits in stage.resources["memory_bits"].items():
            memory[what] = memory.get(what, 0) + bits
    return {
        "cycles_per_image": max(stage.cycles for stage in stages),
        "latency_cycles": first_result_cycle(meta, stages),
        "multipliers": sum(stage.multipliers for stage in stages),
        "macs": sum(stage.macs for stage in stages),
        "dense_macs": sum(stage.dense_macs for stage in stages),
        "memory_bits": memory,
        "stages": [{k: v for k, v in stage.info().items() if k in PUBLIC_KEYS}
                   for stage in stages],
    }


def cycles_json_text(model):
    """Return the text of ``cycles.json`` for a :func:`cycle_model` result (sorted keys, stable
    bytes)."""
    return json.dumps(model, indent=2, sort_keys=True) + "\n"


def write_cycles_json(model, path):
    """Write a :func:`cycle_model` result as ``cycles.json`` (:func:`cycles_json_text`)
    atomically: on any failure the file that was there is left as it was. Return the path."""
    return write_bytes(path, cycles_json_text(model).encode("utf-8"))


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

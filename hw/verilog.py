"""Verilog generation: the accelerator, its AXI4-Stream wrapper, the cycle model, lint waivers.

``python -m hw.verilog --qmodel build/<preset>/qmodel.json --folding '[{"pe":2,"simd":1},...]'
--out build/<preset>/rtl/`` (or ``--target-cycles N`` to derive the folding) writes:

- ``<name>.v``: :class:`~hw.top.LeNetAccelerator`, module ``<name>`` (streams ``i``/``o``);
- ``<name>_axis.v``: :class:`~hw.top.LeNetAxiStream`, module ``<name>_axis``;
- ``cycles.json``: :func:`hw.cycles.cycle_model` of that folding, with the folding;
- ``lint.vlt``: the Verilator lint waivers (see ``docs/hardware.md``);
- ``provenance.json``: what they were made from (:func:`rtl_record`) and the SHA-256 of each
  file above, written last.

The same inputs give the same bytes: no source locations or paths are emitted. Every file is
generated in memory first and then written atomically (temporary name, rename), so a failure
leaves the previous RTL byte-identical.
"""

import argparse
from pathlib import Path

import numpy as np
from amaranth.back import verilog

import golden
from core.errors import UserError, cli
from core.paths import ROOT
from core.provenance import (
    BuildLock,
    changed,
    read_json,
    sha256_bytes,
    sha256_file,
    sha256_json,
    source_digest,
    write_bytes,
    write_json,
)

from .cycles import cycle_model, cycles_json_text, load_qmodel
from .folding import check_folding, check_load, resolve_folding
from .top import LeNetAccelerator, LeNetAxiStream

__all__ = ["generate", "rtl_record", "rtl_changes", "generator_digest", "LINT_WAIVERS",
           "PROVENANCE", "main"]

#: The file in an RTL folder that records what its Verilog was made from.
PROVENANCE = "provenance.json"

#: Verilator lint waivers for Amaranth's output, each with its reason (docs/hardware.md).
LINT_WAIVERS = [
    ("PROCASSINIT", "Amaranth gives every register its reset value as a Verilog initializer "
                    "(the FPGA power-on state) and also assigns it in always blocks."),
    ("UNUSEDSIGNAL", "Amaranth/Yosys keep named intermediate wires whose high bits (sign "
                     "extensions, carries of wide sums and compares) are not all read."),
    ("WIDTHEXPAND", "Yosys writes generated arithmetic with implicit operand extension; the "
                    "widths were checked when Amaranth built the netlist."),
    ("WIDTHTRUNC", "Likewise for implicit truncation in generated assignments."),
    ("DECLFILENAME", "One file holds the whole hierarchy; modules are named after it."),
]


def _lint_file():
    lines = ["`verilator_config", "// Waivers for Amaranth/Yosys output; reasons in "
             "docs/hardware.md."]
    for rule, reason in LINT_WAIVERS:
        lines.append(f"// {rule}: {reason}")
        lines.append(f"lint_off -rule {rule}")
    return "\n".join(lines) + "\n"


def generator_digest():
    """Return the version of the Verilog generator: the sources of hw/ and core/."""
    return source_digest(ROOT / "hw", ROOT / "core")


def rtl_record(qmodel_json, folding, *, load=(), name="lenet_accel", arrays=None):
    """Return the record of RTL generated from the integer model ``qmodel_json`` (its bytes
    hold every array's hash) with the checked ``folding``, loaded layers ``load`` and top module
    ``name``; ``arrays`` given instead of the model's adds their digest."""
    record = {"qmodel": sha256_file(qmodel_json), "folding": sha256_json(folding),
              "load": sha256_json(list(load)), "name": name, "generator": generator_digest()}
    if arrays is not None:
        record["arrays"] = sha256_json({k: golden.array_sha256(v)
                                        for k, v in sorted(arrays.items())})
    return record


def output_paths(out_dir, name="lenet_accel"):
    """Return the paths :func:`generate` writes: ``top``, ``axis``, ``cycles``, ``lint``."""
    out = Path(out_dir)
    return {"top": out / f"{name}.v", "axis": out / f"{name}_axis.v",
            "cycles": out / "cycles.json", "lint": out / "lint.vlt"}


def rtl_changes(out_dir, expected, name="lenet_accel"):
    """Return the names of the inputs of the RTL in ``out_dir`` that differ from ``expected``
    (:func:`rtl_record`); ``"outputs"`` too when a generated file is missing or was edited.
    ``[]``: current."""
    stored = read_json(Path(out_dir) / PROVENANCE) or {}
    names = changed(stored.get("provenance"), expected)
    files = stored.get("outputs") or {}
    for path in output_paths(out_dir, name).values():
        if not path.is_file() or files.get(path.name) != sha256_file(path):
            names.append("outputs")
            break
    return names


def generate(meta, arrays, folding=None, out_dir=".", *, name="lenet_accel", provenance=None):
    """Write the Verilog, the AXI4-Stream wrapper, ``cycles.json``, ``lint.vlt`` and, when
    ``provenance`` (:func:`rtl_record`) is given, ``provenance.json``.

    Everything is generated before anything is written; each file is written atomically.
    The caller holds the build folder's lock. Returns a dict of the written paths: ``top``,
    ``axis``, ``cycles``, ``lint`` (and ``provenance``).
    """
    folding = check_folding(meta, folding)
    arrays = {key: np.asarray(value, dtype=np.int64) for key, value in arrays.items()}
    top = LeNetAccelerator(meta, arrays, folding)
    axis = LeNetAxiStream(meta, arrays, folding)
    model = cycle_model(meta, folding, arrays)
    model["folding"] = folding
    paths = output_paths(out_dir, name)
    texts = {
        "top": verilog.convert(top, name=name, emit_src=False, strip_internal_attrs=True),
        "axis": verilog.convert(axis, name=f"{name}_axis", emit_src=False,
                                strip_internal_attrs=True),
        "cycles": cycles_json_text(model),
        "lint": _lint_file(),
    }
    data = {key: text.encode("utf-8") for key, text in texts.items()}
    record_path = Path(out_dir) / PROVENANCE
    if provenance is not None:
        record_path.unlink(missing_ok=True)    # no stale record while the files change
    for key, path in paths.items():
        write_bytes(path, data[key])
    if provenance is not None:
        outputs = {paths[key].name: sha256_bytes(data[key]) for key in paths}
        paths["provenance"] = write_json(record_path, {"provenance": provenance,
                                                       "outputs": outputs})
    return paths


@cli
def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m hw.verilog",
                                     description="Write the accelerator's Verilog.")
    parser.add_argument("--qmodel", required=True, help="path of qmodel.json (qmodel.npz beside)")
    parser.add_argument("--folding", help="JSON list of {pe, simd} per MAC layer, or a file")
    parser.add_argument("--target-cycles", type=int,
                        help="derive the cheapest folding meeting this many cycles per image")
    parser.add_argument("--out", required=True, help="output directory")
    parser.add_argument("--name", default="lenet_accel", help="Verilog module name")
    args = parser.parse_args(argv)
    if args.target_cycles is not None and args.target_cycles < 1:
        raise UserError(f"--target-cycles {args.target_cycles}: give a positive number of "
                        f"cycles per image")
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} is a file, not a folder; give a folder")
    meta, arrays = load_qmodel(args.qmodel)
    folding = resolve_folding(meta, arrays, folding=args.folding,
                              target_cycles=args.target_cycles)
    record = rtl_record(args.qmodel, folding, load=check_load(meta, ()), name=args.name)
    with BuildLock(Path(args.qmodel).parent, "hw.verilog"), BuildLock(out.parent, "hw.verilog"):
        paths = generate(meta, arrays, folding, out, name=args.name, provenance=record)
    for key in ("top", "axis", "cycles", "lint"):
        print(paths[key])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

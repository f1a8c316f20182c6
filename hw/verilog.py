"""Verilog generation: the accelerator, its AXI4-Stream wrapper, the cycle model, lint waivers.

``python -m hw.verilog --qmodel build/<preset>/qmodel.json --folding '[{"pe":2,"simd":1},...]'
--out build/<preset>/rtl/`` (or ``--target-cycles N`` to derive the folding) writes:

- ``<name>.v``: :class:`~hw.top.LeNetAccelerator`, module ``<name>`` (streams ``i``/``o``);
- ``<name>_axis.v``: :class:`~hw.top.LeNetAxiStream`, module ``<name>_axis``;
- ``cycles.json``: :func:`hw.cycles.cycle_model` of that folding, with the folding;
- ``lint.vlt``: the Verilator lint waivers (see ``docs/hardware.md``).

The same inputs give the same bytes: no source locations or paths are emitted.
"""

import argparse
from pathlib import Path

import numpy as np
from amaranth.back import verilog

from .cycles import cycle_model, load_qmodel, write_cycles_json
from .folding import check_folding, resolve_folding
from .top import LeNetAccelerator, LeNetAxiStream

__all__ = ["generate", "LINT_WAIVERS", "main"]

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


def generate(meta, arrays, folding=None, out_dir=".", *, name="lenet_accel"):
    """Write the Verilog, the AXI4-Stream wrapper, ``cycles.json`` and ``lint.vlt``.

    Returns a dict of the written paths: ``top``, ``axis``, ``cycles``, ``lint``.
    """
    folding = check_folding(meta, folding)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    arrays = {key: np.asarray(value, dtype=np.int64) for key, value in arrays.items()}
    paths = {}
    top = LeNetAccelerator(meta, arrays, folding)
    text = verilog.convert(top, name=name, emit_src=False, strip_internal_attrs=True)
    paths["top"] = out / f"{name}.v"
    paths["top"].write_text(text, encoding="utf-8")
    axis = LeNetAxiStream(meta, arrays, folding)
    text = verilog.convert(axis, name=f"{name}_axis", emit_src=False,
                           strip_internal_attrs=True)
    paths["axis"] = out / f"{name}_axis.v"
    paths["axis"].write_text(text, encoding="utf-8")
    model = cycle_model(meta, folding, arrays)
    model["folding"] = folding
    paths["cycles"] = write_cycles_json(model, out / "cycles.json")
    paths["lint"] = out / "lint.vlt"
    paths["lint"].write_text(_lint_file(), encoding="utf-8")
    return paths


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
    meta, arrays = load_qmodel(args.qmodel)
    folding = resolve_folding(meta, arrays, folding=args.folding,
                              target_cycles=args.target_cycles)
    paths = generate(meta, arrays, folding, args.out, name=args.name)
    for key in ("top", "axis", "cycles", "lint"):
        print(paths[key])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

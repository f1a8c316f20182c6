"""Generate a preset's Verilog with the folding its config asks for.

    python -m hw.build --config configs/lenet5.toml [--qmodel-dir build/lenet5]
                       [--out build/lenet5/rtl] [--target-cycles N | --folding JSON]
                       [--wbits B] [--abits B] [--qat] [--dataset NAME] [--data-dir DIR]

Reads ``<qmodel-dir>/qmodel.json`` + ``qmodel.npz`` (``make quantize``; default
``build/<preset>``) and the config's ``[hardware]`` section, writes ``<out>/<top>.v`` (default
``<qmodel-dir>/rtl``), the AXI4-Stream wrapper, ``cycles.json``, the lint waivers and
``provenance.json`` (:func:`hw.verilog.rtl_record`), and prints the cycle model.

The integer model must have been made from exactly this config, these quantize options
(``--wbits``/``--abits``/``--qat``, default ``WBITS``/``ABITS``/``QAT``), the checkpoint beside it,
this data set and the current quantizer (:func:`core.records.require_current_qmodel`); otherwise
one error names the inputs that changed and the command that rebuilds it. Everything is
checked before anything is written, the folding first on the config's structure
(:func:`hw.folding.config_structure`, also with ``--check``, which ``make verilog`` runs before
training or quantizing); the build folder's lock is held while writing.

``[hardware]`` folding modes:

- ``minimal``: one multiplier per MAC layer (pe = simd = 1);
- ``target``: the cheapest folding (fewest multipliers) with at most ``target_cycles`` cycles
  per image (:func:`hw.folding.derive_folding`);
- ``explicit``: ``[hardware.layers.<name>]`` tables give ``pe`` and ``simd`` per MAC layer
  (missing entries are 1).
"""

import argparse
import json
import os
import sys
from pathlib import Path

import golden
from core.config import load_config
from core.data import check_fits, load_dataset
from core.errors import UserError, cli
from core.paths import build_dir
from core.provenance import BuildLock
from core.records import make_command, quantize_options, require_current_qmodel

from .folding import check_load, config_structure, load_from_config, resolve_folding
from .verilog import generate, rtl_record

__all__ = ["ArgumentParser", "env_int", "env_flag", "check_folder", "check_bits",
           "check_folding_text", "check_target_cycles", "load_integer_model", "main"]


class ArgumentParser(argparse.ArgumentParser):
    """An argument parser whose errors are one ``error:`` line (a :class:`UserError`)."""

    def error(self, message):
        raise UserError(f"{self.prog}: {message}; see --help")


def env_int(name, default=None):
    """Return the integer in the environment variable ``name`` (``default`` when unset or
    empty); raise :class:`UserError` when it is not an integer."""
    value = os.environ.get(name, "").strip()
    if not value:
        return default
    try:
        return int(value)
    except ValueError:
        raise UserError(f"{name}={value!r} is not an integer; give a whole number such as "
                        f"{name}={default if default is not None else 8}") from None


def env_flag(name):
    """Return whether the environment variable ``name`` is ``1`` (unset, empty or ``0``: off)."""
    value = os.environ.get(name, "").strip()
    if value not in ("", "0", "1"):
        raise UserError(f"{name}={value!r} must be 1 (on) or 0 (off)")
    return value == "1"


def check_bits(name, bits):
    """Refuse a bit width outside 2..16 (``None``: not given)."""
    if bits is not None and not 2 <= bits <= 16:
        raise UserError(f"{name}={bits} is out of range; use 2..16")


def check_folder(path, what="--out"):
    """Return ``path`` as a :class:`Path`, refusing one that exists and is not a folder."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise UserError(f"{what} {path} is a file, not a folder; give a folder (it is created "
                        f"if missing)")
    return path


def check_target_cycles(cycles):
    """Refuse a cycle target (``--target-cycles``/``TARGET_CYCLES``) below 1 (``None``: not
    given)."""
    if cycles is not None and cycles < 1:
        raise UserError(f"--target-cycles {cycles} (TARGET_CYCLES): give a positive number of "
                        f"cycles per image, or leave it out for the config's [hardware] folding")


def check_folding_text(text):
    """Refuse a folding argument that cannot be one whatever the model: not ``minimal``,
    ``target:<positive cycles>``, a file or a JSON list (checked against the model later)."""
    if text is None or text == "minimal" or Path(text).is_file():
        return
    if text.startswith("target:"):
        cycles = text.split(":", 1)[1]
        if not cycles.isdigit() or int(cycles) < 1:
            raise UserError(f"folding {text!r}: the target must be a positive number of cycles "
                            f"per image, such as target:4096")
        return
    try:
        value = json.loads(text)
    except ValueError:
        value = None
    if not isinstance(value, list):
        raise UserError(f"folding {text!r}: expected 'minimal', 'target:<cycles>', a JSON list "
                        f"of {{\"pe\", \"simd\"}} per MAC layer, or a file holding one")


def load_integer_model(config, out_dir, **inputs):
    """Return the integer model in ``out_dir`` (``golden.IntegerModel``); the message of a
    missing one gives the command that makes it from ``inputs`` (the ``options``, ``dataset``
    and ``data_dir`` of :func:`core.records.make_command`)."""
    path = Path(out_dir)
    if not (path / "qmodel.json").is_file():
        raise UserError(f"no integer model in {path}; run "
                        f"`{make_command('quantize', config, out=path, **inputs)}`")
    return golden.load(path)


def _check_folding(config, folding, target_cycles):
    """Refuse a folding, cycle target or ``load`` list the config's structure cannot take."""
    meta, arrays = config_structure(config)
    resolve_folding(meta, arrays, folding=folding, target_cycles=target_cycles, config=config)
    try:
        check_load(meta, load_from_config(config))
    except ValueError as exc:
        raise UserError(f"config {config.path.name}: hardware.{exc}") from None


@cli
def main(argv=None):
    parser = ArgumentParser(prog="python -m hw.build", description=__doc__.split("\n")[0])
    parser.add_argument("--config", required=True)
    parser.add_argument("--qmodel-dir", help="folder of qmodel.json (default build/<preset>)")
    parser.add_argument("--out", help="output folder (default <qmodel-dir>/rtl)")
    parser.add_argument("--target-cycles", type=int)
    parser.add_argument("--folding", help="'minimal', 'target:<cycles>', a JSON list of "
                        "{pe, simd} per MAC layer, or a file")
    parser.add_argument("--name", default="lenet_accel")
    parser.add_argument("--wbits", type=int, help="the quantize option the model was made with")
    parser.add_argument("--abits", type=int, help="the quantize option the model was made with")
    parser.add_argument("--qat", action="store_true", default=None)
    parser.add_argument("--dataset", default=os.environ.get("DATASET") or None)
    parser.add_argument("--data-dir", default=os.environ.get("DATA_DIR") or None)
    parser.add_argument("--check", action="store_true",
                        help="only check the arguments, config, folders and data set (make "
                             "verilog runs this before quantizing)")
    args = parser.parse_args(argv)
    wbits = args.wbits if args.wbits is not None else env_int("WBITS")
    abits = args.abits if args.abits is not None else env_int("ABITS")
    qat = args.qat if args.qat is not None else env_flag("QAT")
    check_bits("WBITS", wbits)
    check_bits("ABITS", abits)
    check_target_cycles(args.target_cycles)
    if not args.name.isidentifier():
        raise UserError(f"--name {args.name!r}: a Verilog module name is letters, digits and _, "
                        f"not starting with a digit")
    if args.folding and args.target_cycles:
        raise UserError("give a folding or target cycles, not both")
    check_folding_text(args.folding)
    if args.data_dir is not None and not Path(args.data_dir).is_dir():
        raise UserError(f"DATA_DIR {args.data_dir}: no such folder; give the folder of the IDX "
                        f"files or leave DATA_DIR out")
    config = load_config(args.config)
    _check_folding(config, args.folding, args.target_cycles)
    qdir = check_folder(args.qmodel_dir or build_dir(config), "--qmodel-dir")
    out = check_folder(args.out or qdir / "rtl")
    data = load_dataset(args.dataset or config.dataset, args.data_dir)
    check_fits(config, data)
    if args.check:
        return 0
    inputs = {"options": quantize_options(wbits, abits, qat), "dataset": data.name,
              "data_dir": args.data_dir}
    load_integer_model(config, qdir, **inputs)
    require_current_qmodel(config, qdir, data.sha256, inputs["options"],
                           dataset=data.name, data_dir=args.data_dir)
    model = golden.load(qdir)
    folding = resolve_folding(model.meta, dict(model.arrays), folding=args.folding,
                              target_cycles=args.target_cycles, config=config)
    try:
        load = check_load(model.meta, load_from_config(config))
    except ValueError as exc:
        raise UserError(f"config {config.path.name}: hardware.{exc}") from None
    record = rtl_record(qdir / "qmodel.json", folding, load=load, name=args.name)
    with BuildLock(qdir, "hw.build"), BuildLock(out.parent, "hw.build"):
        generate(model.meta, dict(model.arrays), folding, out, name=args.name,
                 provenance=record)
    cycles = json.loads((out / "cycles.json").read_text())
    print(f"{config.name}: {out}/{args.name}.v  cycles/image {cycles['cycles_per_image']:,}  "
          f"latency {cycles['latency_cycles']:,}  multipliers {cycles['multipliers']}  "
          f"MACs {cycles['macs']:,}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The command-line arguments every FPGA command shares: which model, which folding, which
weights are loaded after reset."""

from pathlib import Path

import golden
from core.config import load_config
from core.errors import UserError
from core.paths import build_dir
from hw.folding import check_load, load_from_config, resolve_folding

from .devices import DEVICES

__all__ = ["add_model_arguments", "resolve_model", "load_argument"]


def add_model_arguments(parser):
    """Add ``--config``, ``--qmodel``, ``--folding``, ``--target-cycles``, ``--out``, ``--load``
    to the :class:`argparse.ArgumentParser` ``parser``."""
    parser.add_argument("--config", help="config file or preset name (configs/<p>.toml)")
    parser.add_argument("--qmodel", help="folder of qmodel.json/.npz (default build/<preset>)")
    parser.add_argument("--folding", help="JSON list of {pe, simd} per MAC layer, or a file; "
                                          "default: the config's [hardware]")
    parser.add_argument("--target-cycles", type=int,
                        help="derive the cheapest folding meeting this many cycles per image")
    parser.add_argument("--out", help="output folder (default build/<preset>/synth)")
    parser.add_argument("--load", default="",
                        help="comma-separated MAC layers whose weights are loaded after reset "
                             "into RAM (iCE40 SPRAM) instead of ROMs, e.g. 'f5,f6'")


def resolve_model(parser, args, device=None):
    """Return ``(meta, arrays, folding, config, preset_dir)`` from :func:`add_model_arguments`.

    ``config`` is None without ``--config``. ``device`` (a :data:`fpga.devices.DEVICES` key)
    selects the config's ``[hardware.devices.<device>]`` table when there is one (its folding,
    and its ``load`` unless ``--load`` is given), and puts the multipliers of a folding derived
    from a cycle target beyond the device's DSP blocks on LUTs. Bad arguments end in
    ``parser.error`` (exit status 2, one line).
    """
    config = load_config(args.config) if args.config else None
    if args.qmodel:
        preset_dir = Path(args.qmodel)
        if preset_dir.suffix == ".json":
            preset_dir = preset_dir.parent
    elif config is not None:
        preset_dir = build_dir(config)
    else:
        parser.error("give --config or --qmodel")
    if not (preset_dir / "qmodel.json").is_file():
        parser.error(f"{preset_dir / 'qmodel.json'} is missing; run 'make quantize "
                     f"PRESET={preset_dir.name}' (python -m quant.quantize --config ...) first")
    model = golden.load(preset_dir)
    meta, arrays = model.meta, model.arrays
    dsps = DEVICES[device].capacity["dsps"] if device is not None else None
    try:
        folding = resolve_folding(meta, arrays, folding=args.folding,
                                  target_cycles=args.target_cycles, config=config,
                                  device=device, dsps=dsps)
    except UserError as exc:
        parser.error(str(exc))
    if not args.load and config is not None:
        args.load = ",".join(load_from_config(config, device))
    return meta, arrays, folding, config, preset_dir


def load_argument(parser, args, meta):
    """Return the validated tuple of ``--load`` layer names (``parser.error`` when unknown)."""
    try:
        return check_load(meta, [n.strip() for n in args.load.split(",") if n.strip()])
    except ValueError as exc:
        parser.error(str(exc))

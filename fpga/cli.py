"""The command-line arguments every FPGA command shares (which model, which folding, which
weights are loaded after reset) and the checks every command runs before it writes anything.

Every check raises :class:`core.errors.UserError` (one ``error:`` line, exit status 2 through
:func:`core.errors.cli`); the commands run all of them before they take their folder's
:class:`core.provenance.BuildLock`, so a refused command leaves every file as it was.
"""

import argparse
import json
import math
from pathlib import Path

import golden
from core.config import load_config
from core.errors import UserError
from core.paths import build_dir
from core.records import make_command
from hw.folding import check_folding, check_load, load_from_config, resolve_folding

from .devices import DEVICES

__all__ = ["ArgumentParser", "add_model_arguments", "resolve_model", "load_argument",
           "positive", "output_folder"]


class ArgumentParser(argparse.ArgumentParser):
    """An :class:`argparse.ArgumentParser` whose errors are one ``error:`` line: it raises
    :class:`UserError` (``"<prog>: <message>; see --help"``) instead of printing the usage."""

    def error(self, message):
        raise UserError(f"{self.prog}: {message}; see --help")


def add_model_arguments(parser, *, device=False):
    """Add ``--config``, ``--qmodel``, ``--folding``, ``--target-cycles``, ``--out``, ``--load``
    to the :class:`argparse.ArgumentParser` ``parser``, and with ``device`` the target
    ``--device`` (required) and its clock constraint ``--freq``."""
    if device:
        parser.add_argument("--device", required=True, choices=sorted(DEVICES))
        parser.add_argument("--freq", type=float,
                            help="clock constraint in MHz (device default)")
    parser.add_argument("--config", help="config file or preset name (configs/<p>.toml)")
    parser.add_argument("--qmodel", help="folder of qmodel.json/.npz (default build/<preset>)")
    parser.add_argument("--folding", help="JSON list of {pe, simd} per MAC layer, or a file; "
                                          "default: the config's [hardware]")
    parser.add_argument("--target-cycles", type=int,
                        help="derive the cheapest folding meeting this many cycles per image")
    parser.add_argument("--out", help="output folder (default build/<preset>/synth)")
    parser.add_argument("--load", default=None,
                        help="comma-separated MAC layers whose weights are loaded after reset "
                             "into RAM (iCE40 SPRAM) instead of ROMs, e.g. 'f5,f6'")


def positive(name, value, *, integer=False, default=None):
    """Return ``value`` when it is a positive (finite) number, an integer with ``integer``;
    None stays None. Else raise :class:`UserError` naming ``name`` and, when given, what
    leaving it out means (``default``)."""
    if value is None:
        return None
    ok = (isinstance(value, (int, float)) and not isinstance(value, bool)
          and math.isfinite(value) and value > 0 and (not integer or float(value).is_integer()))
    if not ok:
        kind = "a positive integer" if integer else "a positive number"
        hint = f"; leave it out for {default}" if default else ""
        raise UserError(f"{name}={value:g} must be {kind}{hint}"
                        if isinstance(value, (int, float)) else f"{name}={value!r} must be "
                                                                f"{kind}{hint}")
    return int(value) if integer else value


def output_folder(path):
    """Return ``path`` as a :class:`~pathlib.Path` when it is a folder or does not exist yet;
    refuse a file (or a path below a file)."""
    out = Path(path)
    for part in (out, *out.parents):
        if part.exists() and not part.is_dir():
            raise UserError(f"--out {out}: {part} is a file, not a folder; give a folder (it "
                            f"is created if missing)")
    return out


def _model_folder(args, config):
    if args.qmodel:
        folder = Path(args.qmodel)
        if folder.suffix == ".json" or folder.name == "qmodel.npz":
            folder = folder.parent
        if not folder.is_dir():
            raise UserError(f"--qmodel {args.qmodel}: no such folder; give the folder of "
                            f"qmodel.json and qmodel.npz (make quantize writes build/<preset>)")
        return folder
    if config is not None:
        return build_dir(config)
    raise UserError("give --config or --qmodel")


def _check_recorded_config(config, folder, meta):
    """Refuse an integer model recorded for another config than ``config``."""
    record = meta.get("provenance")
    expected = config.sections_sha256("model", "layers", "quant")
    rebuild = make_command("quantize", config, out=folder)
    if not isinstance(record, dict):
        raise UserError(f"{folder / 'qmodel.json'} has no provenance record, so it cannot be "
                        f"matched with config {config.path.name}; rebuild it with `{rebuild}`")
    if record.get("config") != expected:
        raise UserError(f"{folder / 'qmodel.json'} was made from another config than "
                        f"{config.path.name} (inputs changed: config); rebuild it with "
                        f"`{rebuild}`, or give its own config or no --config with --qmodel")


def _folding_argument(text, meta, arrays, dsps):
    """Parse ``--folding`` text; a file is named (never its content) when it does not parse."""
    path = Path(text)
    looks_like_file = text not in ("minimal",) and not text.startswith("target:") and \
        not text.lstrip().startswith("[")
    if looks_like_file and not path.is_file():
        what = "a folder" if path.is_dir() else "no such file"
        raise UserError(f"--folding {text}: {what}; give 'minimal', 'target:<cycles>', a JSON "
                        f"list of {{\"pe\", \"simd\"}} per MAC layer, or a file holding one")
    if path.is_file():
        try:
            value = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError) as exc:
            raise UserError(f"--folding {path}: cannot read ({exc})") from None
        except json.JSONDecodeError as exc:
            raise UserError(f"--folding {path}: not valid JSON ({exc.msg} at line {exc.lineno} "
                            f"column {exc.colno}); the file must hold a JSON list of "
                            f"{{\"pe\", \"simd\"}} per MAC layer") from None
        try:
            return check_folding(meta, value)
        except (ValueError, TypeError) as exc:
            raise UserError(f"--folding {path}: {exc}") from None
    return resolve_folding(meta, arrays, folding=text, dsps=dsps)


def resolve_model(args, device=None):
    """Return ``(meta, arrays, folding, config, preset_dir)`` from :func:`add_model_arguments`.

    ``config`` is None without ``--config``. ``device`` (a :data:`fpga.devices.DEVICES` key)
    selects the config's ``[hardware.devices.<device>]`` table when there is one (its folding,
    and its ``load`` unless ``--load`` is given), and puts the multipliers of a folding derived
    from a cycle target beyond the device's DSP blocks on LUTs. With ``--config``, an integer
    model recorded for another config is refused. Every bad argument raises
    :class:`UserError`; nothing is written.
    """
    config = load_config(args.config) if args.config else None
    preset_dir = _model_folder(args, config)
    if not (preset_dir / "qmodel.json").is_file():
        if config is not None:
            hint = f"`{make_command('quantize', config, out=preset_dir)}`"
        else:
            hint = (f"'make quantize PRESET={preset_dir.name}' (python -m quant.quantize "
                    f"--config ...)")
        raise UserError(f"{preset_dir / 'qmodel.json'} is missing; run {hint} first")
    model = golden.load(preset_dir)
    meta, arrays = model.meta, model.arrays
    if config is not None:
        _check_recorded_config(config, preset_dir, meta)
    if args.target_cycles is not None:
        positive("--target-cycles", args.target_cycles, integer=True,
                 default="the config's folding")
    if args.folding is not None and not args.folding.strip():
        raise UserError("--folding is empty; give 'minimal', 'target:<cycles>', a JSON list of "
                        "{\"pe\", \"simd\"} per MAC layer, or a file holding one")
    dsps = DEVICES[device].capacity["dsps"] if device is not None else None
    if args.folding and args.target_cycles:
        raise UserError("give --folding or --target-cycles, not both")
    if args.folding:
        folding = _folding_argument(args.folding, meta, arrays, dsps)
    else:
        folding = resolve_folding(meta, arrays, target_cycles=args.target_cycles,
                                  config=config, device=device, dsps=dsps)
    if args.load is None:
        args.load = ",".join(load_from_config(config, device)) if config is not None else ""
    return meta, arrays, folding, config, preset_dir


def load_argument(args, meta):
    """Return the validated tuple of ``--load`` layer names (:class:`UserError` when one is
    not a MAC layer)."""
    names = [n.strip() for n in (args.load or "").split(",") if n.strip()]
    try:
        return check_load(meta, names)
    except ValueError as exc:
        raise UserError(f"--{exc}") from None

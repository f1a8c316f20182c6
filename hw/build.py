"""Generate a preset's Verilog with the folding its config asks for.

    python -m hw.build --config configs/lenet5.toml [--out build/lenet5/rtl]
                       [--target-cycles N | --folding JSON]

Reads ``build/<preset>/qmodel.json`` + ``qmodel.npz`` (``make quantize``) and the config's
``[hardware]`` section, writes ``<out>/<top>.v``, the AXI4-Stream wrapper, ``cycles.json`` and
the lint waivers, and prints the cycle model.

``[hardware]`` folding modes:

- ``minimal``: one multiplier per MAC layer (pe = simd = 1);
- ``target``: the cheapest folding (fewest multipliers) with at most ``target_cycles`` cycles
  per image (:func:`hw.cycles.derive_folding`);
- ``explicit``: ``[hardware.layers.<name>]`` tables give ``pe`` and ``simd`` per MAC layer
  (missing entries are 1).
"""

import argparse
import json
import sys
from pathlib import Path

from quant.config import ConfigError, load_config
from quant.errors import UserError, cli

__all__ = ["folding_from_config", "load_from_config", "hardware_section", "parse_folding",
           "resolve_folding", "main"]

ROOT = Path(__file__).resolve().parent.parent


def hardware_section(config, device=None):
    """Return ``(section, key)``: the config's ``[hardware.devices.<device>]`` table when it has
    one for ``device``, else ``[hardware]``."""
    devices = config.hardware.get("devices", {})
    if device is not None and device in devices:
        return devices[device], f"hardware.devices.{device}"
    return config.hardware, "hardware"


def folding_from_config(config, meta, arrays=None, *, device=None, dsps=None):
    """Return the folding list (one ``{"pe", "simd"}`` per MAC layer) the config asks for.

    With ``device``, a ``[hardware.devices.<device>]`` table replaces ``[hardware]``. A folding
    derived from ``target_cycles`` puts the layers that do not fit ``dsps`` DSP blocks on LUT
    multipliers (:func:`hw.cycles.assign_multipliers`).
    """
    from .cycles import assign_multipliers, derive_folding
    from .plan import check_folding, mac_layers
    hardware, key = hardware_section(config, device)
    mode = hardware["folding"]
    target = hardware["target_cycles"]
    where = f"config {config.path.name}"
    if mode == "minimal":
        folding = None
    elif mode == "target":
        try:
            folding = assign_multipliers(derive_folding(meta, target, arrays), dsps)
        except ValueError as exc:
            raise ConfigError(f"{where}: {key}.target_cycles={target}: {exc}") from None
    else:
        per_layer = hardware["layers"]
        folding = []
        for _, d in mac_layers(meta):
            entry = per_layer.get(d["name"], {})
            folding.append({"pe": entry.get("pe", 1), "simd": entry.get("simd", 1),
                            **({"mul": entry["mul"]} if "mul" in entry else {})})
    try:
        return check_folding(meta, folding)
    except ValueError as exc:
        raise ConfigError(f"{where}: {exc}; change [{key}.layers.<name>] pe/simd") from None


def load_from_config(config, device=None):
    """Return the layer names ``load`` of the config's hardware section for ``device``."""
    hardware, _ = hardware_section(config, device)
    return tuple(hardware.get("load", ()))


def parse_folding(text, meta, arrays, *, dsps=None):
    """Parse a folding argument: ``minimal``, ``target:<cycles>``, a JSON list of
    ``{"pe", "simd"}`` per MAC layer, or a file holding one; return the checked folding.

    Raise :class:`quant.errors.UserError` naming the argument and the accepted forms.
    """
    from .cycles import assign_multipliers, derive_folding
    from .plan import check_folding
    try:
        if text == "minimal":
            return check_folding(meta, None)
        if text.startswith("target:"):
            return check_folding(meta, assign_multipliers(
                derive_folding(meta, int(text.split(":", 1)[1]), arrays), dsps))
        path = Path(text)
        if path.is_file():
            text = path.read_text(encoding="utf-8")
        return check_folding(meta, json.loads(text))
    except json.JSONDecodeError:
        raise UserError(f"folding {text!r}: expected 'minimal', 'target:<cycles>', a JSON list "
                        f"of {{\"pe\", \"simd\"}} per MAC layer, or a file holding one") from None
    except (ValueError, TypeError) as exc:
        raise UserError(f"folding {text!r}: {exc}") from None


def resolve_folding(meta, arrays, *, folding=None, target_cycles=None, config=None,
                    device=None, dsps=None):
    """Return the folding of a command line: ``folding`` text (see :func:`parse_folding`),
    else ``target_cycles``, else the config's hardware section for ``device``, else minimal.

    Foldings derived from a cycle target put what exceeds ``dsps`` DSP blocks on LUT
    multipliers; an explicit folding is taken as given.
    """
    if folding and target_cycles:
        raise UserError("give a folding or target cycles, not both")
    if folding:
        return parse_folding(folding, meta, arrays)
    if target_cycles:
        return parse_folding(f"target:{int(target_cycles)}", meta, arrays, dsps=dsps)
    if config is not None:
        return folding_from_config(config, meta, arrays=arrays, device=device, dsps=dsps)
    return parse_folding("minimal", meta, arrays)


def load_integer_model(config, out_dir):
    import golden
    path = Path(out_dir)
    if not (path / "qmodel.json").is_file():
        raise UserError(f"no integer model in {path}; run `make quantize PRESET={config.name}`")
    model = golden.load(path)
    if model.meta.get("config_sha256") not in (None, config.sha256):
        print(f"note: {path / 'qmodel.json'} was exported from another version of "
              f"{config.path.name}; run `make quantize PRESET={config.name}` to refresh it",
              file=sys.stderr)
    return model


@cli
def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m hw.build", description=__doc__.split(
        "\n")[0])
    parser.add_argument("--config", required=True)
    parser.add_argument("--qmodel-dir", help="folder of qmodel.json (default build/<preset>)")
    parser.add_argument("--out", help="output folder (default build/<preset>/rtl)")
    parser.add_argument("--target-cycles", type=int)
    parser.add_argument("--folding", help="'minimal', 'target:<cycles>', a JSON list of "
                        "{pe, simd} per MAC layer, or a file")
    parser.add_argument("--name", default="lenet_accel")
    args = parser.parse_args(argv)
    config = load_config(args.config)
    base = ROOT / "build" / config.name
    model = load_integer_model(config, Path(args.qmodel_dir) if args.qmodel_dir else base)
    folding = resolve_folding(model.meta, dict(model.arrays), folding=args.folding,
                              target_cycles=args.target_cycles, config=config)
    from .verilog import generate
    out = Path(args.out) if args.out else base / "rtl"
    generate(model.meta, dict(model.arrays), folding, out, name=args.name)
    cycles = json.loads((out / "cycles.json").read_text())
    print(f"{config.name}: {out}/{args.name}.v  cycles/image {cycles['cycles_per_image']:,}  "
          f"latency {cycles['latency_cycles']:,}  multipliers {cycles['multipliers']}  "
          f"MACs {cycles['macs']:,}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

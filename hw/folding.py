"""Foldings: how many multipliers each MAC layer gets (``pe`` output channels × ``simd`` products
per cycle), checked, derived from a cycle target, assigned to DSP blocks or LUTs, and read from a
config or a command line.

Forms a folding argument takes (:func:`parse_folding`): ``minimal`` (pe = simd = 1),
``target:<cycles>`` (the cheapest folding meeting that many cycles per image), a JSON list of
``{"pe", "simd"[, "mul"]}`` per MAC layer, or a file holding one.
"""

import json
from pathlib import Path

import numpy as np

from core.config import ConfigError
from core.errors import UserError
from golden.ops import OPS

from .geometry import connections_of, mac_cycles, simd_error, simd_options
from .plan import mac_layers, plan

__all__ = ["check_folding", "check_load", "derive_folding", "fastest_folding",
           "assign_multipliers", "hardware_section", "folding_from_config", "load_from_config",
           "parse_folding", "resolve_folding", "config_structure", "FULL_TARGET_CYCLES"]

#: The default target of :func:`fastest_folding`: fast enough for 10,000 images on Verilator
#: in a few minutes (``python -m sim.run --full``), small enough to build quickly.
FULL_TARGET_CYCLES = 4096


#: The number format :func:`config_structure` gives every tensor: foldings and cycle figures do
#: not depend on formats.
_PLACEHOLDER_FORMAT = {"bits": 8, "frac": 0, "signed": True}


def config_structure(config):
    """Return ``(meta, arrays)``: the structure of the integer model ``config`` exports (layer
    names, kinds and shapes, as in ``qmodel.json``, and the connection table of each sparse
    layer) with placeholder number formats and no weights.

    Every function of this module, and the cycle figures of :func:`hw.plan.plan`, read only
    that structure, so a folding or cycle target is checked on it before a checkpoint or an
    integer model exists (the commands refuse a bad one before writing anything). Never build
    hardware from it.
    """
    fmt = _PLACEHOLDER_FORMAT
    meta = {"input": {"height": config.input_size, "width": config.input_size,
                      "channels": config.layers[0].in_shape[0], "pad": config.input_pad,
                      "format": dict(fmt)},
            "layers": [],
            "output": {"kind": OPS[config.exported[-1].kind].classify, "score_bits": 32}}
    arrays = {}
    for layer in config.exported:
        record = {"name": layer.name, "kind": layer.kind, "final": layer.final,
                  "in_shape": list(layer.in_shape), "in_format": dict(fmt),
                  "weight_format": dict(fmt), "acc_bits": 32, "activation": {"kind": "none"},
                  **layer.spec.record(layer.params, layer.in_shape), "arrays": {}}
        if not layer.final:
            record["out_format"] = dict(fmt)
        if "connections" in layer.spec.roles and not layer.full:
            table = np.zeros((layer.out_shape[0], layer.in_shape[0]), dtype=np.int64)
            for o, row in enumerate(layer.connections):
                table[o, list(row)] = 1
            record["arrays"]["connections"] = f"{layer.name}.connections"
            arrays[f"{layer.name}.connections"] = table
        meta["layers"].append(record)
    return meta, arrays


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
    multipliers (:func:`assign_multipliers`).
    """
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
        for layer in mac_layers(meta):
            entry = per_layer.get(layer.name, {})
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

    Raise :class:`core.errors.UserError` naming the argument and the accepted forms.
    """
    what = f"folding {text!r}"
    try:
        if text == "minimal":
            return check_folding(meta, None)
        if text.startswith("target:"):
            cycles = text.split(":", 1)[1]
            if not cycles.isdigit() or int(cycles) < 1:
                raise UserError(f"{what}: the target must be a positive number of cycles per "
                                f"image, such as target:4096")
            return check_folding(meta, assign_multipliers(
                derive_folding(meta, int(cycles), arrays), dsps))
        path = Path(text)
        if path.is_file():
            what = f"folding file {text}"
            try:
                text = path.read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError) as exc:
                raise UserError(f"{what}: cannot read it ({exc}); give a JSON list of "
                                f"{{\"pe\", \"simd\"}} per MAC layer") from None
        elif path.is_dir():
            raise UserError(f"{what} is a folder; give a file holding a JSON list of "
                            f"{{\"pe\", \"simd\"}} per MAC layer")
        return check_folding(meta, json.loads(text))
    except json.JSONDecodeError as exc:
        raise UserError(f"{what}: not valid JSON (line {exc.lineno}, column {exc.colno}); "
                        f"expected 'minimal', 'target:<cycles>', a JSON list of {{\"pe\", "
                        f"\"simd\"}} per MAC layer, or a file holding one") from None
    except (ValueError, TypeError) as exc:
        raise UserError(f"{what}: {exc}") from None


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
        try:
            return check_folding(meta, assign_multipliers(
                derive_folding(meta, int(target_cycles), arrays), dsps))
        except ValueError as exc:
            raise UserError(f"--target-cycles {target_cycles} (TARGET_CYCLES): {exc}") from None
    if config is not None:
        return folding_from_config(config, meta, arrays=arrays, device=device, dsps=dsps)
    return parse_folding("minimal", meta, arrays)


def check_folding(meta, folding):
    """Validate ``folding`` (a list of ``{"pe", "simd"}``, one per MAC layer) and return it.

    ``None`` means ``pe = simd = 1`` everywhere. Raises :class:`ValueError` naming the layer.
    """
    macs = mac_layers(meta)
    if folding is None:
        return [{"pe": 1, "simd": 1} for _ in macs]
    if not isinstance(folding, (list, tuple)):
        raise TypeError(f"folding must be a list of {{'pe': .., 'simd': ..}}, not {folding!r}")
    if len(folding) != len(macs):
        names = ", ".join(layer.name for layer in macs)
        raise ValueError(f"folding has {len(folding)} entries but the model has {len(macs)} "
                         f"MAC layers ({names}); give one {{'pe', 'simd'}} per MAC layer")
    result = []
    for layer, entry in zip(macs, folding, strict=True):
        label = layer.label
        if not isinstance(entry, dict) or set(entry) - {"pe", "simd", "mul"}:
            raise ValueError(f"{label}: folding entry {entry!r} must be a dict with keys "
                             f"'pe' and 'simd' (and optionally 'mul')")
        mul = entry.get("mul", "dsp")
        if mul not in ("dsp", "lut"):
            raise ValueError(f"{label}: mul={mul!r} must be 'dsp' (the * operator: DSP blocks "
                             f"where the device has them) or 'lut' (adders only)")
        pe, simd = entry.get("pe", 1), entry.get("simd", 1)
        for key, value in (("pe", pe), ("simd", simd)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{label}: {key}={value!r} must be a positive integer")
        in_shape, (kh, kw), out_channels, dense = layer.geometry
        channels = in_shape[0]
        if out_channels % pe:
            raise ValueError(f"{label}: pe={pe} does not divide out_channels={out_channels}")
        message = simd_error(label, channels, kh, kw, simd, dense=dense)
        if message:
            raise ValueError(message)
        result.append({"pe": pe, "simd": simd, **({"mul": "lut"} if mul == "lut" else {})})
    return result


def check_load(meta, load):
    """Validate ``load`` (names of MAC layers whose weights are loaded); return a tuple."""
    load = tuple(load or ())
    names = [layer.name for layer in mac_layers(meta)]
    for name in load:
        if name not in names:
            raise ValueError(f"load: {name!r} is not a MAC layer; weights can be loaded into "
                             f"{', '.join(names)}")
    return tuple(n for n in names if n in load)


def _divisors(n):
    return [d for d in range(1, n + 1) if n % d == 0]


def derive_folding(meta, target_cycles, arrays=None):
    """Return the folding with the fewest multipliers whose cycles per image meet the target.

    Each MAC layer gets the ``(pe, simd)`` with the smallest ``pe·simd`` whose stage needs at
    most ``target_cycles`` (ties: fewer cycles, then smaller ``pe``); ``simd`` ranges over
    every split of the window (:func:`hw.geometry.simd_options`). The stages are independent, so
    this minimizes the total. ``arrays`` is needed when a layer has a connection table.
    Raises :class:`ValueError` naming the stage when no folding reaches the target.
    """
    if not isinstance(target_cycles, int) or isinstance(target_cycles, bool) \
            or target_cycles < 1:
        raise TypeError(f"target_cycles must be a positive integer, not {target_cycles!r}")
    folding = []
    for layer in mac_layers(meta):
        in_shape, kernel, out_channels, _ = layer.geometry
        table = connections_of(layer.record, arrays)
        options = simd_options(in_shape[0], *kernel)
        best = None
        for pe in _divisors(out_channels):
            for simd in options:
                cycles = mac_cycles(in_shape, kernel, out_channels, pe, simd, table)
                if cycles > target_cycles:
                    continue
                key = (pe * simd, cycles, pe)
                if best is None or key < best[0]:
                    best = (key, {"pe": pe, "simd": simd})
        if best is None:
            fastest = mac_cycles(in_shape, kernel, out_channels, out_channels, max(options),
                                 table)
            raise ValueError(f"{layer.label}: no folding reaches {target_cycles} cycles per "
                             f"image; fully parallel it needs {fastest}; raise the target")
        folding.append(best[1])
    for stage in plan(meta, folding, arrays):
        if stage.cycles > target_cycles:
            raise ValueError(f"stage {stage.name!r} ({stage.kind}) needs {stage.cycles} cycles "
                             f"per image whatever the folding; raise the target to at least "
                             f"{stage.cycles}")
    return folding


def fastest_folding(meta, arrays=None, target=FULL_TARGET_CYCLES):
    """Return the cheapest folding meeting ``target`` cycles per image, else (when no folding
    reaches it) the cheapest folding as fast as one whose MAC layers take all their output
    channels and a whole input position per cycle."""
    try:
        return derive_folding(meta, target, arrays)
    except ValueError:
        pass
    full = [{"pe": layer.geometry.out_channels, "simd": layer.geometry.in_shape[0]}
            for layer in mac_layers(meta)]
    return derive_folding(meta, max(stage.cycles for stage in plan(meta, full, arrays)),
                          arrays)


def assign_multipliers(folding, dsps):
    """Return ``folding`` with the layers that do not fit ``dsps`` DSP blocks on adders.

    The layers with the most multipliers (``pe·simd``) get DSP blocks first, while they fit;
    the others get ``"mul": "lut"`` (:class:`hw.mac.MacStage` ``lut_mul``). Entries that already
    name ``mul`` are kept and count against the budget when ``"dsp"``. ``dsps=None``: unchanged.
    """
    if dsps is None:
        return [dict(entry) for entry in folding]
    result = [dict(entry) for entry in folding]
    left = dsps - sum(e["pe"] * e["simd"] for e in result if e.get("mul") == "dsp")
    order = sorted((i for i, e in enumerate(result) if "mul" not in e),
                   key=lambda i: (-result[i]["pe"] * result[i]["simd"], i))
    for i in order:
        need = result[i]["pe"] * result[i]["simd"]
        if need <= left:
            left -= need
        else:
            result[i]["mul"] = "lut"
    return result

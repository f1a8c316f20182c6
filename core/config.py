"""Parse and validate accelerator configs (``configs/<preset>.toml``).

One config describes one accelerator: the network, the number formats and the hardware folding.
Every stage (training, quantization, golden model, hardware, simulation) reads the validated
:class:`Config`; nothing downstream re-reads the TOML. Layers are validated by their kind's
:class:`core.kinds.LayerKind`. This package imports neither torch nor Amaranth: every part reads
it.

Errors are :class:`ConfigError` with one line that names the file, the key and the fix.
"""

import hashlib
import json
import math
import tomllib
from dataclasses import dataclass, field, replace
from pathlib import Path

from .errors import UserError
from .kinds import KINDS, LECUN_1998_C3
from .paths import CONFIG_DIR

__all__ = [
    "ConfigError", "Config", "Layer", "load_config", "parse_config", "preset_path",
    "describe_network_changes", "CONFIG_DIR", "LECUN_1998_C3", "DEVICE_NAMES",
]

DATASETS = ("mnist", "fashion-mnist", "idx")


class ConfigError(UserError):
    """A config file is missing, malformed or inconsistent."""


@dataclass(frozen=True)
class Layer:
    """One layer of the network, with its shapes inferred from the input.

    ``in_shape`` and ``out_shape`` are ``(channels, height, width)``; dense and RBF layers have
    ``(features, 1, 1)``. ``params`` holds the kind's own parameters as its
    :class:`core.kinds.LayerKind` validated them, also readable as attributes
    (``layer.kernel``, ``layer.connections``: a tuple per output channel of the input channels
    it reads).
    """
    index: int
    name: str
    kind: str
    in_shape: tuple
    out_shape: tuple
    activation: str = "none"
    params: dict = field(default_factory=dict)
    final: bool = False
    folded: tuple = ()

    def __getattr__(self, key):
        if key.startswith("__"):             # copy, pickle: never the kind's parameters
            raise AttributeError(key)
        params = self.__dict__.get("params") or {}
        if key in params:
            return params[key]
        raise AttributeError(f"{self.__dict__.get('kind')} layer "
                             f"{self.__dict__.get('name')!r} has no {key!r}")

    @property
    def spec(self):
        """The :class:`core.kinds.LayerKind` of this layer."""
        return KINDS[self.kind]

    @property
    def in_features(self):
        return math.prod(self.in_shape)

    @property
    def out_features(self):
        return self.out_shape[0]

    @property
    def full(self):
        """Whether every output channel reads every input channel."""
        return all(len(c) == self.in_shape[0] for c in self.params.get("connections", ()))

    @property
    def macs(self):
        """Multiply-accumulates per image (0 for layers without a MAC array)."""
        return self.spec.macs(self.params, self.in_shape)

    @property
    def fan_in(self):
        """The most products summed into one accumulator (0: none)."""
        return self.spec.fan_in(self.params, self.in_shape)


@dataclass(frozen=True)
class Config:
    """A validated config. ``raw`` keeps the parsed TOML for the reserved sections."""
    path: Path
    name: str
    dataset: str
    input_size: int
    input_pad: int
    output: str
    layers: tuple
    train: dict
    quant: dict
    hardware: dict
    sha256: str
    raw: dict = field(repr=False)

    @property
    def num_classes(self):
        return self.layers[-1].out_features

    @property
    def macs(self):
        return sum(layer.macs for layer in self.layers)

    def layer_bits(self, name, key):
        """Return the width ``key`` (``wbits`` or ``abits``) the config gives layer ``name``:
        its ``[quant.layers.<name>]`` override, else ``[quant]``'s."""
        return self.quant["layers"].get(name, {}).get(key, self.quant[key])

    def bits_source(self, layer, key):
        """Return where the width ``key`` of an exported ``layer`` comes from: ``"override"``
        (``[quant.layers.<name>]``), ``"default"`` (``[quant]``) or ``"automatic"`` (the
        quantizer derives it: the input's format, the accumulator's width)."""
        if layer.spec.bits_noop(key, layer.final) is not None:
            return "automatic"
        return "override" if key in self.quant["layers"].get(layer.name, {}) else "default"

    @property
    def weights_sha256(self):
        """Hash of what determines the trained weights: [model], [[layers]] and [train]."""
        return self.sections_sha256("model", "layers", "train")

    @property
    def weights_description(self):
        """What determines the trained weights (``[model]``, ``[[layers]]``, ``[train]``) as
        plain JSON values, defaults filled in: each layer's name, kind and the keys its kind
        takes (a connection table: ``"full"`` or its rows). A checkpoint's ``train.json`` keeps
        it so that a retrain can say what changed (:func:`describe_network_changes`)."""
        layers = []
        for layer in self.layers:
            entry = {"name": layer.name, "kind": layer.kind}
            for key in sorted(layer.spec.keys):
                value = layer.activation if key == "activation" else layer.params.get(key)
                if isinstance(value, tuple):              # a connection table
                    value = "full" if layer.full else [list(row) for row in value]
                entry[key] = value
            layers.append(entry)
        model = {"name": self.name, "dataset": self.dataset, "input_size": self.input_size,
                 "input_pad": self.input_pad, "output": self.output}
        return {"model": model, "layers": layers, "train": dict(self.train)}

    def sections_sha256(self, *sections):
        """Return the SHA-256 of the named top-level sections of the TOML (``model``,
        ``layers``, ``train``, ``quant``, ``hardware``) as canonical JSON: what an artifact
        made from those sections records, so edits elsewhere in the file do not touch it."""
        for name in sections:
            if name not in TOP_KEYS:
                raise ValueError(f"unknown config section {name!r}; sections: "
                                 f"{', '.join(sorted(TOP_KEYS))}")
        key = {k: self.raw.get(k) for k in sections}
        return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()

    @property
    def exported(self):
        """The layers that get a record in ``qmodel.json``, in order.

        A kind that is not exported (batchnorm) is folded into the layer before it: that layer
        appears with ``folded`` naming the folded layers and with their activation."""
        out = []
        for layer in self.layers:
            if layer.spec.exported:
                out.append(layer)
            else:
                prev = out[-1]
                out[-1] = replace(prev, activation=layer.activation, final=layer.final,
                                  folded=prev.folded + (layer,))
        return tuple(out)

    @property
    def padded_size(self):
        return self.input_size + 2 * self.input_pad


def _show(value):
    return "-" if value is None else repr(value) if isinstance(value, str) else str(value)


def _value_changes(prefix, old, new):
    """Return ``"<prefix><key> a → b"`` for each key whose value differs (lists: "changed")."""
    out = []
    for key in list(new) + [k for k in old if k not in new]:
        a, b = old.get(key), new.get(key)
        if a == b:
            continue
        if isinstance(a, list) or isinstance(b, list):
            out.append(f"{prefix}{key} changed")
        else:
            out.append(f"{prefix}{key} {_show(a)} → {_show(b)}")
    return out


def describe_network_changes(old, new):
    """Return what differs between two :attr:`Config.weights_description` values, as phrases
    such as ``"f5: out_features 120 → 100"``, ``"model.input_pad 2 → 0"``,
    ``"train.epochs 15 → 1"``, ``"7 → 8 layers"`` (``[]``: nothing)."""
    changes = _value_changes("model.", old.get("model", {}), new["model"])
    old_layers, new_layers = old.get("layers", []), new["layers"]
    if len(old_layers) != len(new_layers):
        changes.append(f"{len(old_layers)} → {len(new_layers)} layers")
    for i, (a, b) in enumerate(zip(old_layers, new_layers, strict=False)):
        if a.get("name") != b["name"]:
            changes.append(f"layers[{i}] {_show(a.get('name'))} → {_show(b['name'])}")
        rest = lambda d: {k: v for k, v in d.items() if k != "name"}
        changes += _value_changes(f"{b['name']}: ", rest(a), rest(b))
    return changes + _value_changes("train.", old.get("train", {}), new["train"])


TRAIN_DEFAULTS = {
    "epochs": 8, "batch_size": 128, "lr": 2e-3, "weight_decay": 0.0, "seed": 0,
    "optimizer": "adam", "schedule": "onecycle", "threads": 2, "logit_scale": 1.0,
}
QUANT_DEFAULTS = {
    "wbits": 8, "abits": 8, "per_channel": False, "lut_bits": 0, "calibration_images": 2000,
    "qat_epochs": 2, "qat_lr": 5e-4, "layers": {},
}
HARDWARE_DEFAULTS = {"folding": "minimal", "target_cycles": 0, "layers": {}, "load": [],
                     "devices": {}}
#: Devices a ``[hardware.devices.<name>]`` table may name (the keys of ``fpga.devices.DEVICES``).
DEVICE_NAMES = ("up5k", "hx8k", "hx1k", "ecp5-25", "ecp5-45", "ecp5-85")

TOP_KEYS = {"model", "layers", "train", "quant", "hardware"}
MODEL_KEYS = {"name", "dataset", "input_size", "input_pad", "output"}

def preset_path(preset):
    """Return the config path of a preset name (``lenet5`` → ``configs/lenet5.toml``)."""
    path = CONFIG_DIR / f"{preset}.toml"
    if not path.is_file():
        known = ", ".join(sorted(p.stem for p in CONFIG_DIR.glob("*.toml")))
        raise ConfigError(f"unknown preset {preset!r}: no {path}; known presets: {known}")
    return path


def load_config(path_or_preset):
    """Load and validate a config from a path or a preset name."""
    text = str(path_or_preset)
    path = Path(text) if text.endswith(".toml") or "/" in text else preset_path(text)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"config {path}: cannot read ({exc.strerror}); check the path "
                          f"or use PRESET=<name> with a file in configs/") from None
    return parse_config(data, path)


def parse_config(data, path=Path("<string>")):
    """Validate TOML bytes or text; return a :class:`Config`."""
    if isinstance(data, str):
        data = data.encode()
    where = f"config {Path(path).name}"
    try:
        raw = tomllib.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"{where}: not valid TOML ({exc}); fix the syntax") from None
    checker = _Checker(where)
    checker.keys(raw, TOP_KEYS, "")
    model = checker.table(raw, "model", required=True)
    checker.keys(model, MODEL_KEYS, "model.")
    name = checker.string(model, "name", "model.", required=True)
    dataset = checker.choice(model, "dataset", "model.", DATASETS, "mnist")
    input_size = checker.integer(model, "input_size", "model.", 28, 4, 1024)
    input_pad = checker.integer(model, "input_pad", "model.", 0, 0, 16)
    outputs = tuple(dict.fromkeys(k.output for k in KINDS.values() if k.output))
    output = checker.choice(model, "output", "model.", outputs, outputs[0])

    raw_layers = raw.get("layers")
    if not isinstance(raw_layers, list) or not raw_layers:
        raise ConfigError(f"{where}: missing [[layers]]; describe the network as a list of "
                          f"[[layers]] tables (kinds: {', '.join(KINDS)})")
    layers = []
    shape = (1, input_size + 2 * input_pad, input_size + 2 * input_pad)
    names = set()
    for i, spec in enumerate(raw_layers):
        flat = next((lay for lay in layers if lay.spec.flat), None)
        layer = checker.layer(i, spec, shape, len(raw_layers), layers[-1] if layers else None,
                              flat)
        if layer.name in names:
            raise ConfigError(f"{where}: layers[{i}].name={layer.name!r} is used twice; "
                              f"give each layer a unique name")
        names.add(layer.name)
        layers.append(layer)
        shape = layer.out_shape
    last = layers[-1]
    if last.spec.final == "never":
        raise ConfigError(f"{where}: the last layer {last.name!r} is a {last.kind} layer; end "
                          f"with one of: {', '.join(k.name for k in KINDS.values() if k.output)}")
    if last.spec.output != output:
        raise ConfigError(f"{where}: model.output={output!r} but the last layer is "
                          f"kind={last.kind!r}, which gives {last.spec.output!r} scores; set "
                          f"model.output={last.spec.output!r} or change the last layer")
    if last.activation != "none":
        raise ConfigError(f"{where}: layers[{last.index}].activation={last.activation!r}: the "
                          f"output layer gives raw scores; set activation='none'")
    train = checker.section(raw, "train", TRAIN_DEFAULTS)
    quant = checker.section(raw, "quant", QUANT_DEFAULTS)
    hardware = checker.section(raw, "hardware", HARDWARE_DEFAULTS)
    checker.train(train)
    checker.quant(quant, {layer.name: layer for layer in layers})
    checker.hardware(hardware, {layer.name: layer for layer in layers})
    return Config(
        path=Path(path), name=name, dataset=dataset, input_size=input_size, input_pad=input_pad,
        output=output, layers=tuple(layers), train=train, quant=quant, hardware=hardware,
        sha256=hashlib.sha256(data).hexdigest(), raw=raw,
    )


class _Checker:
    def __init__(self, where):
        self.where = where

    def fail(self, message):
        raise ConfigError(f"{self.where}: {message}")

    def keys(self, table, allowed, prefix):
        for key in table:
            if key not in allowed:
                self.fail(f"unknown key {prefix}{key!r}; expected one of: "
                          f"{', '.join(sorted(allowed))}")

    def table(self, raw, key, required=False):
        value = raw.get(key, {})
        if key not in raw and required:
            self.fail(f"missing [{key}] table")
        if not isinstance(value, dict):
            self.fail(f"{key} must be a table ([{key}]), not {type(value).__name__}")
        return value

    def string(self, table, key, prefix, default=None, required=False):
        if key not in table:
            if required:
                self.fail(f"missing {prefix}{key}")
            return default
        value = table[key]
        if not isinstance(value, str) or not value:
            self.fail(f"{prefix}{key} must be a non-empty string, not {value!r}")
        return value

    def choice(self, table, key, prefix, choices, default=None):
        value = table.get(key, default)
        if value not in choices:
            self.fail(f"{prefix}{key}={value!r} is not one of: {', '.join(choices)}")
        return value

    def integer(self, table, key, prefix, default, lo, hi):
        value = table.get(key, default)
        if value is None:
            self.fail(f"missing {prefix}{key}")
        if isinstance(value, bool) or not isinstance(value, int):
            self.fail(f"{prefix}{key} must be an integer, not {value!r}")
        if not lo <= value <= hi:
            self.fail(f"{prefix}{key}={value} is out of range; use {lo}..{hi}")
        return value

    def number(self, table, key, prefix, lo, hi):
        value = table[key]
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            self.fail(f"{prefix}{key} must be a number, not {value!r}")
        if not lo <= value <= hi:
            self.fail(f"{prefix}{key}={value} is out of range; use {lo}..{hi}")
        return value

    def layer(self, i, spec, in_shape, count, previous, flat=None):
        prefix = f"layers[{i}]."
        if not isinstance(spec, dict):
            self.fail(f"layers[{i}] must be a table")
        kind_name = self.choice(spec, "kind", prefix, tuple(KINDS))
        kind = KINDS[kind_name]
        self.keys(spec, kind.keys | {"name", "kind"}, prefix)
        name = self.string(spec, "name", prefix, f"{kind_name}{i}")
        final = i == count - 1
        if kind.final == "only" and not final:
            self.fail(f"{prefix}kind={kind_name!r} is an output layer; it must be the last layer")
        kind.check_order(self, prefix, previous)
        if kind.spatial and flat is not None:
            self.fail(f"{prefix}a {kind_name} layer after the {flat.kind} layer {flat.name!r}, "
                      f"whose output is a flat vector; put {kind_name} layers before the first "
                      f"{flat.kind} layer")
        params, activation = kind.parse(self, spec, prefix, in_shape)
        return Layer(i, name, kind_name, tuple(in_shape), kind.out_shape(params, in_shape),
                     activation, params=params, final=final)

    def section(self, raw, key, defaults):
        table = self.table(raw, key)
        self.keys(table, set(defaults), f"{key}.")
        merged = dict(defaults)
        merged.update(table)
        return merged

    def train(self, train):
        p = "train."
        self.integer(train, "epochs", p, None, 1, 1000)
        self.integer(train, "batch_size", p, None, 1, 65536)
        self.integer(train, "seed", p, None, 0, 2**31 - 1)
        self.integer(train, "threads", p, None, 1, 256)
        self.number(train, "lr", p, 1e-7, 10.0)
        self.number(train, "weight_decay", p, 0.0, 1.0)
        self.number(train, "logit_scale", p, 1e-6, 1e6)
        self.choice(train, "optimizer", p, ("adam", "sgd"))
        self.choice(train, "schedule", p, ("onecycle", "constant"))

    def quant(self, quant, layers):
        p = "quant."
        self.integer(quant, "wbits", p, None, 2, 16)
        self.integer(quant, "abits", p, None, 2, 16)
        self.integer(quant, "lut_bits", p, None, 0, 12)
        if 0 < quant["lut_bits"] < 4:
            self.fail(f"quant.lut_bits={quant['lut_bits']}: use 0 (auto: abits + 2, at most 12) "
                      f"or 4..12")
        self.integer(quant, "calibration_images", p, None, 1, 50000)
        self.integer(quant, "qat_epochs", p, None, 0, 100)
        self.number(quant, "qat_lr", p, 1e-7, 10.0)
        if not isinstance(quant["per_channel"], bool):
            self.fail(f"quant.per_channel must be true or false, not {quant['per_channel']!r}")
        self.per_layer(quant, "quant", layers, {"wbits": (2, 16), "abits": (2, 16)})
        self.bits_overrides(quant["layers"], layers)

    def bits_overrides(self, table, layers):
        """Refuse a ``[quant.layers.<name>]`` width that changes nothing on its layer
        (:meth:`core.kinds.LayerKind.bits_noop`)."""
        exported = None
        for layer in layers.values():
            exported = layer if layer.spec.exported else exported
            for key, value in table.get(layer.name, {}).items():
                reason = layer.spec.bits_noop(key, layer.final)
                if reason is None:
                    continue
                if exported is not layer and exported is not None:
                    fix = f"set it in [quant.layers.{exported.name}]"
                else:
                    fix = "remove it"
                self.fail(f"quant.layers.{layer.name}.{key}={value} changes nothing: {reason}; "
                          f"{fix}")

    def hardware(self, hardware, names, key="hardware"):
        p = f"{key}."
        self.choice(hardware, "folding", p, ("minimal", "target", "explicit"))
        self.integer(hardware, "target_cycles", p, None, 0, 2**40)
        if hardware["folding"] == "target" and hardware["target_cycles"] <= 0:
            self.fail(f"{key}.folding='target' needs {key}.target_cycles > 0")
        muls = {n: v.pop("mul") for n, v in hardware["layers"].items()
                if isinstance(v, dict) and "mul" in v}
        self.per_layer(hardware, key, names, {"pe": (1, 4096), "simd": (1, 65536)})
        self.folding_entries(hardware["layers"], key, names)
        for lname, mul in muls.items():
            if mul not in ("dsp", "lut"):
                self.fail(f"{key}.layers.{lname}.mul={mul!r} must be 'dsp' or 'lut'")
            hardware["layers"][lname]["mul"] = mul
        load = hardware["load"]
        if not isinstance(load, list) or any(n not in names for n in load):
            self.fail(f"{key}.load={load!r} must be a list of layer names (weights loaded "
                      f"into RAM after reset), from: {', '.join(sorted(names))}")
        devices = hardware.pop("devices", {})
        if key != "hardware":
            if devices:
                self.fail(f"{key}.devices: device tables do not nest")
            return
        if not isinstance(devices, dict):
            self.fail("hardware.devices must be a table of device names")
        hardware["devices"] = {}
        for device, table in devices.items():
            if device not in DEVICE_NAMES:
                self.fail(f"hardware.devices.{device}: unknown device; expected one of: "
                          f"{', '.join(DEVICE_NAMES)}")
            where = f"hardware.devices.{device}"
            if not isinstance(table, dict):
                self.fail(f"{where} must be a table")
            self.keys(table, set(HARDWARE_DEFAULTS) - {"devices"}, f"{where}.")
            section = {**HARDWARE_DEFAULTS, "devices": {}, **table}
            self.hardware(section, names, where)
            hardware["devices"][device] = section

    def folding_entries(self, table, key, layers):
        """Check ``[<key>.layers.<name>]`` against the layer: only MAC layers take a folding,
        ``pe`` divides its outputs and ``simd`` its window (the arithmetic of
        :meth:`core.kinds.LayerKind.mac_window`; the hardware splits every such divisor)."""
        for lname, entry in table.items():
            layer = layers[lname]
            where = f"{key}.layers.{lname}"
            if not layer.spec.mac:
                macs = ", ".join(n for n, lay in layers.items() if lay.spec.mac)
                self.fail(f"{where}: {layer.kind} layer {lname!r} has no MAC array, so pe/simd/"
                          f"mul change nothing; fold one of: {macs}")
            outputs, window = layer.spec.mac_window(layer.params, layer.in_shape)
            if outputs % entry.get("pe", 1):
                self.fail(f"{where}.pe={entry['pe']} does not divide the {outputs} outputs of "
                          f"{lname!r}; use a divisor of {outputs}")
            if window % entry.get("simd", 1):
                self.fail(f"{where}.simd={entry['simd']} does not divide the window of "
                          f"{lname!r} ({window} products per output); use a divisor of {window}")

    def per_layer(self, section, key, names, allowed):
        table = section["layers"]
        if not isinstance(table, dict):
            self.fail(f"{key}.layers must be a table of layer names")
        for lname, values in table.items():
            if lname not in names:
                self.fail(f"{key}.layers.{lname}: no layer named {lname!r}; layers are: "
                          f"{', '.join(sorted(names))}")
            if not isinstance(values, dict):
                self.fail(f"{key}.layers.{lname} must be a table")
            self.keys(values, set(allowed), f"{key}.layers.{lname}.")
            for k, (lo, hi) in allowed.items():
                if k in values:
                    self.integer(values, k, f"{key}.layers.{lname}.", None, lo, hi)

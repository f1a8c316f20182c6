"""Parse and validate accelerator configs (``configs/<preset>.toml``).

One config describes one accelerator: the network, the number formats and the hardware folding.
Every stage (training, quantization, golden model, hardware, simulation) reads the validated
:class:`Config`; nothing downstream re-reads the TOML. This module imports no torch, so hw/ and
sim/ may use it.

Errors are :class:`ConfigError` with one line that names the file, the key and the fix.
"""

import hashlib
import math
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from .errors import UserError

__all__ = [
    "ConfigError", "Config", "Layer", "load_config", "parse_config", "preset_path",
    "CONFIG_DIR", "LECUN_1998_C3",
]

CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs"

ACTIVATIONS = ("relu", "tanh", "scaled_tanh", "sigmoid", "none")
LUT_ACTIVATIONS = ("tanh", "scaled_tanh", "sigmoid")
POOL_MODES = ("max", "avg", "subsample")
LAYER_KINDS = ("conv", "pool", "dense", "rbf")
DATASETS = ("mnist", "fashion-mnist", "idx")

# LeCun et al. 1998, table I: for each C3 map (0..15), the S2 maps (0..5) it reads.
LECUN_1998_C3 = (
    (0, 1, 2), (1, 2, 3), (2, 3, 4), (3, 4, 5), (0, 4, 5), (0, 1, 5),
    (0, 1, 2, 3), (1, 2, 3, 4), (2, 3, 4, 5), (0, 3, 4, 5), (0, 1, 4, 5), (0, 1, 2, 5),
    (0, 1, 3, 4), (1, 2, 4, 5), (0, 2, 3, 5),
    (0, 1, 2, 3, 4, 5),
)


class ConfigError(UserError):
    """A config file is missing, malformed or inconsistent."""


@dataclass(frozen=True)
class Layer:
    """One layer of the network, with its shapes inferred from the input.

    ``in_shape`` and ``out_shape`` are ``(channels, height, width)``; dense and RBF layers have
    ``(features, 1, 1)``. ``connections`` is a tuple per output channel of the input channels it
    reads (every channel for a full layer).
    """
    index: int
    name: str
    kind: str
    in_shape: tuple
    out_shape: tuple
    activation: str = "none"
    kernel: int = 0
    padding: int = 0
    mode: str = ""
    size: int = 0
    connections: tuple = ()
    final: bool = False

    @property
    def in_features(self):
        return math.prod(self.in_shape)

    @property
    def out_features(self):
        return self.out_shape[0]

    @property
    def full(self):
        """Whether every output channel reads every input channel."""
        return all(len(c) == self.in_shape[0] for c in self.connections)

    @property
    def macs(self):
        """Multiply-accumulates per image (0 for layers without a MAC array)."""
        if self.kind == "conv":
            fan = sum(len(c) for c in self.connections) * self.kernel ** 2
            return fan * self.out_shape[1] * self.out_shape[2]
        if self.kind == "dense":
            return self.in_features * self.out_features
        if self.kind == "rbf":
            return self.in_features * self.out_features
        return 0


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

    @property
    def weights_sha256(self):
        """Hash of what determines the trained weights: [model], [[layers]] and [train]."""
        import json
        key = {k: self.raw.get(k) for k in ("model", "layers", "train")}
        return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()

    @property
    def padded_size(self):
        return self.input_size + 2 * self.input_pad


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
#: Devices a ``[hardware.devices.<name>]`` table may name (the keys of ``hw.synth.DEVICES``).
DEVICE_NAMES = ("up5k", "hx8k", "hx1k", "ecp5-25", "ecp5-45", "ecp5-85")

TOP_KEYS = {"model", "layers", "train", "quant", "hardware"}
MODEL_KEYS = {"name", "dataset", "input_size", "input_pad", "output"}
LAYER_KEYS = {
    "conv": {"name", "kind", "out_channels", "kernel", "padding", "activation", "connections"},
    "pool": {"name", "kind", "mode", "size", "activation"},
    "dense": {"name", "kind", "out_features", "activation"},
    "rbf": {"name", "kind", "out_features"},
}


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
    output = checker.choice(model, "output", "model.", ("softmax", "rbf"), "softmax")

    raw_layers = raw.get("layers")
    if not isinstance(raw_layers, list) or not raw_layers:
        raise ConfigError(f"{where}: missing [[layers]]; describe the network as a list of "
                          f"[[layers]] tables (kinds: {', '.join(LAYER_KINDS)})")
    layers = []
    shape = (1, input_size + 2 * input_pad, input_size + 2 * input_pad)
    names = set()
    for i, spec in enumerate(raw_layers):
        layer = checker.layer(i, spec, shape, len(raw_layers))
        if layer.name in names:
            raise ConfigError(f"{where}: layers[{i}].name={layer.name!r} is used twice; "
                              f"give each layer a unique name")
        names.add(layer.name)
        layers.append(layer)
        shape = layer.out_shape
    last = layers[-1]
    if output == "rbf" and last.kind != "rbf":
        raise ConfigError(f"{where}: model.output='rbf' needs the last layer to be kind='rbf', "
                          f"not {last.kind!r}")
    if output == "softmax" and last.kind != "dense":
        raise ConfigError(f"{where}: model.output='softmax' needs the last layer to be "
                          f"kind='dense', not {last.kind!r}")
    if last.kind == "dense" and last.activation != "none":
        raise ConfigError(f"{where}: layers[{last.index}].activation={last.activation!r}: the "
                          f"output layer gives raw scores; set activation='none'")
    if last.out_features < 2:
        raise ConfigError(f"{where}: the last layer has {last.out_features} output; a "
                          f"classifier needs at least 2")
    train = checker.section(raw, "train", TRAIN_DEFAULTS)
    quant = checker.section(raw, "quant", QUANT_DEFAULTS)
    hardware = checker.section(raw, "hardware", HARDWARE_DEFAULTS)
    checker.train(train)
    checker.quant(quant, names)
    checker.hardware(hardware, names)
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

    def layer(self, i, spec, in_shape, count):
        prefix = f"layers[{i}]."
        if not isinstance(spec, dict):
            self.fail(f"layers[{i}] must be a table")
        kind = self.choice(spec, "kind", prefix, LAYER_KINDS)
        self.keys(spec, LAYER_KEYS[kind], prefix)
        name = self.string(spec, "name", prefix, f"{kind}{i}")
        channels, height, width = in_shape
        final = i == count - 1
        if kind == "rbf" and not final:
            self.fail(f"{prefix}kind='rbf' is an output layer; it must be the last layer")
        if kind == "conv":
            out_channels = self.integer(spec, "out_channels", prefix, None, 1, 4096)
            kernel = self.integer(spec, "kernel", prefix, None, 1, 15)
            padding = self.integer(spec, "padding", prefix, 0, 0, kernel - 1)
            activation = self.choice(spec, "activation", prefix, ACTIVATIONS, "none")
            if height == 1 and width == 1 and channels > 1 and kernel > 1:
                self.fail(f"{prefix}conv after a dense layer; use kind='dense'")
            out_h, out_w = height + 2 * padding - kernel + 1, width + 2 * padding - kernel + 1
            if out_h < 1 or out_w < 1:
                self.fail(f"{prefix}kernel={kernel} is larger than its {height}x{width} input "
                          f"(padding {padding}); use a smaller kernel or more padding")
            connections = self.connections(spec, prefix, channels, out_channels)
            return Layer(i, name, kind, in_shape, (out_channels, out_h, out_w), activation,
                         kernel=kernel, padding=padding, connections=connections, final=final)
        if kind == "pool":
            mode = self.choice(spec, "mode", prefix, POOL_MODES)
            size = self.integer(spec, "size", prefix, 2, 2, 8)
            if mode == "avg" and size & (size - 1):
                self.fail(f"{prefix}size={size}: average pooling needs a power-of-two size "
                          f"(the division is a shift)")
            if height % size or width % size:
                self.fail(f"{prefix}size={size} does not divide its {height}x{width} input; "
                          f"change the pool size or the padding")
            default_act = "none"
            activation = self.choice(spec, "activation", prefix, ACTIVATIONS, default_act)
            if mode != "subsample" and activation != "none":
                self.fail(f"{prefix}activation={activation!r}: only mode='subsample' pools "
                          f"have an activation; remove it or use mode='subsample'")
            out = (channels, height // size, width // size)
            return Layer(i, name, kind, in_shape, out, activation, mode=mode, size=size,
                         final=final)
        out_features = self.integer(spec, "out_features", prefix, None, 1, 65536)
        features = channels * height * width
        connections = tuple(tuple(range(features)) for _ in range(out_features))
        if kind == "rbf":
            return Layer(i, name, kind, in_shape, (out_features, 1, 1), "none",
                         connections=connections, final=final)
        activation = self.choice(spec, "activation", prefix, ACTIVATIONS, "none")
        return Layer(i, name, kind, in_shape, (out_features, 1, 1), activation,
                     connections=connections, final=final)

    def connections(self, spec, prefix, in_channels, out_channels):
        value = spec.get("connections", "full")
        if value == "full":
            return tuple(tuple(range(in_channels)) for _ in range(out_channels))
        if value == "lecun1998":
            if (in_channels, out_channels) != (6, 16):
                self.fail(f"{prefix}connections='lecun1998' is the 6→16 C3 table, but this "
                          f"layer maps {in_channels}→{out_channels} channels")
            return LECUN_1998_C3
        if not isinstance(value, list):
            self.fail(f"{prefix}connections={value!r}: use 'full', 'lecun1998' or a list per "
                      f"output channel of input channel indices")
        if len(value) != out_channels:
            self.fail(f"{prefix}connections has {len(value)} rows but out_channels="
                      f"{out_channels}; give one list of input channels per output channel")
        table = []
        for o, row in enumerate(value):
            ok = isinstance(row, list) and row and all(
                isinstance(c, int) and not isinstance(c, bool) and 0 <= c < in_channels
                for c in row)
            if not ok or len(set(row)) != len(row):
                self.fail(f"{prefix}connections[{o}]={row!r}: list distinct input channels "
                          f"0..{in_channels - 1}")
            table.append(tuple(sorted(row)))
        return tuple(table)

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

    def quant(self, quant, names):
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
        self.per_layer(quant, "quant", names, {"wbits": (2, 16), "abits": (2, 16)})

    def hardware(self, hardware, names, key="hardware"):
        p = f"{key}."
        self.choice(hardware, "folding", p, ("minimal", "target", "explicit"))
        self.integer(hardware, "target_cycles", p, None, 0, 2**40)
        if hardware["folding"] == "target" and hardware["target_cycles"] <= 0:
            self.fail(f"{key}.folding='target' needs {key}.target_cycles > 0")
        muls = {n: v.pop("mul") for n, v in hardware["layers"].items()
                if isinstance(v, dict) and "mul" in v}
        self.per_layer(hardware, key, names, {"pe": (1, 4096), "simd": (1, 65536)})
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

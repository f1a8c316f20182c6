"""The integer model: read, verify and run ``qmodel.json`` + ``qmodel.npz`` bit-exactly.

:class:`IntegerModel` checks a model completely before it runs anything: every array against
its SHA-256 and shape, then every layer against the rules of ``golden/README.md`` (formats
chain from layer to layer, codes lie in their formats, accumulator widths follow bit growth,
unconnected weights are zero). A model that loads is one the hardware can implement.

Errors are :class:`QModelError` with one line that names the file, the layer or array, and the
fix.
"""

import concurrent.futures
import contextlib
import copy
import hashlib
import json
import os
import shlex
import tempfile
import zipfile
from pathlib import Path

import numpy as np

from core.errors import UserError
from core.paths import BUILD_DIR, CONFIG_DIR

from . import blas as _blas
from . import fast as _fast
from . import layers as L
from .ops import OPS

__all__ = [
    "QModelError", "IntegerModel", "load", "save", "array_sha256",
    "FORMAT_VERSION", "JSON_NAME", "NPZ_NAME",
]

#: The ``format_version`` of ``qmodel.json`` this module reads and writes.
FORMAT_VERSION = 1
#: File names of an integer model inside its directory (``build/<preset>/``).
JSON_NAME = "qmodel.json"
NPZ_NAME = "qmodel.npz"

_MISSING = object()


class QModelError(UserError, ValueError):
    """An integer model (or the images given to it) is missing, corrupt or inconsistent."""


def array_sha256(array):
    """Return the SHA-256 (hex) of an integer array's little-endian int64 C-order bytes."""
    array = np.asarray(array)
    if array.dtype == np.bool_ or not np.issubdtype(array.dtype, np.integer):
        raise TypeError(f"array_sha256: the array must hold integer codes, not {array.dtype}")
    return hashlib.sha256(np.ascontiguousarray(array, dtype="<i8").tobytes()).hexdigest()


def _fix(preset, folder=None):
    """Return the hint that rebuilds the integer model of ``preset`` (its ``model.name``);
    for one read from ``folder``: ``PRESET=`` when configs/ holds that preset, else the config
    it was made from, and ``OUT=`` when ``folder`` is not the preset's default build folder."""
    named = isinstance(preset, str) and bool(preset)
    if folder is None:
        return f"re-run `make quantize PRESET={preset if named else '<preset>'}`"
    known = named and (CONFIG_DIR / f"{preset}.toml").is_file()
    words = [f"PRESET={preset}" if known else "CONFIG=<the config it was made from>"]
    if not (known and Path(folder).resolve() == (BUILD_DIR / preset).resolve()):
        words.append(f"OUT={shlex.quote(str(folder))}")
    return f"re-run `make quantize {' '.join(words)}`"


class _Checker:
    """Read fields of ``qmodel.json``; fail with the file, the place and the fix.

    ``where`` names the place of a field ("input", "layers[2] 'c3'"); messages name the field.
    """

    def __init__(self, json_name, fix):
        self.json_name = json_name
        self.fix = fix

    def fail(self, where, message):
        place = f"{where}: " if where else ""
        raise QModelError(f"{self.json_name}: {place}{message}; {self.fix}")

    def get(self, table, key, where, default=_MISSING):
        if key not in table:
            if default is _MISSING:
                self.fail(where, f"missing {key!r}")
            return default
        return table[key]

    def table(self, parent, key, where, default=_MISSING):
        value = self.get(parent, key, where, default)
        if not isinstance(value, dict):
            self.fail(where, f"{key} must be an object, not {value!r}")
        return value

    def integer(self, parent, key, where, lo, hi=None, default=_MISSING):
        value = self.get(parent, key, where, default)
        if isinstance(value, bool) or not isinstance(value, int):
            self.fail(where, f"{key}={value!r} must be an integer")
        if value < lo or (hi is not None and value > hi):
            span = f"{lo}..{hi}" if hi is not None else f"at least {lo}"
            self.fail(where, f"{key}={value} is out of range ({span})")
        return value

    def boolean(self, parent, key, where, default=_MISSING):
        value = self.get(parent, key, where, default)
        if not isinstance(value, bool):
            self.fail(where, f"{key}={value!r} must be true or false")
        return value

    def choice(self, parent, key, where, choices, default=_MISSING):
        value = self.get(parent, key, where, default)
        if value not in choices:
            self.fail(where, f"{key}={value!r} is not one of: {', '.join(choices)}")
        return value

    def shape(self, parent, key, where, ndim=None, default=_MISSING):
        value = self.get(parent, key, where, default)
        if value is None:
            return None
        ok = isinstance(value, list) and value and all(
            isinstance(d, int) and not isinstance(d, bool) and d >= 1 for d in value)
        if not ok or (ndim is not None and len(value) != ndim):
            dims = f"{ndim} " if ndim is not None else ""
            self.fail(where, f"{key}={value!r} must be a list of {dims}positive integers")
        return tuple(value)

    def fracs(self, value, where, key, channels):
        """Return a per-channel int64 array from an int or a list of ``channels`` ints."""
        if isinstance(value, int) and not isinstance(value, bool):
            return np.full(channels, value, dtype=np.int64)
        ok = isinstance(value, list) and all(
            isinstance(f, int) and not isinstance(f, bool) for f in value)
        if not ok or len(value) != channels:
            self.fail(where, f"{key}={value!r} must be an integer or a list of {channels} "
                             f"integers (one per channel)")
        return np.array(value, dtype=np.int64)

    def fmt(self, parent, key, where, channels=None):
        """Return ``{"bits", "frac", "signed"}``; ``frac`` may be per channel if ``channels``."""
        value = self.table(parent, key, where)
        inner = f"{where} {key}".strip()
        bits = self.integer(value, "bits", inner, 1, 62)
        signed = self.boolean(value, "signed", inner)
        if channels is None:
            frac = self.integer(value, "frac", inner, -64, 126)
        else:
            frac = self.fracs(self.get(value, "frac", inner), inner, "frac", channels)
        return {"bits": bits, "frac": frac, "signed": signed}


class IntegerModel:
    """A verified integer model, ready to run bit-exactly.

    Parameters
    ----------
    meta : dict
        The content of ``qmodel.json`` (schema in ``golden/README.md``), including the
        ``arrays`` table of shapes and SHA-256 digests.
    arrays : dict of str to int64 ndarray
        The content of ``qmodel.npz``.
    json_name, npz_name : str
        How error messages name the two sources (the file paths when loaded from files).
    folder : path, optional
        The folder the model was read from; error messages suggest rebuilding it there.

    Raises :class:`QModelError` if an array is missing or does not match its shape and SHA-256,
    or if the model breaks a rule of the README. The arrays are copied and kept read-only.
    """

    def __init__(self, meta, arrays, *, json_name=JSON_NAME, npz_name=NPZ_NAME, folder=None):
        if not isinstance(meta, dict):
            raise QModelError(f"{json_name}: the top level must be an object, not "
                              f"{type(meta).__name__}; {_fix(None)}")
        self._meta = copy.deepcopy(meta)
        self._preset = meta.get("preset")
        checker = _Checker(json_name, _fix(self._preset, folder))
        self._arrays = self._verify_arrays(checker, npz_name, arrays)
        self._build(checker)
        self._plans = {}            # run's plans (golden.fast), built on first use

    @classmethod
    def from_files(cls, json_path, npz_path):
        """Load, verify and return the model stored in ``json_path`` and ``npz_path``."""
        json_path, npz_path = Path(json_path), Path(npz_path)
        guess = _fix(json_path.resolve().parent.name, json_path.parent)
        try:
            text = json_path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise QModelError(f"{json_path}: no such file; {guess}") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise QModelError(f"{json_path}: cannot read ({exc}); {guess}") from None
        try:
            meta = json.loads(text)
        except json.JSONDecodeError as exc:
            raise QModelError(f"{json_path}: not valid JSON ({exc.msg} at line {exc.lineno} "
                              f"column {exc.colno}); {guess}") from None
        fix = _fix(meta.get("preset") if isinstance(meta, dict) else None, json_path.parent)
        listed = meta.get("arrays") if isinstance(meta, dict) else None
        arrays = {}
        try:
            with np.load(npz_path, allow_pickle=False) as archive:
                if isinstance(listed, dict):
                    for name in listed:
                        if name in archive.files:
                            arrays[name] = archive[name]
        except FileNotFoundError:
            raise QModelError(f"{npz_path}: no such file; {fix}") from None
        except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
            raise QModelError(f"{npz_path}: not a readable .npz archive of integer arrays "
                              f"({exc}); {fix}") from None
        return cls(meta, arrays, json_name=str(json_path), npz_name=str(npz_path),
                   folder=json_path.parent)


    def _verify_arrays(self, checker, npz_name, arrays):
        """Check each listed array's presence, dtype, shape and SHA-256; return read-only copies."""
        if not isinstance(arrays, dict):
            raise QModelError(f"{npz_name}: the arrays must be a dict of name to int64 array, "
                              f"not {type(arrays).__name__}; {checker.fix}")
        table = checker.table(self._meta, "arrays", "")
        verified = {}
        for name, entry in table.items():
            where = f"arrays[{name!r}]"
            if not isinstance(entry, dict):
                checker.fail(where, f"must be an object with 'shape' and 'sha256', not {entry!r}")
            shape = checker.shape(entry, "shape", where)
            digest = checker.get(entry, "sha256", where)
            if not isinstance(digest, str) or len(digest) != 64:
                checker.fail(where, f"sha256={digest!r} must be 64 hex digits")
            if name not in arrays:
                raise QModelError(f"{npz_name}: array {name!r} listed in {checker.json_name} is "
                                  f"missing; {checker.fix}")
            array = np.asarray(arrays[name])
            if array.dtype != np.int64:
                raise QModelError(f"{npz_name}: array {name!r} is {array.dtype}, not int64; "
                                  f"{checker.fix}")
            if array.shape != shape:
                raise QModelError(f"{npz_name}: array {name!r} has shape {list(array.shape)} but "
                                  f"{checker.json_name} says {list(shape)}; {checker.fix}")
            if array_sha256(array) != digest.lower():
                raise QModelError(f"{npz_name}: array {name!r} does not match its SHA-256 in "
                                  f"{checker.json_name} (the files come from different exports "
                                  f"or were modified); {checker.fix}")
            array = array.copy()
            array.flags.writeable = False
            verified[name] = array
        return verified

    def _build(self, checker):
        meta = self._meta
        version = meta.get("format_version")
        if version != FORMAT_VERSION:
            checker.fail("", f"format_version={version!r}, but this golden model reads version "
                             f"{FORMAT_VERSION}")
        inp = checker.table(meta, "input", "")
        channels = checker.integer(inp, "channels", "input", 1)
        height = checker.integer(inp, "height", "input", 1)
        width = checker.integer(inp, "width", "input", 1)
        self._pad = checker.integer(inp, "pad", "input", 0, default=0)
        self._input_format = fmt = checker.fmt(inp, "format", "input")
        self._input_shape = (channels, height, width)
        shape = (channels, height + 2 * self._pad, width + 2 * self._pad)
        descs = checker.get(meta, "layers", "")
        if not isinstance(descs, list) or not descs:
            checker.fail("", "layers must be a non-empty list")
        self._layers = []
        names = set()
        for i, desc in enumerate(descs):
            if not isinstance(desc, dict):
                checker.fail(f"layers[{i}]", f"must be an object, not {desc!r}")
            name = desc.get("name")
            if not isinstance(name, str) or not name:
                checker.fail(f"layers[{i}]", f"name={name!r} must be a non-empty string")
            if name in names:
                checker.fail(f"layers[{i}] {name!r}", "the name is used twice")
            names.add(name)
            kind = checker.choice(desc, "kind", f"layers[{i}] {name!r}", OPS.kinds())
            layer = OPS[kind](checker, i, desc, shape, fmt, self._arrays)
            if layer.final and i != len(descs) - 1:
                layer.fail("only the last layer may be final")
            self._layers.append(layer)
            shape = layer.out_shape
            fmt = getattr(layer, "out_format", None)
        last = self._layers[-1]
        if not last.final:
            last.fail(f"the last layer gives the scores; set final: true (a "
                      f"{' or '.join(k for k in OPS.kinds() if OPS[k].classify)} layer)")
        out = checker.table(meta, "output", "")
        expected = last.classify
        self._output_kind = checker.choice(out, "kind", "output", ("argmax", "argmin"))
        if self._output_kind != expected:
            checker.fail("output", f"kind={self._output_kind!r} but a final {last.kind} layer "
                                   f"is classified by {expected!r}")
        checker.integer(out, "score_bits", "output", last.acc_bits, last.acc_bits)
        # Scores that are never negative (RBF distances) fit score_bits signed or unsigned.
        if not checker.boolean(out, "score_signed", "output") and not last.scores_nonnegative:
            checker.fail("output", f"score_signed must be true ({last.kind} scores are signed "
                                   f"accumulators)")
        self._num_classes = last.out_shape[0]
        checker.integer(meta, "num_classes", "", self._num_classes, self._num_classes)

    @property
    def meta(self):
        """A copy of the model's ``qmodel.json`` content."""
        return copy.deepcopy(self._meta)

    @property
    def arrays(self):
        """The verified arrays by name (read-only int64)."""
        return dict(self._arrays)

    @property
    def preset(self):
        return self._preset

    @property
    def layer_names(self):
        return tuple(layer.name for layer in self._layers)

    @property
    def num_classes(self):
        return self._num_classes

    @property
    def input_shape(self):
        """``(channels, height, width)`` of an image before padding."""
        return self._input_shape

    @property
    def input_pad(self):
        return self._pad

    @property
    def output_kind(self):
        """"argmax" or "argmin" (RBF output)."""
        return self._output_kind

    def _images(self, images):
        channels, height, width = self._input_shape
        expected = [height, width] if channels == 1 else [channels, height, width]
        fix = (f"pass a batch of {'x'.join(map(str, expected))} images (for one image, "
               f"images[None])")
        array = np.asarray(images)
        if array.dtype == np.bool_ or not np.issubdtype(array.dtype, np.integer):
            raise QModelError(f"images: expected integer pixel codes (uint8), got {array.dtype}; "
                              f"convert pixels to codes, e.g. uint8 0..255")
        if channels == 1 and array.ndim == 3:
            array = array[:, None]
        if array.ndim != 4 or array.shape[1:] != self._input_shape:
            shown = ", ".join(["N"] + [str(d) for d in expected])
            raise QModelError(f"images: expected shape [{shown}] (the model's input), got "
                              f"{list(np.shape(images))}; {fix}")
        lo, hi = L.format_range(self._input_format)
        if array.size and (int(array.min()) < lo or int(array.max()) > hi):
            raise QModelError(f"images: pixel codes {int(array.min())}..{int(array.max())} "
                              f"exceed the input format's range {lo}..{hi}")
        if array.dtype == np.uint64:
            array = array.astype(np.int64)      # codes below 2^62: exact
        return array

    def _batches(self, images, batch_size):
        """Yield unpadded batches ``[m, C, H, W]`` of the checked images (one if empty)."""
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, not {batch_size!r}")
        x = self._images(images)
        for start in range(0, max(x.shape[0], 1), batch_size):
            yield x[start:start + batch_size]

    def plan(self, *, taps=False):
        """How :meth:`run` computes each layer: a :class:`golden.fast.Plan` (cached).

        ``plan().paths`` names the path of every layer: "float32" where float32 is provably
        exact (see :mod:`golden.fast`), else "int64: <the bound that fails>". With ``taps`` no
        activation moves after a max pooling (every layer's own output is computed).
        """
        taps = bool(taps)
        if taps not in self._plans:
            self._plans[taps] = _fast.Plan(self, fuse=not taps)
        return self._plans[taps]

    def run(self, images, *, taps=False, batch_size=64):
        """Run the model on ``images`` and return its outputs.

        ``images`` are integer pixel codes ``[N, H, W]`` (``[N, C, H, W]`` with several
        channels) of the input format, unpadded; they are processed ``batch_size`` at a time,
        which changes nothing but memory use and speed (the default keeps a batch's largest
        intermediate within the processor's caches: the layers are memory-bound passes).

        Return a dict: ``"classes"`` int64 ``[N]``; ``"scores"`` int64 ``[N, K]`` (the final
        layer's accumulators); ``"saturations"``, for every layer name the number of values
        whose requantization clamp can change the layer's output (0 for layers without one);
        ``"clamps"``, for every layer name the number of lossless clamps: lookup-table inputs
        clamped at an end whose entry already is the code the function tends to there
        (:func:`golden.layers.lut_lossless`; 0 for other layers); and with ``taps``,
        ``"taps"``, for every layer name its int64 output (NCHW for spatial layers, ``[N, F]``
        for dense and RBF layers; the final layer's tap is the scores).
        """
        scores = []
        saturations = dict.fromkeys(self.layer_names, 0)
        clamps = dict.fromkeys(self.layer_names, 0)
        outputs = {name: [] for name in self.layer_names}
        plan = self.plan(taps=bool(taps))

        def forward(x):
            return plan.forward(x, bool(taps))

        # Batches are independent and NumPy releases the GIL in its array loops and matrix
        # products, so a thread per core runs them side by side; results keep batch order.
        batches = list(self._batches(images, batch_size))
        workers = max(1, min(len(batches), os.cpu_count() or 1))
        # One BLAS thread per batch thread (see golden.blas): more threads than cores stall.
        hold = _blas.one_thread() if workers > 1 else contextlib.nullcontext()
        with hold, concurrent.futures.ThreadPoolExecutor(workers) as pool:
            for x, counts, tapped in pool.map(forward, batches):
                for layer, (saturated, clamped) in zip(self._layers, counts, strict=True):
                    saturations[layer.name] += saturated
                    clamps[layer.name] += clamped
                for layer, out in zip(self._layers, tapped, strict=False):
                    outputs[layer.name].append(out)
                scores.append(x)
        scores = np.concatenate(scores)
        result = {
            "classes": L.classify(scores, self._output_kind),
            "scores": scores,
            "saturations": saturations,
            "clamps": clamps,
        }
        if taps:
            result["taps"] = {name: np.concatenate(parts) for name, parts in outputs.items()}
        return result

    def check_accumulators(self, images, *, batch_size=128):
        """Check that every accumulator computed on ``images`` fits its layer's ``acc_bits``.

        Return, for every layer with an accumulator, the smallest and largest accumulator seen
        as ``(lo, hi)`` (``None`` for no images). Raise :class:`QModelError` naming the layer if
        a value falls outside the signed ``acc_bits`` range.
        """
        seen = {layer.name: None for layer in self._layers if layer.has_acc}
        for x in self._batches(images, batch_size):
            x = L.pad2d(x, self._pad)
            for layer in self._layers:
                x, acc, _ = layer.forward(x)
                if acc is None or acc.size == 0:
                    continue
                lo, hi = int(acc.min()), int(acc.max())
                limit = 1 << (layer.acc_bits - 1)
                if lo < -limit or hi >= limit:
                    value = lo if lo < -limit else hi
                    raise QModelError(f"layer {layer.name!r}: accumulator {value} does not fit "
                                      f"acc_bits={layer.acc_bits} (signed range {-limit}.."
                                      f"{limit - 1}); the bit-growth bound is broken, report it "
                                      f"with this qmodel")
                old = seen[layer.name]
                seen[layer.name] = (lo, hi) if old is None else (min(old[0], lo), max(old[1], hi))
        return seen


def load(directory):
    """Load, verify and return the integer model in ``directory`` (``qmodel.json`` + ``.npz``)."""
    directory = Path(directory)
    return IntegerModel.from_files(directory / JSON_NAME, directory / NPZ_NAME)


def _json_default(value):
    if isinstance(value, np.bool_):
        return bool(value)
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating):
        return float(value)
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"save: meta holds a {type(value).__name__}, which JSON cannot store")


def _atomic_write(path, write):
    """Write ``path`` through a temporary file in its directory, then rename it into place."""
    fd, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as file:
            write(file)
            file.flush()
            os.fsync(file.fileno())
        os.chmod(temp, 0o644)
        os.replace(temp, path)
    except BaseException:
        try:
            os.unlink(temp)
        except FileNotFoundError:
            pass
        raise


def _write_npz(file, arrays):
    # Like np.savez, but with fixed member timestamps so equal arrays give equal bytes.
    with zipfile.ZipFile(file, "w", compression=zipfile.ZIP_STORED) as archive:
        for name in sorted(arrays):
            info = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            with archive.open(info, "w", force_zip64=True) as member:
                np.lib.format.write_array(member, arrays[name], allow_pickle=False)


def save(meta, arrays, directory):
    """Verify an integer model and write it to ``directory`` as ``qmodel.json`` + ``qmodel.npz``.

    ``meta`` is the ``qmodel.json`` content; its ``arrays`` table is (re)computed from
    ``arrays`` (shape and SHA-256 of each), so it may be left out. NumPy scalars and arrays in
    ``meta`` are stored as JSON numbers and lists. The model is checked as :class:`IntegerModel`
    would before anything is written; the directory is created if needed and each file is
    replaced atomically (the ``.npz`` first, so a crash leaves a pair that fails to load, never
    a wrong model). The JSON has sorted keys and an indent of 1.

    Return ``(json_path, npz_path)``.
    """
    if not isinstance(meta, dict):
        raise TypeError(f"save: meta must be a dict (the qmodel.json content), not "
                        f"{type(meta).__name__}")
    if not isinstance(arrays, dict):
        raise TypeError(f"save: arrays must be a dict of name to integer array, not "
                        f"{type(arrays).__name__}")
    clean = {}
    for name, value in arrays.items():
        if not isinstance(name, str) or not name:
            raise TypeError(f"save: array names must be non-empty strings, not {name!r}")
        array = np.asarray(value)
        if array.dtype == np.bool_ or not np.issubdtype(array.dtype, np.integer):
            raise TypeError(f"save: array {name!r} must hold integer codes, not {array.dtype}; "
                            f"quantize it before export")
        if array.dtype == np.uint64 and array.size and int(array.max()) >= 2 ** 63:
            raise OverflowError(f"save: array {name!r} holds codes of 2^63 or more")
        clean[name] = np.ascontiguousarray(array, dtype=np.int64)
    text = json.dumps(meta, default=_json_default)
    meta = json.loads(text)
    meta["arrays"] = {name: {"shape": list(array.shape), "sha256": array_sha256(array)}
                      for name, array in sorted(clean.items())}
    IntegerModel(meta, clean)
    text = json.dumps(meta, sort_keys=True, indent=1) + "\n"
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    json_path, npz_path = directory / JSON_NAME, directory / NPZ_NAME
    _atomic_write(npz_path, lambda file: _write_npz(file, clean))
    _atomic_write(json_path, lambda file: file.write(text.encode("utf-8")))
    return json_path, npz_path

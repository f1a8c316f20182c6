"""The provenance records of the checkpoint and of the integer model, without torch.

quant/ writes these records; sim/ and the Makefile steps check them (sim may not import quant,
which imports torch). A record maps each input's name to its SHA-256 (see
:mod:`core.provenance`):

- checkpoint ``model.pt`` (payload key ``"provenance"``, copied into ``reports/train.json``):
  ``config`` = ``Config.weights_sha256`` (the ``[model]``, ``[[layers]]`` and ``[train]``
  sections), ``data`` = the training data's identity (:attr:`core.data.Dataset.sha256`),
  ``options`` = SHA-256 of the training overrides (``epochs``, ``limit``; ``{}`` when none). No
  code digest: editing the code does not retrain. The payload's ``weights_sha256`` stays (equal
  to ``config``), so a checkpoint without a record (the shipped one) reads as trained on its
  config's data set with no overrides (:func:`checkpoint_recorded`).
- imported checkpoint ``model.pt`` (``python -m importers``, ``make import MODEL=<file>``):
  ``config`` = ``Config.weights_sha256`` of the config the import wrote, ``import`` = SHA-256 of
  the source file's SHA-256, its format and the import arguments (:func:`import_record`). It is
  current for its config whatever the data set and training overrides
  (:func:`checkpoint_expected`): the import step compares its source file, never training.
- integer model ``qmodel.json`` (key ``"provenance"``): ``config`` = the ``[model]``,
  ``[[layers]]`` and ``[quant]`` sections, ``options`` = SHA-256 of the quantize overrides
  (``wbits``, ``abits``, ``qat``, ``per_channel``; ``{}`` when none), ``checkpoint`` = SHA-256 of
  the ``model.pt`` bytes, ``data`` = the calibration data's identity, ``generator`` = the
  sources of ``quant/``, ``golden/`` and ``core/``.
"""

import collections
import pickle
import shlex
import zipfile
from pathlib import Path

from .errors import UserError
from .paths import CONFIG_DIR, ROOT, build_dir
from .provenance import (
    changed,
    describe_changes,
    read_json,
    sha256_file,
    sha256_json,
    source_digest,
)

__all__ = ["KNOWN_DATA", "make_command", "train_options", "checkpoint_record",
           "checkpoint_recorded", "read_checkpoint_payload", "checkpoint_changes",
           "quantize_options", "qmodel_record", "qmodel_recorded", "qmodel_changes",
           "require_current_qmodel", "generator_digest", "import_record", "is_imported",
           "checkpoint_expected", "import_command"]

#: The identity of the data set a checkpoint without a record was trained on, by the config's
#: ``model.dataset`` (the shipped checkpoints predate records and were trained on MNIST).
KNOWN_DATA = {"mnist": "bf7d3d307f98c590de2eb3afe142ae45e8418c37e31c7b00b8f6bab671deb453"}


#: The ``make`` variables of the quantize options (:func:`quantize_options`).
_OPTION_VARIABLES = {"wbits": "WBITS", "abits": "ABITS", "qat": "QAT"}


def _for_make(path):
    """Return ``path`` as ``make`` in the checkout reads it: as given when the current folder
    is the checkout, else absolute."""
    path = Path(path)
    return path if path.is_absolute() or Path.cwd().resolve() == ROOT else path.resolve()


def make_command(target, config, *, out=None, options=None, dataset=None, data_dir=None):
    """Return the ``make`` command that runs ``target`` for ``config`` in the checkout, for the
    same inputs: ``PRESET=<name>`` for a file of configs/, else ``CONFIG=<path>``; ``OUT=<out>``
    when ``out`` is not the config's default folder; ``WBITS=``, ``ABITS=``, ``QAT=1`` for the
    quantize ``options`` (:func:`quantize_options`); ``DATASET=`` for a ``dataset`` other than
    the config's and ``DATA_DIR=`` for a ``data_dir``. Values are quoted for the shell."""
    path = Path(config.path)
    if path.parent.resolve() == CONFIG_DIR.resolve() and path.suffix == ".toml":
        words = [f"PRESET={path.stem}"]
    else:
        words = [f"CONFIG={_for_make(path)}"]
    if out is not None and Path(out).resolve() != build_dir(config).resolve():
        words.append(f"OUT={_for_make(out)}")
    for key, value in (options or {}).items():
        if key in _OPTION_VARIABLES:
            words.append(f"{_OPTION_VARIABLES[key]}={1 if value is True else value}")
    if dataset is not None and dataset != config.dataset:
        words.append(f"DATASET={dataset}")
    if data_dir is not None:
        words.append(f"DATA_DIR={_for_make(data_dir)}")
    return " ".join(["make", target, *map(shlex.quote, words)])


def train_options(epochs=None, limit=None):
    """Return the training overrides that were given (``None`` means not given)."""
    return {k: v for k, v in (("epochs", epochs), ("limit", limit)) if v is not None}


def checkpoint_record(config, data_sha256, options=None):
    """Return the record of a checkpoint trained from ``config`` on the data ``data_sha256``
    with the overrides ``options`` (:func:`train_options`)."""
    return {"config": config.weights_sha256, "data": data_sha256,
            "options": sha256_json(options or {})}


def import_record(config, source_sha256, source_format, arguments):
    """Return the record of a checkpoint imported into ``config`` from a source file whose
    SHA-256 is ``source_sha256``, read as ``source_format`` with the import ``arguments`` (a
    JSON-able dict)."""
    return {"config": config.weights_sha256,
            "import": sha256_json({"source": source_sha256, "format": source_format,
                                   "arguments": arguments})}


def is_imported(record):
    """Return whether a checkpoint record is an import's (:func:`import_record`)."""
    return isinstance(record, dict) and "import" in record


def checkpoint_expected(config, recorded, trained):
    """Return the record a checkpoint recording ``recorded`` must carry to be current for
    ``config``: an imported one's own import with ``config``'s network (the import step, not
    training, checks its source), else ``trained`` (:func:`checkpoint_record` of the data and
    overrides asked for)."""
    if is_imported(recorded):
        return {"config": config.weights_sha256, "import": recorded["import"]}
    return trained


def import_command(source, out=None):
    """Return the ``make`` command that imports the model file ``source`` (into ``out`` when it
    is not ``build/<file stem>``)."""
    words = [f"MODEL={_for_make(source)}"]
    try:
        default = build_dir(Path(source).stem)
    except ValueError:
        default = None
    if out is not None and (default is None or Path(out).resolve() != default.resolve()):
        words.append(f"OUT={_for_make(out)}")
    return " ".join(["make", "import", *map(shlex.quote, words)])


def checkpoint_recorded(config, payload):
    """Return the record stored in a checkpoint payload (a dict); a payload without one (the
    shipped checkpoint) reads as trained from its ``weights_sha256`` on ``config``'s data set
    with no overrides."""
    record = payload.get("provenance")
    if isinstance(record, dict):
        return record
    return {"config": payload.get("weights_sha256"), "data": KNOWN_DATA.get(config.dataset),
            "options": sha256_json({})}


def _opaque(*args):
    return None


class _PayloadUnpickler(pickle.Unpickler):
    """Read a checkpoint's pickled payload without torch: tensors read as ``None``; nothing but
    dicts, lists, numbers and strings is built."""

    def find_class(self, module, name):
        if (module, name) == ("collections", "OrderedDict"):
            return collections.OrderedDict
        if module == "torch" or module.startswith("torch."):
            return _opaque
        raise pickle.UnpicklingError(f"{module}.{name} is not part of a checkpoint")

    def persistent_load(self, pid):
        return None


def read_checkpoint_payload(path):
    """Return the payload of a ``torch.save`` checkpoint read without torch (its tensors as
    ``None``), or ``None`` when it cannot be read so (missing, not a zip archive, a member whose
    bytes do not match their CRC, an unexpected object): ``quant.train`` then reads it with torch
    and says what is wrong."""
    try:
        with zipfile.ZipFile(path) as archive:
            names = [n for n in archive.namelist() if n.endswith("/data.pkl")]
            if len(names) != 1 or archive.testzip() is not None:
                return None
            with archive.open(names[0]) as handle:
                payload = _PayloadUnpickler(handle).load()
    except (OSError, zipfile.BadZipFile, pickle.UnpicklingError, EOFError, ValueError,
            TypeError, AttributeError, KeyError, IndexError):
        return None
    return payload if isinstance(payload, dict) else None


def checkpoint_changes(config, out, data_sha256, options=None):
    """Return the names of the inputs of ``out/model.pt`` that differ from the record
    :func:`checkpoint_record` gives now (``[]``: current), read without torch; ``None`` when
    that cannot be decided so (no readable checkpoint, or one of another preset): ask
    ``quant.train --ensure``."""
    payload = read_checkpoint_payload(Path(out) / "model.pt")
    if payload is None or payload.get("preset") != config.name:
        return None
    recorded = checkpoint_recorded(config, payload)
    return changed(recorded, checkpoint_expected(
        config, recorded, checkpoint_record(config, data_sha256, options)))


def quantize_options(wbits=None, abits=None, qat=False, per_channel=None):
    """Return the quantize overrides that were given (``qat`` only when true)."""
    given = {"wbits": wbits, "abits": abits, "qat": True if qat else None,
             "per_channel": per_channel}
    return {k: v for k, v in given.items() if v is not None}


def generator_digest():
    """Return the version of the integer-model generator: the sources of quant/, golden/ and
    core/."""
    return source_digest(ROOT / "quant", ROOT / "golden", ROOT / "core")


def qmodel_record(config, checkpoint, data_sha256, options=None):
    """Return the record of the integer model quantized from ``config``, the checkpoint file
    ``checkpoint``, the data ``data_sha256`` and the overrides ``options``
    (:func:`quantize_options`)."""
    return {"config": config.sections_sha256("model", "layers", "quant"),
            "options": sha256_json(options or {}), "checkpoint": sha256_file(checkpoint),
            "data": data_sha256, "generator": generator_digest()}


def qmodel_recorded(out):
    """Return the record stored in ``out/qmodel.json``, or ``None`` when there is none."""
    meta = read_json(Path(out) / "qmodel.json")
    record = meta.get("provenance") if meta else None
    return record if isinstance(record, dict) else None


def qmodel_changes(config, out, data_sha256, options=None, checkpoint=None):
    """Return the names of the inputs of ``out/qmodel.json`` that differ from the record it
    would be made from now (``[]``: current; every name when there is no readable record or no
    ``qmodel.npz``). ``checkpoint`` defaults to ``out/model.pt``; a missing checkpoint counts as
    changed."""
    out = Path(out)
    checkpoint = Path(checkpoint) if checkpoint else out / "model.pt"
    expected = {"config": config.sections_sha256("model", "layers", "quant"),
                "options": sha256_json(options or {}),
                "checkpoint": sha256_file(checkpoint) if checkpoint.is_file() else None,
                "data": data_sha256, "generator": generator_digest()}
    recorded = qmodel_recorded(out)
    if recorded is None or not (out / "qmodel.npz").is_file():
        return list(expected)
    return changed(recorded, expected)


def require_current_qmodel(config, out, data_sha256, options=None, checkpoint=None, *,
                           dataset=None, data_dir=None):
    """Raise :class:`UserError` unless ``out/qmodel.json`` was made from exactly these inputs;
    the message names the changed inputs and the command that rebuilds it (for the data set
    ``dataset`` read from ``data_dir``, when given)."""
    names = qmodel_changes(config, out, data_sha256, options, checkpoint)
    if names:
        command = make_command("quantize", config, out=out, options=options, dataset=dataset,
                               data_dir=data_dir)
        raise UserError(f"{Path(out) / 'qmodel.json'} was not made from these inputs "
                        f"({describe_changes(names)}); rebuild it with `{command}`")

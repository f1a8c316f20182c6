"""Import a trained model: write the config and float checkpoint the flow already uses.

    python -m importers MODEL [--out build/<stem>] [--scale 255] [--mean 0] [--std 1] [--ensure]

``MODEL`` is a ``torch.export`` program (``.pt2``), an ONNX model (``.onnx``) or a Keras model
(``.keras``, legacy ``.h5``). Writes ``<out>/config.toml`` (the network as ``[[layers]]`` tables
of :mod:`core.kinds`, default ``[train]``, W8A8 ``[quant]``, a cycle-target ``[hardware]``),
``<out>/model.pt`` (:func:`quant.model.save_checkpoint`, the import's record
:func:`core.records.import_record`: the source's SHA-256, format and these arguments) and
``<out>/reports/import.json`` (source, SHA-256, format, arguments, the layers found and what each
became, the float model's test accuracy). The config is named after the folder (``<stem>``), which
may not be a preset's. ``--ensure`` keeps an import whose record matches the file and arguments.

Everything is read, converted, checked (the config parses, the weights load into
:class:`quant.model.LeNet`) and measured before anything is written; the files are written under
the folder's lock, each atomically. :func:`from_module` does the same from an ``nn.Module`` in
Python.
"""

import hashlib
import io
import os
import sys
from pathlib import Path

import torch

from core.config import parse_config
from core.data import check_fits, load_dataset
from core.errors import UserError, cli
from core.paths import CONFIG_DIR, build_dir
from core.provenance import BuildLock, sha256_file, write_bytes, write_json
from core.records import import_command, import_record, read_checkpoint_payload
from quant.model import LeNet, save_checkpoint
from quant.train import ArgumentParser, evaluate

from .keras_source import read_keras
from .network import ModelImportError, Normalization
from .onnx_source import read_onnx
from .torch_source import read_module, read_pt2

__all__ = ["FORMATS", "import_file", "from_module", "config_text", "float_model", "main"]

#: File suffix → (format name, reader).
FORMATS = {
    ".pt2": ("torch.export", read_pt2),
    ".onnx": ("onnx", read_onnx),
    ".keras": ("keras", read_keras),
    ".h5": ("keras-h5", read_keras),
    ".hdf5": ("keras-h5", read_keras),
}

#: The default normalization: the model was trained on pixel/255.
PIXELS_255 = Normalization()

#: The cycle target of an imported config's ``[hardware]`` (the presets' own).
TARGET_CYCLES = 4800


def _value(value):
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return str(value)


def config_text(imported, name, header=()):
    """Return the TOML text of the config of an :class:`importers.network.Imported` network
    called ``name``; ``header`` lines become comments at the top."""
    lines = [f"# {line}" for line in header]
    lines += ["", "[model]", f"name = {_value(name)}", 'dataset = "mnist"',
              f"input_size = {imported.input_size}", "input_pad = 0", 'output = "softmax"']
    for table in imported.layers:
        lines += ["", "[[layers]]"] + [f"{k} = {_value(v)}" for k, v in table.items()]
    lines += ["", "[quant]", "wbits = 8", "abits = 8", "", "[hardware]", 'folding = "target"',
              f"target_cycles = {TARGET_CYCLES}", ""]
    return "\n".join(lines)


def float_model(config, imported):
    """Return the :class:`quant.model.LeNet` of ``config`` holding the imported weights."""
    model = LeNet(config)
    with torch.no_grad():
        for module, pair in zip(model.layers, imported.weights, strict=True):
            if pair is None:
                continue
            params = dict(module.named_parameters())
            for suffix, value in zip(("weight", "bias"), pair, strict=True):
                (key,) = [k for k in params if k.endswith(suffix)]
                params[key].copy_(torch.from_numpy(value).to(params[key].dtype))
    return model.eval()


def _folder(out, stem):
    folder = Path(out) if out else build_dir(_name(stem))
    if folder.exists() and not folder.is_dir():
        raise UserError(f"--out {folder} is a file, not a folder; give a folder (it is created "
                        f"if missing)")
    return folder


def _name(stem):
    return "".join(c if c.isalnum() or c in "-_." else "-" for c in stem) or "model"


def _shown(path):
    """Return ``path`` relative to the current folder when it is inside it."""
    try:
        return Path(path).resolve().relative_to(Path.cwd().resolve())
    except ValueError:
        return Path(path)


def _check_name(name, source, folder):
    folder = _shown(folder)
    if (CONFIG_DIR / f"{name}.toml").is_file():
        raise ModelImportError(
            f"{source}: the import would be named {name!r} after its folder {folder}, the "
            f"name of the preset configs/{name}.toml; give another folder: "
            f"`{import_command(source, folder.parent / f'{name}-imported')}`")


def _current(folder, name, digest, fmt, arguments):
    """Return whether ``folder`` holds an import of this source (SHA-256 ``digest``, format
    ``fmt``) with these ``arguments`` whose config still has the imported network."""
    payload = read_checkpoint_payload(folder / "model.pt")
    if payload is None or payload.get("preset") != name:
        return False
    try:
        config = parse_config((folder / "config.toml").read_bytes(), folder / "config.toml")
    except (OSError, UserError):
        return False
    return config.name == name and \
        payload.get("provenance") == import_record(config, digest, fmt, arguments)


def _convert(net, norm, name, folder, header):
    imported = net.finish(norm)
    path = folder / "config.toml"
    text = config_text(imported, name, header)
    try:
        config = parse_config(text, path)
    except UserError as exc:
        raise ModelImportError(f"{header[0]}: the imported network is not one the flow builds "
                               f"({exc})") from None
    return text, config, imported, float_model(config, imported)


def _write(folder, text, config, model, record, report, data):
    report["float_test_accuracy"] = evaluate(model, data.test)
    report["test_images"] = len(data.test)
    report["dataset"] = data.name
    with BuildLock(folder, "import"):
        write_bytes(folder / "config.toml", text.encode("utf-8"))
        save_checkpoint(model, config, folder / "model.pt", record)
        report["checkpoint_sha256"] = sha256_file(folder / "model.pt")
        write_json(folder / "reports" / "import.json", report)
    return report


def import_file(path, *, out=None, norm=PIXELS_255, ensure=False, dataset="mnist",
                data_dir=None, log=print):
    """Import the model file ``path`` into ``out`` (default ``build/<stem>``); return the
    folder. See the module docstring."""
    path = Path(path)
    source = path.name
    if path.suffix.lower() in (".pt", ".pth"):
        raise ModelImportError(f"{source}: a .pt/.pth file holds weights without the network; "
                               f"save the module with torch.export.save(torch.export.export("
                               f"model, (torch.zeros(1, 1, 28, 28),)), 'model.pt2') and import "
                               f"that")
    if path.suffix.lower() not in FORMATS:
        raise ModelImportError(f"{source}: unknown model format {path.suffix!r}; give a "
                               f"{', '.join(FORMATS)} file")
    if not path.is_file():
        raise ModelImportError(f"{path}: no such file; give the path of a trained model")
    fmt, reader = FORMATS[path.suffix.lower()]
    folder = _folder(out, path.stem)
    name = _name(folder.name)
    _check_name(name, path, folder)
    digest = sha256_file(path)
    if ensure and _current(folder, name, digest, fmt, norm.as_dict()):
        log(f"{name}: {folder / 'model.pt'} is current (imported from {source})")
        return folder
    header = (f"{source}: imported ({fmt}) by python -m importers",
              f"source SHA-256 {digest}", f"normalization {norm.as_dict()}",
              f"regenerate with: {import_command(path, folder)}")
    data = load_dataset(dataset, data_dir)
    text, config, imported, model = _convert(reader(path, source), norm, name, folder, header)
    check_fits(config, data)
    record = import_record(config, digest, fmt, norm.as_dict())
    report = {"source": str(path), "sha256": digest, "format": fmt,
              "arguments": norm.as_dict(), "layers": list(imported.found),
              "config": str(folder / "config.toml")}
    _write(folder, text, config, model, record, report, data)
    log(f"{name}: imported {source} ({fmt}, {len(imported.found)} source layers -> "
        f"{len(imported.layers)} config layers) -> {folder}/config.toml, model.pt; float test "
        f"accuracy {100 * report['float_test_accuracy']:.2f}%")
    return folder


def from_module(module, out, *, input_size=28, norm=PIXELS_255, dataset="mnist",
                data_dir=None, log=print):
    """Import an ``nn.Module`` taking ``(N, 1, input_size, input_size)`` images into ``out``
    (the config is named after the folder); return ``(config, model)``: the
    :class:`core.config.Config` and the float :class:`quant.model.LeNet` written there. The
    record's source SHA-256 is that of the module's state dict as ``torch.save`` writes it."""
    folder = _folder(out, "model")
    name = _name(folder.name)
    source = f"{type(module).__name__} module"
    _check_name(name, source, folder)
    buffer = io.BytesIO()
    torch.save(module.state_dict(), buffer)
    digest = hashlib.sha256(buffer.getvalue()).hexdigest()
    header = (source, f"state dict SHA-256 {digest}", f"normalization {norm.as_dict()}")
    data = load_dataset(dataset, data_dir)
    text, config, imported, model = _convert(read_module(module, input_size, source), norm,
                                             name, folder, header)
    check_fits(config, data)
    arguments = {**norm.as_dict(), "input_size": input_size}
    record = import_record(config, digest, "torch.nn.Module", arguments)
    report = {"source": source, "sha256": digest, "format": "torch.nn.Module",
              "arguments": arguments, "layers": list(imported.found),
              "config": str(folder / "config.toml")}
    _write(folder, text, config, model, record, report, data)
    log(f"{name}: imported the {source} -> {folder}/config.toml, model.pt")
    return config, model


@cli
def main(argv=None):
    parser = ArgumentParser(prog="python -m importers", description=__doc__.split("\n")[0])
    parser.add_argument("model", help="a .pt2, .onnx, .keras or .h5 file")
    parser.add_argument("--out", default=os.environ.get("OUT") or None,
                        help="output folder (default build/<file stem>)")
    parser.add_argument("--scale", type=float, default=255.0,
                        help="the model was trained on pixel/scale (default 255)")
    parser.add_argument("--mean", type=float, default=0.0, help="... minus mean (default 0)")
    parser.add_argument("--std", type=float, default=1.0, help="... divided by std (default 1)")
    parser.add_argument("--dataset", default=os.environ.get("DATASET") or "mnist",
                        help="the data set of the accuracy in import.json (default mnist)")
    parser.add_argument("--data-dir", default=os.environ.get("DATA_DIR") or None)
    parser.add_argument("--ensure", action="store_true",
                        help="keep an import whose record matches the file and arguments")
    args = parser.parse_args(argv)
    norm = Normalization(scale=args.scale, mean=args.mean, std=args.std)
    import_file(args.model, out=args.out, norm=norm, ensure=args.ensure, dataset=args.dataset,
                data_dir=args.data_dir)
    return 0


if __name__ == "__main__":
    sys.exit(main())

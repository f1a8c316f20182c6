"""Train and evaluate the float model of a config.

    python -m quant.train --config configs/lenet5.toml [--out build/lenet5] [--epochs N]
    python -m quant.train --config configs/lenet5.toml --eval-only

Writes ``<out>/model.pt``, ``<out>/reports/train.json`` and ``<out>/reports/train_curves.png``.
Training is seeded and single-process: the same config gives the same weights on one machine.

The checkpoint records what it was trained from (:mod:`core.records`: the config's ``[model]``,
``[[layers]]`` and ``[train]`` sections, the data set's identity and the ``--epochs``/``--limit``
overrides), in its payload and in ``train.json``. There is deliberately no code digest: editing
the code does not retrain. ``--ensure`` keeps a checkpoint whose record matches and whose weights
fit the configured network, else copies the shipped one when its record matches, else trains;
replacing a checkpoint (or passing over the shipped one) prints one line saying what changed
(``retraining build/x/model.pt: f5: out_features 120 → 100``: ``train.json`` keeps what each
checkpoint was trained from, :attr:`core.config.Config.weights_description`). Every value is
checked before anything is written; the folder's :class:`core.provenance.BuildLock` is held
while writing, and every file is replaced atomically.
"""

import argparse
import io
import os
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from core.config import describe_network_changes, load_config
from core.data import check_fits, load_dataset
from core.errors import UserError, cli
from core.paths import CONFIG_DIR, ROOT, SHIPPED_DIR, build_dir
from core.provenance import (
    BuildLock,
    changed,
    describe_changes,
    read_json,
    sha256_file,
    sha256_json,
    write_bytes,
    write_json,
)
from core.records import (
    checkpoint_expected,
    checkpoint_record,
    checkpoint_recorded,
    import_command,
    is_imported,
    make_command,
    train_options,
)

from .model import (
    CheckpointError,
    build_model,
    load_checkpoint,
    model_from_payload,
    read_checkpoint,
    save_checkpoint,
)

__all__ = ["train", "evaluate", "predict", "main", "ensure_checkpoint", "what_changed",
           "check_checkpoint", "output_folder", "ArgumentParser"]



def predict(model, images, batch_size=1000):
    """Return the scores of uint8 images [N, H, W] as a float tensor."""
    model.eval()
    out = []
    with torch.no_grad():
        for i in range(0, len(images), batch_size):
            out.append(model(torch.from_numpy(images[i:i + batch_size])))
    return torch.cat(out)


def evaluate(model, split, batch_size=1000):
    """Return the accuracy (fraction) of ``model`` on a :class:`core.data.Split`."""
    scores = predict(model, split.images, batch_size)
    return float((scores.argmax(1).numpy() == split.labels).mean())


def _progress(iterable, total, desc):
    try:
        from tqdm import tqdm
        return tqdm(iterable, total=total, desc=desc, leave=False, file=sys.stderr,
                    mininterval=1.0, disable=None if sys.stderr.isatty() else True)
    except ImportError:
        return iterable


def train(config, data, epochs=None, log=print, limit=None):
    """Train a fresh model of ``config``; return (model, history)."""
    hp = config.train
    torch.set_num_threads(hp["threads"])
    torch.use_deterministic_algorithms(True)
    model = build_model(config)
    epochs = hp["epochs"] if epochs is None else epochs
    if epochs < 1 or (limit is not None and limit < 1):
        raise UserError(f"train: epochs={epochs} and limit={limit} must be positive")
    images = torch.from_numpy(data.train.images[:limit])
    labels = torch.from_numpy(data.train.labels[:limit])
    n, bs = len(labels), hp["batch_size"]
    steps = (n + bs - 1) // bs
    if hp["optimizer"] == "adam":
        opt = torch.optim.Adam(model.parameters(), lr=hp["lr"], weight_decay=hp["weight_decay"])
    else:
        opt = torch.optim.SGD(model.parameters(), lr=hp["lr"], momentum=0.9,
                              weight_decay=hp["weight_decay"])
    sched = None
    if hp["schedule"] == "onecycle":
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=hp["lr"], epochs=epochs,
                                                    steps_per_epoch=steps)
    gen = torch.Generator().manual_seed(hp["seed"])
    history = {"epoch": [], "train_loss": [], "val_accuracy": []}
    for epoch in range(1, epochs + 1):
        model.train()
        order = torch.randperm(n, generator=gen)
        total = 0.0
        bar = _progress(range(steps), steps, f"epoch {epoch}/{epochs}")
        for step in bar:
            idx = order[step * bs:(step + 1) * bs]
            loss = F.cross_entropy(model(images[idx]) * hp["logit_scale"], labels[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if sched:
                sched.step()
            total += float(loss.detach()) * len(idx)
            if hasattr(bar, "set_postfix") and step % 20 == 0:
                bar.set_postfix(loss=f"{float(loss.detach()):.4f}")
        val = evaluate(model, data.val)
        history["epoch"].append(epoch)
        history["train_loss"].append(total / n)
        history["val_accuracy"].append(val)
        log(f"epoch {epoch}/{epochs}  loss {total / n:.4f}  val accuracy {100 * val:.2f}%")
    return model, history


def plot_curves(history, path, title):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(9, 3.5))
    ax1.plot(history["epoch"], history["train_loss"], marker="o")
    ax1.set_xlabel("epoch")
    ax1.set_ylabel("training loss")
    ax1.set_yscale("log")
    ax2.plot(history["epoch"], [100 * v for v in history["val_accuracy"]], marker="o",
             color="tab:green")
    ax2.set_xlabel("epoch")
    ax2.set_ylabel("validation accuracy (%)")
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


class ArgumentParser(argparse.ArgumentParser):
    """An argument parser whose errors are one ``error:`` line (a :class:`UserError`)."""

    def error(self, message):
        raise UserError(f"{self.prog}: {message}; see --help")


def output_folder(out, config):
    """Return the output folder (``out`` or ``build/<preset>``), refusing a path that exists
    and is not a folder."""
    folder = Path(out) if out else build_dir(config)
    if folder.exists() and not folder.is_dir():
        raise UserError(f"--out {folder} is a file, not a folder; give a folder (it is created "
                        f"if missing)")
    return folder


def check_checkpoint(config, model, data, path, data_dir=None):
    """Refuse a checkpoint trained from another config or other data than ``data`` (read from
    ``data_dir`` when given), for a command that only reads it: quantize, report,
    --eval-only."""
    recorded = model.checkpoint_provenance
    expected = checkpoint_expected(config, recorded, checkpoint_record(config, data.sha256))
    names = [n for n in changed(recorded, expected) if n != "options"]
    if names and is_imported(recorded):
        raise _imported_elsewhere(config, Path(path), names)
    if names:
        command = make_command("checkpoint", config, out=Path(path).parent, dataset=data.name,
                               data_dir=data_dir)
        raise UserError(f"{path} was trained from other inputs ({describe_changes(names)}); "
                        f"rebuild it with `{command}`")


def _positive(value, what, fix):
    if value is not None and value < 1:
        raise UserError(f"{what}={value} must be a positive integer; {fix}")


def _png(history, title):
    buffer = io.BytesIO()
    plot_curves(history, buffer, title)
    return buffer.getvalue()


@cli
def main(argv=None):
    parser = ArgumentParser(prog="python -m quant.train", description=__doc__.split("\n")[0])
    parser.add_argument("--config", required=True, help="config path or preset name")
    parser.add_argument("--out", help="output folder (default build/<preset>)")
    parser.add_argument("--epochs", type=int, help="override train.epochs")
    parser.add_argument("--limit", type=int, help="train on the first N images (smoke runs)")
    parser.add_argument("--data-dir", default=os.environ.get("DATA_DIR") or None)
    parser.add_argument("--dataset", default=os.environ.get("DATASET") or None)
    parser.add_argument("--ensure", action="store_true",
                        help="only make <out>/model.pt current: keep it if its recorded inputs "
                             "match, else copy the shipped checkpoints/<preset>.pt if its do, "
                             "else train")
    parser.add_argument("--eval-only", action="store_true",
                        help="evaluate <out>/model.pt and rewrite train.json's accuracies")
    args = parser.parse_args(argv)
    if args.ensure and args.eval_only:
        raise UserError("--ensure and --eval-only do not go together; give one")
    config = load_config(args.config)
    _positive(args.epochs, "--epochs", f"leave it out for train.epochs={config.train['epochs']}")
    _positive(args.limit, "--limit", "leave it out to train on the whole training split")
    out = output_folder(args.out, config)
    data = load_dataset(args.dataset or config.dataset, args.data_dir)
    check_fits(config, data)
    target = out / "model.pt"
    if target.is_dir():
        raise CheckpointError(f"checkpoint {target} is a folder, not a file; remove it or give "
                              f"another --out")
    options = train_options(args.epochs, args.limit)
    expected = checkpoint_record(config, data.sha256, options)
    inputs = {"config": config.weights_description, "dataset": data.name, "options": options}
    if args.ensure and ensure_checkpoint(config, out, expected, inputs):
        return 0
    report = out / "reports" / "train.json"
    if args.eval_only:
        model = load_checkpoint(config, target)
        check_checkpoint(config, model, data, target, args.data_dir)
        record = read_json(report) or {"preset": config.name, "epochs": None, "seconds": None}
        record["provenance"] = model.checkpoint_provenance
        with BuildLock(out, "train --eval-only"):
            _finish(config, model, data, record, out)
        return 0
    with BuildLock(out, "train"):
        if target.exists() and not args.ensure:
            print(f"retraining as asked: replacing {target}", file=sys.stderr)
        start = time.time()
        model, history = train(config, data, epochs=args.epochs, limit=args.limit)
        seconds = time.time() - start
        save_checkpoint(model, config, target, expected)
        write_bytes(out / "reports" / "train_curves.png",
                    _png(history, f"{config.name} on {data.name}"))
        record = {"preset": config.name, "epochs": len(history["epoch"]),
                  "seconds": round(seconds, 1), "history": history,
                  "weights_sha256": config.weights_sha256,
                  "train_images": len(data.train.images[:args.limit]), "provenance": expected,
                  "inputs": inputs}
        _finish(config, model, data, record, out)
    return 0


def _finish(config, model, data, record, out):
    record["dataset"] = data.name
    record["val_accuracy"] = evaluate(model, data.val)
    record["test_accuracy"] = evaluate(model, data.test)
    record["test_images"] = len(data.test)
    record["checkpoint_sha256"] = sha256_file(out / "model.pt")
    write_json(out / "reports" / "train.json", record)
    print(f"{config.name}: test accuracy {100 * record['test_accuracy']:.2f}% "
          f"(validation {100 * record['val_accuracy']:.2f}%) -> {out / 'model.pt'}")


#: The ``options`` digest of a checkpoint trained without ``--epochs``/``--limit``.
NO_OPTIONS = sha256_json({})


def _known_inputs(path, payload):
    """Return what checkpoint ``path`` (its ``payload``) was trained from, as far as it is known
    (``{"config", "dataset", "options"}``, see :func:`main`): what ``train.json`` beside it
    says when it describes these bytes, else the ``config`` of the preset whose weights hash it
    carries (the shipped checkpoints) and no options when its record says none."""
    report = read_json(path.parent / "reports" / "train.json") or {}
    if report.get("checkpoint_sha256") == sha256_file(path) and \
            isinstance(report.get("inputs"), dict):
        return report["inputs"]
    known = {}
    if (payload.get("provenance") or {}).get("options", NO_OPTIONS) == NO_OPTIONS:
        known["options"] = {}
    for preset in sorted(CONFIG_DIR.glob("*.toml")):
        try:
            config = load_config(preset)
        except UserError:
            continue
        if config.weights_sha256 == payload.get("weights_sha256"):
            known["config"] = config.weights_description
            break
    return known


def _options_text(options):
    return " ".join(f"--{key} {value}" for key, value in sorted(options.items())) or "none"


def what_changed(names, old, new):
    """Return what differs between the inputs ``old`` a checkpoint was trained from (as far as
    known, see :func:`_known_inputs`) and those asked for now (``new``), given the names of the
    record's inputs that differ: ``"f5: out_features 120 → 100"``, ``"data set mnist →
    fashion-mnist"``, ``"options none → --epochs 1"``, else ``"inputs changed: ..."``."""
    phrases, unknown = [], []
    for name in names:
        if name == "config" and "config" in old:
            found = describe_network_changes(old["config"], new["config"])
            phrases += found
            unknown += [] if found else [name]
        elif name == "data" and old.get("dataset") not in (None, new["dataset"]):
            phrases.append(f"data set {old['dataset']} → {new['dataset']}")
        elif name == "options" and isinstance(old.get("options"), dict):
            phrases.append(f"options {_options_text(old['options'])} → "
                           f"{_options_text(new['options'])}")
        else:
            unknown.append(name)
    return ", ".join(phrases + ([describe_changes(unknown)] if unknown else []))


def _fits(config, payload, path):
    try:
        model_from_payload(config, payload, path)
    except CheckpointError:
        return False
    return True


def _imported_elsewhere(config, path, names):
    """Return the error for an imported checkpoint ``path`` whose record does not match
    ``config`` (never retrained: it came from a model file)."""
    source = (read_json(path.parent / "reports" / "import.json") or {}).get("source")
    fix = f"re-import it with `{import_command(source, path.parent)}`" if source else \
        "import the model again with `make import MODEL=<file>`"
    return CheckpointError(f"{path} was imported for another network than "
                           f"{config.path.name}'s ({describe_changes(names)}); {fix}")


def ensure_checkpoint(config, out, expected, inputs):
    """Make ``out/model.pt`` current without training if possible; return whether it is.

    Current means its record (:mod:`core.records`) equals ``expected`` (an imported checkpoint:
    its own import, :func:`core.records.checkpoint_expected`) and its weights fit the configured
    network; an imported checkpoint that is not current is refused (its fix is a new import,
    not training); otherwise the shipped checkpoint is copied when its record does, else
    the caller trains. Replacing an existing ``model.pt``, or training instead of using the
    shipped one, prints one line saying what changed (:func:`what_changed`; ``inputs`` is what
    training now would record in ``train.json``). A ``model.pt`` that is not a readable
    checkpoint is refused (:class:`CheckpointError`), never replaced silently.
    """
    target = out / "model.pt"
    why = None
    if target.exists():
        payload = read_checkpoint(config, target)
        recorded = checkpoint_recorded(config, payload)
        names = changed(recorded, checkpoint_expected(config, recorded, expected))
        if not names and _fits(config, payload, target):
            return True
        if is_imported(recorded):
            raise _imported_elsewhere(config, target, names or ["weights"])
        why = what_changed(names, _known_inputs(target, payload), inputs) if names else \
            f"its weights do not fit the network of {config.path.name}"
    shipped = SHIPPED_DIR / f"{config.name}.pt"
    if shipped.is_file():
        payload = read_checkpoint(config, shipped)
        names = changed(checkpoint_recorded(config, payload), expected)
        name = shipped.relative_to(ROOT)
        if not names:
            if why:
                print(f"replacing {target} with the shipped {name}: {why}", file=sys.stderr)
            with BuildLock(out, "train --ensure"):
                write_bytes(target, shipped.read_bytes())
            print(f"{config.name}: using the shipped checkpoint {name}")
            return True
        if why is None:
            print(f"training {target}: not the shipped {name}, which was trained from other "
                  f"inputs ({what_changed(names, _known_inputs(shipped, payload), inputs)})",
                  file=sys.stderr)
    if why:
        print(f"retraining {target}: {why}", file=sys.stderr)
    return False


if __name__ == "__main__":
    sys.exit(main())

"""Train and evaluate the float model of a config.

    python -m quant.train --config configs/lenet5.toml [--out build/lenet5] [--epochs N]
    python -m quant.train --config configs/lenet5.toml --eval-only

Writes ``<out>/model.pt``, ``<out>/reports/train.json`` and ``<out>/reports/train_curves.png``.
Training is seeded and single-process: the same config gives the same weights on one machine.

The checkpoint records what it was trained from (:mod:`core.records`: the config's ``[model]``,
``[[layers]]`` and ``[train]`` sections, the data set's identity and the ``--epochs``/``--limit``
overrides), in its payload and in ``train.json``. There is deliberately no code digest: editing
the code does not retrain. ``--ensure`` keeps a checkpoint whose record matches, else copies the
shipped one when its record matches, else trains, printing which input changed. Every value is
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

from core.config import load_config
from core.data import check_fits, load_dataset
from core.errors import UserError, cli
from core.paths import ROOT, SHIPPED_DIR, build_dir
from core.provenance import (
    BuildLock,
    changed,
    describe_changes,
    read_json,
    sha256_file,
    write_bytes,
    write_json,
)
from core.records import checkpoint_record, checkpoint_recorded, make_command, train_options

from .model import CheckpointError, build_model, load_checkpoint, read_checkpoint, save_checkpoint

__all__ = ["train", "evaluate", "predict", "main", "ensure_checkpoint", "check_checkpoint",
           "output_folder", "ArgumentParser"]



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


def check_checkpoint(config, model, data, path):
    """Refuse a checkpoint trained from another config or other data than ``data`` (a command
    that only reads it: quantize, report, --eval-only)."""
    expected = checkpoint_record(config, data.sha256)
    names = [n for n in changed(model.checkpoint_provenance, expected) if n != "options"]
    if names:
        raise UserError(f"{path} was trained from other inputs ({describe_changes(names)}); "
                        f"rebuild it with `{make_command('checkpoint', config)}`")


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
    if args.ensure and ensure_checkpoint(config, out, expected):
        return 0
    report = out / "reports" / "train.json"
    if args.eval_only:
        model = load_checkpoint(config, target)
        check_checkpoint(config, model, data, target)
        record = read_json(report) or {"preset": config.name, "epochs": None, "seconds": None}
        record["provenance"] = model.checkpoint_provenance
        with BuildLock(out, "train --eval-only"):
            _finish(config, model, data, record, out)
        return 0
    with BuildLock(out, "train"):
        if target.exists():
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
                  "train_images": len(data.train.images[:args.limit]), "provenance": expected}
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


def ensure_checkpoint(config, out, expected):
    """Make ``out/model.pt`` current without training if possible; return whether it is.

    Current means its record (:mod:`core.records`) equals ``expected``; otherwise the shipped
    checkpoint is copied when its record does, else the caller trains. Replacing an existing
    ``model.pt`` prints one line naming the inputs that changed. A ``model.pt`` that is not a
    readable checkpoint is refused (:class:`CheckpointError`), never replaced silently.
    """
    target = out / "model.pt"
    if target.exists():
        names = changed(checkpoint_recorded(config, read_checkpoint(config, target)), expected)
        if not names:
            return True
        print(f"rebuilding {target}: {describe_changes(names)}", file=sys.stderr)
    shipped = SHIPPED_DIR / f"{config.name}.pt"
    if shipped.is_file():
        names = changed(checkpoint_recorded(config, read_checkpoint(config, shipped)), expected)
        if not names:
            with BuildLock(out, "train --ensure"):
                write_bytes(target, shipped.read_bytes())
            print(f"{config.name}: using the shipped checkpoint {shipped.relative_to(ROOT)}")
            return True
        print(f"not using the shipped {shipped.relative_to(ROOT)} ({describe_changes(names)}); "
              f"training", file=sys.stderr)
    return False


if __name__ == "__main__":
    sys.exit(main())

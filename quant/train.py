"""Train and evaluate the float model of a config.

    python -m quant.train --config configs/lenet5.toml [--out build/lenet5] [--epochs N]
    python -m quant.train --config configs/lenet5.toml --eval-only

Writes ``<out>/model.pt``, ``<out>/reports/train.json`` and ``<out>/reports/train_curves.png``.
Training is seeded and single-process: the same config gives the same weights on one machine.
"""

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from core.config import load_config
from core.data import load_dataset
from core.errors import cli
from core.paths import ROOT, SHIPPED_DIR, build_dir

from .model import build_model, load_checkpoint, save_checkpoint

__all__ = ["train", "evaluate", "predict", "main"]



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
    epochs = epochs or hp["epochs"]
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


def write_json(path, obj):
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(obj, indent=1, sort_keys=True) + "\n")
    os.replace(tmp, path)


@cli
def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m quant.train", description=__doc__.split(
        "\n")[0])
    parser.add_argument("--config", required=True, help="config path or preset name")
    parser.add_argument("--out", help="output folder (default build/<preset>)")
    parser.add_argument("--epochs", type=int, help="override train.epochs")
    parser.add_argument("--limit", type=int, help="train on the first N images (smoke runs)")
    parser.add_argument("--data-dir", default=os.environ.get("DATA_DIR") or None)
    parser.add_argument("--dataset", default=os.environ.get("DATASET") or None)
    parser.add_argument("--ensure", action="store_true",
                        help="only make <out>/model.pt exist: keep it, else copy the shipped "
                             "checkpoints/<preset>.pt, else train")
    parser.add_argument("--eval-only", action="store_true",
                        help="evaluate <out>/model.pt and rewrite train.json's accuracies")
    args = parser.parse_args(argv)
    config = load_config(args.config)
    out = Path(args.out) if args.out else build_dir(config)
    data = load_dataset(args.dataset or config.dataset, args.data_dir)
    report = out / "reports" / "train.json"
    if args.ensure and ensure_checkpoint(config, out):
        return 0
    if args.eval_only:
        model = load_checkpoint(config, out / "model.pt")
        record = json.loads(report.read_text()) if report.is_file() else {
            "preset": config.name, "epochs": None, "seconds": None}
    else:
        start = time.time()
        model, history = train(config, data, epochs=args.epochs, limit=args.limit)
        seconds = time.time() - start
        save_checkpoint(model, config, out / "model.pt")
        plot_curves(history, _mkdir(out / "reports") / "train_curves.png",
                    f"{config.name} on {data.name}")
        record = {"preset": config.name, "epochs": len(history["epoch"]),
                  "seconds": round(seconds, 1), "history": history,
                  "weights_sha256": config.weights_sha256,
                  "train_images": len(data.train.images[:args.limit])}
    record["dataset"] = data.name
    record["val_accuracy"] = evaluate(model, data.val)
    record["test_accuracy"] = evaluate(model, data.test)
    record["test_images"] = len(data.test)
    write_json(report, record)
    print(f"{config.name}: test accuracy {100 * record['test_accuracy']:.2f}% "
          f"(validation {100 * record['val_accuracy']:.2f}%) -> {out / 'model.pt'}")
    return 0


def ensure_checkpoint(config, out):
    """Make ``out/model.pt`` current without training if possible; return whether it is."""
    target = out / "model.pt"
    for source in (target, SHIPPED_DIR / f"{config.name}.pt"):
        if not source.is_file():
            continue
        model = load_checkpoint(config, source)
        if model.checkpoint_weights_sha256 != config.weights_sha256:
            print(f"{source} was trained with another [model]/[[layers]]/[train]; retraining",
                  file=sys.stderr)
            continue
        if source != target:
            out.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, target)
            print(f"{config.name}: using the shipped checkpoint {source.relative_to(ROOT)}")
        return True
    return False


def _mkdir(path):
    path.mkdir(parents=True, exist_ok=True)
    return path


if __name__ == "__main__":
    sys.exit(main())

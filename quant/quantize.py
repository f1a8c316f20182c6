"""Quantize a trained model to the integer model (PTQ, optionally QAT) and export it.

    python -m quant.quantize --config configs/lenet5.toml [--wbits 8] [--abits 8] [--qat]
                             [--per-channel] [--out build/lenet5]

Writes ``<out>/qmodel.json`` + ``<out>/qmodel.npz`` (read by golden/ and hw/) and
``<out>/reports/quantize.json`` (formats, accuracies, saturations, lossless clamps). ``qmodel.json``
records what it was made from under ``"provenance"`` (:func:`core.records.qmodel_record`: config
sections, overrides, checkpoint bytes, data identity, generator sources); ``--ensure`` keeps it when
that record is current. Everything given is checked before anything is written (the checkpoint must
have been trained from this config and data set); the folder's lock is held while writing.

How formats are chosen (post-training quantization), all powers of two:

- weights: the largest ``frac`` with ``max|w| · 2^frac ≤ 2^(bits-1)``, per tensor or per output
  channel (``per_channel``; the output layer always per tensor so its scores share one scale);
- activations after ReLU (unsigned) or none (signed): from the 99.99th percentile ``r`` of the
  float activations over ``calibration_images`` training images, the largest ``frac`` with
  ``r · 2^frac ≤ 2^bits`` (unsigned) or ``2^(bits-1)`` (signed); values above saturate;
- lookup-table activations: output format from the function's bound (tanh, sigmoid: 1; scaled
  tanh: 1.7159); the table's signed input format from the same percentile of the
  pre-activation, capped where the function saturates (tanh 4, scaled tanh 6, sigmoid 8);
- biases at the accumulator's scale; accumulator widths by bit growth;
- average pooling keeps its input's format; RBF centers take their input's format;
- a batchnorm is folded into the conv or dense layer before it (running statistics) before
  any of this, and that layer takes the batchnorm's activation and calibration.

Each kind's part of this lives in its entry of :data:`quant.layers.MODULES` (formats, fake
quantization) and :data:`quant.layers.EXPORTERS` (its ``qmodel.json`` record).

Quantization-aware training (``--qat``) keeps those formats and fine-tunes the float weights
for ``quant.qat_epochs`` epochs through the fake-quantized model (straight-through estimators).
"""

import os
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from core.config import load_config
from core.data import check_fits, load_dataset
from core.errors import UserError, cli
from core.provenance import BuildLock, describe_changes, write_json
from core.records import qmodel_changes, qmodel_record, quantize_options
from golden import layers as GL
from golden import model as GM
from golden.ops import OPS

from .fakequant import QuantLeNet
from .formats import INPUT_FORMAT, act_frac, weight_frac
from .layers import EXPORTERS, MODULES, FormatChoice, float_layer
from .model import load_checkpoint
from .train import ArgumentParser, _progress, check_checkpoint, output_folder

__all__ = ["plan_formats", "export", "qat", "quantize", "fake_predict", "main", "weight_frac",
           "act_frac"]

PERCENTILE = 99.99


def lut_bits(config, abits):
    return max(4, min(abits + 2, 12)) if config.quant["lut_bits"] == 0 else \
        config.quant["lut_bits"]


def _calibration_stats(model, images):
    """Per config layer name: 99.99th percentiles of the float model's |pre-activation| (0 for a
    layer without an activation) and of its |output|, in eval mode."""
    config = model.config
    pct = lambda t: float(np.percentile(t.abs().flatten().numpy(), PERCENTILE))
    stats = {}
    model.eval()
    with torch.no_grad():
        x = model.prepare(torch.from_numpy(images))
        if config.input_pad:
            x = F.pad(x, (config.input_pad,) * 4)
        for spec, layer in zip(config.layers, model.layers, strict=True):
            pre = MODULES[spec.kind].pre_activation(layer, x)
            x = layer(x)
            stats[spec.name] = {"pre": pct(pre) if pre is not None else 0.0, "out": pct(x)}
    return stats


def plan_formats(model, calib_images, wbits=None, abits=None, per_channel=None):
    """Choose every format of the integer model (see the module docstring); return the plan,
    one entry per layer of ``config.exported``."""
    config = model.config
    per_channel = config.quant["per_channel"] if per_channel is None else per_channel
    stats = _calibration_stats(model, calib_images)
    plan = []
    fmt = dict(INPUT_FORMAT)
    for layer in config.exported:
        ab = abits or config.layer_bits(layer.name, "abits")
        calib = stats[float_layer(layer).name]
        choice = FormatChoice(wbits=wbits or config.layer_bits(layer.name, "wbits"), abits=ab,
                              per_channel=per_channel, pre=calib["pre"], out=calib["out"],
                              lut_bits=lut_bits(config, ab))
        p = {"in": dict(fmt), "final": layer.final, "lut": None}
        MODULES[layer.kind].plan(p, layer, model, choice)
        plan.append(p)
        fmt = p.get("out") or fmt
    return plan


def export(qnet, preset=None):
    """Return ``(meta, arrays)`` of the integer model computed by ``qnet``."""
    config = qnet.config
    meta = {
        "format_version": GM.FORMAT_VERSION, "preset": preset or config.name,
        "num_classes": config.num_classes, "config_sha256": config.sha256,
        "input": {"height": config.input_size, "width": config.input_size, "channels": 1,
                  "pad": config.input_pad, "format": dict(INPUT_FORMAT)},
        "layers": [],
        "output": {"kind": OPS[config.exported[-1].kind].classify},
    }
    arrays = {}
    for i, layer in enumerate(config.exported):
        meta["layers"].append(EXPORTERS[layer.kind].record(qnet, i, arrays))
    last = qnet.plan[-1]
    meta["output"]["score_bits"] = last["acc_bits"]
    meta["output"]["score_signed"] = not OPS[config.exported[-1].kind].scores_nonnegative
    meta["arrays"] = {name: {"shape": list(a.shape), "sha256": GM.array_sha256(a)}
                      for name, a in sorted(arrays.items())}
    return meta, arrays


def fake_predict(qnet, images, batch_size=1000, dtype=torch.float64, taps=False):
    """Run the fake-quantized model; return integer scores, saturations, clamps (and taps)."""
    qnet.eval()
    scores, all_taps, sat, clamps = [], {}, {}, {}
    with torch.no_grad():
        for i in range(0, len(images), batch_size):
            t = {}
            qnet(torch.from_numpy(images[i:i + batch_size]), taps=t, saturations=sat,
                 clamps=clamps, dtype=dtype)
            scores.append(t[qnet.config.exported[-1].name].numpy())
            if taps:
                for k, v in t.items():
                    all_taps.setdefault(k, []).append(v.numpy())
    scores = np.concatenate(scores)
    result = {"scores": scores, "saturations": sat, "clamps": clamps}
    if taps:
        result["taps"] = {k: np.concatenate(v) for k, v in all_taps.items()}
    return result


def classify(config, scores):
    return GL.classify(scores, OPS[config.exported[-1].kind].classify)


def qat(qnet, data, epochs, lr, seed, log=print):
    """Fine-tune ``qnet.model``'s weights through the fake quantization (float32, STE)."""
    config = qnet.config
    torch.manual_seed(seed)
    params = [p for p in qnet.model.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=lr)
    images = torch.from_numpy(data.train.images)
    labels = torch.from_numpy(data.train.labels)
    n, bs = len(labels), config.train["batch_size"]
    steps = (n + bs - 1) // bs
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, epochs * steps))
    gen = torch.Generator().manual_seed(seed)
    for epoch in range(1, epochs + 1):
        qnet.train()
        order = torch.randperm(n, generator=gen)
        total = 0.0
        for step in _progress(range(steps), steps, f"QAT epoch {epoch}/{epochs}"):
            idx = order[step * bs:(step + 1) * bs]
            scores = qnet(images[idx], dtype=torch.float32)
            loss = F.cross_entropy(scores * config.train["logit_scale"], labels[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            total += float(loss.detach()) * len(idx)
        acc = _accuracy(qnet, data.val)
        log(f"QAT epoch {epoch}/{epochs}  loss {total / n:.4f}  val accuracy {100 * acc:.2f}%")
    qnet.eval()
    return qnet


def _accuracy(qnet, split):
    result = fake_predict(qnet, split.images)
    return float((classify(qnet.config, result["scores"]) == split.labels).mean())


def quantize(config, model, data, wbits=None, abits=None, use_qat=False, per_channel=None,
             log=print):
    """PTQ (and QAT when asked) of ``model``; return the :class:`QuantLeNet`."""
    torch.set_num_threads(config.train["threads"])
    n = config.quant["calibration_images"]
    plan = plan_formats(model, data.train.images[:n], wbits, abits, per_channel)
    qnet = QuantLeNet(model, plan)
    if use_qat and config.quant["qat_epochs"]:
        qat(qnet, data, config.quant["qat_epochs"], config.quant["qat_lr"],
            config.train["seed"], log)
    return qnet


def _check_bits(name, bits):
    if bits is not None and not 2 <= bits <= 16:
        raise UserError(f"{name}={bits} is out of range; use 2..16")


@cli
def main(argv=None):
    parser = ArgumentParser(prog="python -m quant.quantize",
                            description="Quantize a trained model and export it.")
    parser.add_argument("--config", required=True, help="config path or preset name")
    parser.add_argument("--out", help="output folder (default build/<preset>)")
    parser.add_argument("--checkpoint", help="float checkpoint (default <out>/model.pt)")
    parser.add_argument("--wbits", type=int, default=_env_int("WBITS"))
    parser.add_argument("--abits", type=int, default=_env_int("ABITS"))
    parser.add_argument("--qat", action="store_true", default=_env_flag("QAT"))
    parser.add_argument("--per-channel", action="store_true", default=None)
    parser.add_argument("--data-dir", default=os.environ.get("DATA_DIR") or None)
    parser.add_argument("--dataset", default=os.environ.get("DATASET") or None)
    parser.add_argument("--ensure", action="store_true",
                        help="keep <out>/qmodel.json when its recorded inputs match; else "
                             "quantize, naming the inputs that changed")
    args = parser.parse_args(argv)
    config = load_config(args.config)
    _check_bits("WBITS", args.wbits)
    _check_bits("ABITS", args.abits)
    out = output_folder(args.out, config)
    checkpoint = Path(args.checkpoint) if args.checkpoint else out / "model.pt"
    model = load_checkpoint(config, checkpoint)
    data = load_dataset(args.dataset or config.dataset, args.data_dir)
    check_fits(config, data)
    check_checkpoint(config, model, data, checkpoint, args.data_dir)
    options = quantize_options(args.wbits, args.abits, args.qat, args.per_channel)
    if args.ensure:
        names = qmodel_changes(config, out, data.sha256, options, checkpoint)
        if not names:
            print(f"{config.name}: {out / 'qmodel.json'} is current")
            return 0
        if (out / "qmodel.json").exists():
            print(f"rebuilding {out / 'qmodel.json'}: {describe_changes(names)}",
                  file=sys.stderr)
    provenance = qmodel_record(config, checkpoint, data.sha256, options)
    with BuildLock(out, "quantize"):
        start = time.time()
        qnet = quantize(config, model, data, args.wbits, args.abits, args.qat, args.per_channel)
        meta, arrays = export(qnet)
        meta["method"] = "qat" if args.qat else "ptq"
        meta["provenance"] = provenance
        GM.save(meta, arrays, out)
        golden = GM.load(out)
        result = golden.run(data.test.images)
        accuracy = float((result["classes"] == data.test.labels).mean())
        record = {
            "preset": config.name, "method": meta["method"],
            "wbits": args.wbits or config.quant["wbits"],
            "abits": args.abits or config.quant["abits"],
            "golden_test_accuracy": accuracy, "saturations": result["saturations"],
            "clamps": result["clamps"],
            "seconds": round(time.time() - start, 1), "provenance": provenance,
        }
        write_json(out / "reports" / "quantize.json", record)
    print(f"{config.name}: {meta['method'].upper()} W{record['wbits']}A{record['abits']} golden "
          f"test accuracy {100 * accuracy:.2f}% -> {out / 'qmodel.json'}")
    return 0


def _env_int(name):
    value = os.environ.get(name)
    if not value:
        return None
    try:
        return int(value)
    except ValueError:
        raise UserError(f"{name}={value!r} is not an integer; give a bit width such as "
                        f"{name}=8") from None


def _env_flag(name):
    value = os.environ.get(name, "")
    if value not in ("", "0", "1"):
        raise UserError(f"{name}={value!r} must be 1 (on) or 0 (off)")
    return value == "1"


if __name__ == "__main__":
    sys.exit(main())

"""Quantize a trained model to the integer model (PTQ, optionally QAT) and export it.

    python -m quant.quantize --config configs/lenet5.toml [--wbits 8] [--abits 8] [--qat]
                             [--per-channel] [--out build/lenet5]

Writes ``<out>/qmodel.json`` + ``<out>/qmodel.npz`` (read by golden/ and hw/) and
``<out>/reports/quantize.json`` (formats, accuracies, saturations).

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
- average pooling keeps its input's format; RBF centers take their input's format.

Quantization-aware training (``--qat``) keeps those formats and fine-tunes the float weights
for ``quant.qat_epochs`` epochs through the fake-quantized model (straight-through estimators).
"""

import argparse
import math
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from core.config import load_config
from core.errors import UserError, cli
from core.paths import build_dir
from golden import layers as GL
from golden import model as GM

from .data import load_dataset
from .fakequant import QuantLeNet
from .model import load_checkpoint
from .train import _progress, write_json

__all__ = ["plan_formats", "export", "qat", "quantize", "fake_predict", "main"]

INPUT_FORMAT = {"bits": 8, "frac": 8, "signed": False}
LUT_BOUND = {"tanh": 1.0, "scaled_tanh": 1.7159, "sigmoid": 1.0}
LUT_SATURATION = {"tanh": 4.0, "scaled_tanh": 6.0, "sigmoid": 8.0}
PERCENTILE = 99.99


def _ceil_log2(x):
    return math.ceil(math.log2(x)) if x > 0 else -64


def weight_frac(w, bits):
    """Largest frac with max|w| · 2^frac ≤ 2^(bits-1)."""
    m = float(np.max(np.abs(w))) if np.size(w) else 0.0
    return bits - 1 - _ceil_log2(m) if m > 0 else bits - 1


def act_frac(r, bits, signed):
    """Largest frac with r · 2^frac ≤ 2^bits (unsigned) or 2^(bits-1) (signed)."""
    return (bits - 1 if signed else bits) - (_ceil_log2(r) if r > 0 else 0)


def _layer_bits(config, name, key):
    return config.quant["layers"].get(name, {}).get(key, config.quant[key])


def lut_bits(config, abits):
    return max(4, min(abits + 2, 12)) if config.quant["lut_bits"] == 0 else \
        config.quant["lut_bits"]


def _calibration_stats(model, images):
    """Per layer: 99.99th percentiles of |pre-activation| and of the output, float model."""
    config = model.config
    stats = []
    with torch.no_grad():
        x = model.prepare(torch.from_numpy(images))
        if config.input_pad:
            x = F.pad(x, (config.input_pad,) * 4)
        for spec, layer in zip(config.layers, model.layers, strict=True):
            if spec.kind == "conv":
                pre = F.conv2d(x, layer.weight(), layer.conv.bias, padding=spec.padding)
            elif spec.kind == "dense":
                pre = layer.fc(x.flatten(1))
            elif spec.kind == "pool" and spec.mode == "subsample":
                total = F.avg_pool2d(x, spec.size) * spec.size ** 2
                pre = total * layer.coef.view(1, -1, 1, 1) + layer.bias.view(1, -1, 1, 1)
            else:
                pre = None
            x = layer(x)
            pct = lambda t: float(np.percentile(t.abs().flatten().numpy(), PERCENTILE))
            stats.append({"pre": pct(pre) if pre is not None else 0.0, "out": pct(x)})
    return stats


def plan_formats(model, calib_images, wbits=None, abits=None, per_channel=None):
    """Choose every format of the integer model (see the module docstring); return the plan."""
    config = model.config
    per_channel = config.quant["per_channel"] if per_channel is None else per_channel
    stats = _calibration_stats(model, calib_images)
    plan = []
    fmt = dict(INPUT_FORMAT)
    for i, (spec, layer) in enumerate(zip(config.layers, model.layers, strict=True)):
        wb = wbits or _layer_bits(config, spec.name, "wbits")
        ab = abits or _layer_bits(config, spec.name, "abits")
        p = {"in": dict(fmt), "final": spec.final, "lut": None}
        if spec.kind == "pool" and spec.mode in ("max", "avg"):
            p["out"] = dict(fmt)
            plan.append(p)
            continue
        if spec.kind == "rbf":
            p["weight"] = dict(fmt)
            p["acc_bits"] = GL.acc_bits_for("rbf", None, fmt["bits"], spec.in_features)
            plan.append(p)
            continue
        with torch.no_grad():
            if spec.kind == "conv":
                w = layer.weight().numpy()
            elif spec.kind == "dense":
                w = layer.fc.weight.numpy()
            else:
                w = layer.coef.numpy()
        channelwise = per_channel and not spec.final
        if spec.kind == "pool":  # subsample: one coefficient per map
            fracs = [weight_frac(w[c:c + 1], wb) for c in range(len(w))]
            wfrac = fracs if channelwise else weight_frac(w, wb)
        elif channelwise:
            wfrac = [weight_frac(w[o], wb) for o in range(w.shape[0])]
        else:
            wfrac = weight_frac(w, wb)
        p["weight"] = {"bits": wb, "frac": wfrac, "signed": True}
        outs = spec.out_features if spec.kind != "pool" else spec.in_shape[0]
        wf = np.broadcast_to(np.asarray(wfrac), (outs,))
        p["acc_frac"] = [int(f) + fmt["frac"] for f in wf]
        if spec.kind == "pool":
            fan = spec.size ** 2
            p["acc_bits"] = GL.acc_bits_for("subsample", wb, fmt["bits"], fan)
        else:
            fan = max(len(c) for c in spec.connections) * (spec.kernel ** 2 if spec.kernel else 1)
            p["acc_bits"] = GL.acc_bits_for(spec.kind, wb, fmt["bits"], fan)
        act = spec.activation
        if spec.final:
            p["out"] = None
        elif act == "relu":
            p["out"] = {"bits": ab, "frac": act_frac(stats[i]["out"], ab, False), "signed": False}
            p["requant"] = p["out"]
        elif act == "none":
            p["out"] = {"bits": ab, "frac": act_frac(stats[i]["out"], ab, True), "signed": True}
            p["requant"] = p["out"]
        else:
            signed = act != "sigmoid"
            p["out"] = {"bits": ab, "frac": act_frac(LUT_BOUND[act], ab, signed),
                        "signed": signed}
            lb = lut_bits(config, ab)
            r = min(stats[i]["pre"], LUT_SATURATION[act])
            p["requant"] = {"bits": lb, "frac": act_frac(r, lb, True), "signed": True}
            p["lut"] = GL.build_lut(act, lb, p["requant"]["frac"], p["out"])
        plan.append(p)
        fmt = p["out"] if p["out"] else fmt
    return plan


def _codes(t, frac):
    scale = np.ldexp(1.0, np.asarray(frac, dtype=np.int64))
    if np.ndim(scale):
        scale = scale.reshape(-1, *([1] * (t.dim() - 1)))
    return np.rint(t.detach().to(torch.float64).numpy() * scale).astype(np.int64)


def export(qnet, preset=None):
    """Return ``(meta, arrays)`` of the integer model computed by ``qnet``."""
    config = qnet.config
    meta = {
        "format_version": GM.FORMAT_VERSION, "preset": preset or config.name,
        "num_classes": config.num_classes, "config_sha256": config.sha256,
        "input": {"height": config.input_size, "width": config.input_size, "channels": 1,
                  "pad": config.input_pad, "format": dict(INPUT_FORMAT)},
        "layers": [],
        "output": {"kind": "argmin" if config.output == "rbf" else "argmax"},
    }
    arrays = {}
    for i, spec in enumerate(config.layers):
        p = qnet.plan[i]
        d = {"name": spec.name, "in_format": p["in"], "final": spec.final,
             "in_shape": list(spec.in_shape)}
        names = {}
        if spec.kind == "pool" and spec.mode in ("max", "avg"):
            d.update(kind="pool", mode=spec.mode, size=spec.size, out_format=p["out"],
                     out_shape=list(spec.out_shape))
        elif spec.kind == "rbf":
            arrays[f"{spec.name}.centers"] = _codes(qnet.weight(i), p["weight"]["frac"])
            names["centers"] = f"{spec.name}.centers"
            d.update(kind="rbf", in_features=spec.in_features, out_features=spec.out_features,
                     acc_bits=p["acc_bits"])
        else:
            arrays[f"{spec.name}.weight"] = _codes(qnet.weight(i), p["weight"]["frac"])
            arrays[f"{spec.name}.bias"] = _codes(qnet.bias(i), p["acc_frac"])
            names.update(weight=f"{spec.name}.weight", bias=f"{spec.name}.bias")
            d.update(weight_format=p["weight"], acc_bits=p["acc_bits"], acc_frac=p["acc_frac"])
            if spec.kind == "conv":
                d.update(kind="conv", kernel=spec.kernel, padding=spec.padding,
                         out_shape=list(spec.out_shape))
                if not spec.full:
                    mask = np.zeros((spec.out_shape[0], spec.in_shape[0]), dtype=np.int64)
                    for o, row in enumerate(spec.connections):
                        mask[o, list(row)] = 1
                    arrays[f"{spec.name}.connections"] = mask
                    names["connections"] = f"{spec.name}.connections"
            elif spec.kind == "dense":
                d.update(kind="dense", in_features=spec.in_features,
                         out_features=spec.out_features)
            else:
                d.update(kind="subsample", size=spec.size, out_shape=list(spec.out_shape))
            if spec.final:
                d["activation"] = {"kind": "none"}
            elif p["lut"] is not None:
                d["activation"] = {"kind": "lut", "function": spec.activation,
                                   "in_bits": p["requant"]["bits"],
                                   "in_frac": p["requant"]["frac"]}
                arrays[f"{spec.name}.lut"] = p["lut"]
                names["lut"] = f"{spec.name}.lut"
            else:
                d["activation"] = {"kind": spec.activation}
            if not spec.final:
                d["out_format"] = p["out"]
        d["arrays"] = names
        meta["layers"].append(d)
    last = qnet.plan[-1]
    meta["output"]["score_bits"] = last["acc_bits"]
    meta["output"]["score_signed"] = config.output != "rbf"
    meta["arrays"] = {name: {"shape": list(a.shape), "sha256": GM.array_sha256(a)}
                      for name, a in sorted(arrays.items())}
    return meta, arrays


def fake_predict(qnet, images, batch_size=1000, dtype=torch.float64, taps=False):
    """Run the fake-quantized model; return integer scores (and taps, saturations)."""
    qnet.eval()
    scores, all_taps, sat = [], {}, {}
    with torch.no_grad():
        for i in range(0, len(images), batch_size):
            t = {}
            qnet(torch.from_numpy(images[i:i + batch_size]), taps=t, saturations=sat,
                 dtype=dtype)
            scores.append(t[qnet.config.layers[-1].name].numpy())
            if taps:
                for k, v in t.items():
                    all_taps.setdefault(k, []).append(v.numpy())
    scores = np.concatenate(scores)
    result = {"scores": scores, "saturations": sat}
    if taps:
        result["taps"] = {k: np.concatenate(v) for k, v in all_taps.items()}
    return result


def classify(config, scores):
    return GL.classify(scores, "argmin" if config.output == "rbf" else "argmax")


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


@cli
def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m quant.quantize",
                                     description="Quantize a trained model and export it.")
    parser.add_argument("--config", required=True, help="config path or preset name")
    parser.add_argument("--out", help="output folder (default build/<preset>)")
    parser.add_argument("--checkpoint", help="float checkpoint (default <out>/model.pt)")
    parser.add_argument("--wbits", type=int, default=_env_int("WBITS"))
    parser.add_argument("--abits", type=int, default=_env_int("ABITS"))
    parser.add_argument("--qat", action="store_true", default=os.environ.get("QAT") == "1")
    parser.add_argument("--per-channel", action="store_true", default=None)
    parser.add_argument("--data-dir", default=os.environ.get("DATA_DIR") or None)
    parser.add_argument("--dataset", default=os.environ.get("DATASET") or None)
    args = parser.parse_args(argv)
    config = load_config(args.config)
    for name, bits in (("WBITS", args.wbits), ("ABITS", args.abits)):
        if bits is not None and not 2 <= bits <= 16:
            raise UserError(f"{name}={bits} is out of range; use 2..16")
    out = Path(args.out) if args.out else build_dir(config)
    model = load_checkpoint(config, Path(args.checkpoint) if args.checkpoint else
                            out / "model.pt")
    data = load_dataset(args.dataset or config.dataset, args.data_dir)
    start = time.time()
    qnet = quantize(config, model, data, args.wbits, args.abits, args.qat, args.per_channel)
    meta, arrays = export(qnet)
    meta["method"] = "qat" if args.qat else "ptq"
    GM.save(meta, arrays, out)
    golden = GM.load(out)
    result = golden.run(data.test.images)
    accuracy = float((result["classes"] == data.test.labels).mean())
    record = {
        "preset": config.name, "method": meta["method"],
        "wbits": args.wbits or config.quant["wbits"], "abits": args.abits or config.quant["abits"],
        "golden_test_accuracy": accuracy, "saturations": result["saturations"],
        "seconds": round(time.time() - start, 1),
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
        print(f"error: {name}={value!r} is not an integer", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    sys.exit(main())

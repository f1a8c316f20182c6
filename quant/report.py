"""Write the quantization accuracy report of a preset.

    python -m quant.report --config configs/lenet5.toml [--bits 16,8,6,4,3,2] [--qat-epochs N]

Writes ``<out>/reports/quant.md``, ``quant.json`` and PNG plots: float vs PTQ vs QAT golden test
accuracy at each W/A bit width (W = A), the per-layer formats, accumulator widths, saturation
counts, lossless lookup-table clamp counts and signal-to-quantization-noise ratio of the config's
own format with where each layer's widths come from (``[quant]`` default, ``[quant.layers]``
override, or automatic: derived by the quantizer), a confusion matrix, and the format chosen as
default. Every quantized accuracy is measured with golden/ (the integer model the hardware
computes), on the whole test split.
"""

import copy
import dataclasses
import io
import math
import sys
import time

import numpy as np
import torch

from core.config import load_config
from core.data import check_fits, load_dataset
from core.errors import UserError, cli
from core.provenance import BuildLock, sha256_file, write_bytes, write_json
from golden.model import IntegerModel

from .layers import EXPORTERS, float_layer
from .model import load_checkpoint
from .quantize import export, quantize
from .train import ArgumentParser, check_checkpoint, evaluate, output_folder

__all__ = ["build_report", "markdown", "parse_bits", "main"]

DEFAULT_BITS = (16, 8, 6, 4, 3, 2)


def _golden(qnet):
    meta, arrays = export(qnet)
    return IntegerModel(meta, arrays), meta


def _accuracy(golden, split):
    result = golden.run(split.images)
    return float((result["classes"] == split.labels).mean()), result


def sqnr_db(reference, quantized):
    noise = float(np.sum((reference - quantized) ** 2))
    signal = float(np.sum(reference ** 2))
    return math.inf if noise == 0 else 10 * math.log10(signal / noise) if signal else -math.inf


def _bits(config, layer, key, bits):
    """Return ``{"bits", "source"}`` of a layer's width (``None`` when it has none)."""
    return None if bits is None else {"bits": bits, "source": config.bits_source(layer, key)}


def layer_table(config, model, golden, meta, split, sample=2000):
    """Per exported layer: formats, acc bits, the weight and output widths with their sources
    (:meth:`core.config.Config.bits_source`), saturations and clamps (whole split; filled by
    the caller) and SQNR (first ``sample``) against the float output it stands for (a folded
    batchnorm's)."""
    float_taps = {}
    with torch.no_grad():
        model.eval()
        model(torch.from_numpy(split.images[:sample]), taps=float_taps)
    result = golden.run(split.images[:sample], taps=True)
    rows = []
    for layer, d in zip(config.exported, meta["layers"], strict=True):
        exporter = EXPORTERS[layer.kind]
        ref = float_taps[float_layer(layer).name].double().numpy().reshape(sample, -1)
        codes = result["taps"][layer.name].reshape(sample, -1)
        rows.append({
            "layer": layer.name,
            "kind": "+".join(EXPORTERS[x.kind].label(x) for x in (layer,) + layer.folded),
            "in_format": d["in_format"], "weight_format": d.get("weight_format"),
            "out_format": d.get("out_format"), "acc_bits": d.get("acc_bits"),
            "activation": d.get("activation", {}).get("kind", "-"),
            "wbits": _bits(config, layer, "wbits", (d.get("weight_format") or {}).get("bits")),
            "abits": _bits(config, layer, "abits",
                           (d.get("out_format") or {}).get("bits", d.get("acc_bits"))),
            "sqnr_db": round(sqnr_db(ref, exporter.tap_value(d, codes)), 2),
        })
    return rows


def _source(bits):
    return f"{bits['bits']} {bits['source']}" if bits else "-"


def _fmt(f):
    if not f:
        return "-"
    frac = f["frac"]
    frac = f"{min(frac)}..{max(frac)}" if isinstance(frac, list) else frac
    return f"{'s' if f['signed'] else 'u'}{f['bits']}.f{frac}"


def _plots(out, report, confusion, title):
    """Draw the report's figures into the dict ``out`` (file name → PNG bytes)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    widths = [r["wbits"] for r in report["rows"] if r["method"] == "ptq"]
    float_pct = 100 * report["float_accuracy"]
    for ax, zoom in zip(axes, (False, True), strict=True):
        for method, marker in (("ptq", "o"), ("qat", "s")):
            rows = [r for r in report["rows"] if r["method"] == method]
            if rows:
                ax.plot([r["wbits"] for r in rows], [100 * r["accuracy"] for r in rows],
                        marker=marker, label=method.upper())
        ax.axhline(float_pct, color="gray", ls="--", label="float")
        ax.set_xlabel("weight and activation bits (W = A)")
        ax.set_ylabel("golden test accuracy (%)")
        ax.set_xscale("log", base=2)
        ax.set_xticks(widths)
        ax.get_xaxis().set_major_formatter(matplotlib.ticker.ScalarFormatter())
        ax.grid(alpha=0.3)
        if zoom:
            ax.set_ylim(float_pct - 2, min(100, float_pct + 0.5))
            ax.set_title("zoom: within 2 points of float")
        else:
            ax.set_ylim(0, 100)
            ax.set_title(f"{title}: accuracy vs bit width")
            ax.legend()
    fig.tight_layout()
    out["quant_accuracy.png"] = _png(lambda f: fig.savefig(f, dpi=100, format="png"))
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(5, 4.5))
    ax.imshow(np.log1p(confusion), cmap="Blues")
    for i in range(confusion.shape[0]):
        for j in range(confusion.shape[1]):
            if confusion[i, j]:
                ax.text(j, i, str(confusion[i, j]), ha="center", va="center", fontsize=7,
                        color="white" if i == j else "black")
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    ax.set_xticks(range(confusion.shape[1]))
    ax.set_yticks(range(confusion.shape[0]))
    ax.set_title(f"{title}: confusion matrix ({report['default']['label']})")
    fig.tight_layout()
    out["quant_confusion.png"] = _png(lambda f: fig.savefig(f, dpi=100, format="png"))
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(6.5, 3.5))
    layers = report["layers"]
    values = [min(r["sqnr_db"], 120) for r in layers]
    ax.bar([r["layer"] for r in layers], values, color="tab:purple")
    ax.set_ylabel("SQNR (dB)")
    ax.set_title(f"{title}: per-layer signal-to-quantization-noise ({report['default']['label']})")
    fig.tight_layout()
    out["quant_sqnr.png"] = _png(lambda f: fig.savefig(f, dpi=100, format="png"))
    plt.close(fig)


def build_report(config, model, data, bits=DEFAULT_BITS, qat_epochs=None, log=print):
    """Measure everything the report shows; return the quant.json dict and the confusion."""
    float_acc = evaluate(model, data.test)
    log(f"float test accuracy {100 * float_acc:.2f}%")
    rows = []
    cfg = config
    if qat_epochs is not None:
        cfg = dataclasses.replace(config, quant=dict(config.quant, qat_epochs=qat_epochs))
    for method in ("ptq", "qat"):
        for b in bits:
            start = time.time()
            qnet = quantize(cfg, copy.deepcopy(model), data, b, b, use_qat=method == "qat",
                            log=lambda *a: None)
            golden, _ = _golden(qnet)
            acc, result = _accuracy(golden, data.test)
            rows.append({"wbits": b, "abits": b, "method": method, "accuracy": acc,
                         "saturations": sum(result["saturations"].values()),
                         "clamps": sum(result["clamps"].values()),
                         "seconds": round(time.time() - start, 1)})
            log(f"{method.upper()} W{b}A{b}: {100 * acc:.2f}% ({rows[-1]['seconds']} s)")
    wb, ab = config.quant["wbits"], config.quant["abits"]
    qnet = quantize(config, copy.deepcopy(model), data, log=lambda *a: None)
    golden, meta = _golden(qnet)
    acc, result = _accuracy(golden, data.test)
    k = config.num_classes
    confusion = np.bincount(data.test.labels * k + result["classes"], minlength=k * k)
    confusion = confusion.reshape(k, k)
    ok = [r for r in rows if r["accuracy"] >= float_acc - 0.001]
    best = min(ok, key=lambda r: (r["wbits"], r["method"] != "ptq")) if ok else None
    report = {
        "preset": config.name, "float_accuracy": float_acc, "rows": rows,
        "default": {"wbits": wb, "abits": ab, "method": "ptq", "accuracy": acc,
                    "label": f"PTQ W{wb}A{ab}", "saturations": result["saturations"],
                    "clamps": result["clamps"]},
        "recommended": best,
        "layers": layer_table(config, model, golden, meta, data.test),
        "test_images": len(data.test),
    }
    for row, layer in zip(report["layers"], config.exported, strict=True):
        row["saturations"] = result["saturations"].get(layer.name, 0)
        row["clamps"] = result["clamps"].get(layer.name, 0)
    return report, confusion


def markdown(report, config):
    """Return the text of ``quant.md``."""
    pct = lambda a: f"{100 * a:.2f}%"
    lines = [
        f"# Quantization report: {config.name}", "",
        f"Float model: **{pct(report['float_accuracy'])}** on {report['test_images']:,} test "
        f"images. Quantized accuracies are measured with the golden integer model (what the "
        f"hardware computes), W = A bits, power-of-two scales.", "",
        "![accuracy vs bits](quant_accuracy.png)", "",
        "| bits (W=A) | PTQ | QAT | PTQ − float |", "|---:|---:|---:|---:|",
    ]
    by = {(r["wbits"], r["method"]): r for r in report["rows"]}
    for b in sorted({r["wbits"] for r in report["rows"]}, reverse=True):
        ptq, qat = by.get((b, "ptq")), by.get((b, "qat"))
        delta = f"{100 * (ptq['accuracy'] - report['float_accuracy']):+.2f}" if ptq else "-"
        lines.append(f"| {b} | {pct(ptq['accuracy']) if ptq else '-'} | "
                     f"{pct(qat['accuracy']) if qat else '-'} | {delta} |")
    d = report["default"]
    lines += ["", f"## Default format: {d['label']} ({pct(d['accuracy'])})", "",
              "The config's `[quant]` section sets it; the fake-quantized PyTorch model, the "
              "golden model and the RTL compute exactly these numbers.", ""]
    rec = report["recommended"]
    if rec:
        lines += [f"Smallest width within 0.1 point of float: **{rec['method'].upper()} "
                  f"W{rec['wbits']}A{rec['abits']}** ({pct(rec['accuracy'])}).", ""]
    lines += ["| layer | kind | activation | in | weights | out | acc bits | weight bits | "
              "out bits | saturations | LUT clamps | SQNR (dB) |",
              "|---|---|---|---|---|---|---:|---|---|---:|---:|---:|"]
    for r in report["layers"]:
        lines.append(f"| {r['layer']} | {r['kind']} | {r['activation']} | {_fmt(r['in_format'])} "
                     f"| {_fmt(r['weight_format'])} | {_fmt(r['out_format'])} | "
                     f"{r['acc_bits'] or '-'} | {_source(r['wbits'])} | {_source(r['abits'])} | "
                     f"{r['saturations']:,} | {r['clamps']:,} | {r['sqnr_db']} |")
    lines += ["", "Weight and out bits say where each width comes from: `default` is `[quant]`'s "
              "wbits/abits, `override` a `[quant.layers.<name>]` table, `automatic` what the "
              "quantizer derives (a pool keeps its input's format, RBF centers take their "
              "input's, the final layer's scores keep the accumulator's width).", "",
              "Formats read `s8.f5`: signed, 8 bits, 5 fractional bits (value = code · 2^-5). "
              "Saturations (clamps that can change a layer's output) and LUT clamps (a lookup "
              "table's input clamped where the table already holds the function's limit code, "
              "which loses nothing; golden/README.md) are counted over the whole test split; "
              "SQNR compares each layer's "
              "dequantized output with the float model's on 2,000 test images.", "",
              "![per-layer SQNR](quant_sqnr.png)", "", "![confusion matrix](quant_confusion.png)",
              ""]
    return "\n".join(lines)


def parse_bits(text):
    """Return the bit widths of ``--bits`` (comma-separated integers in 2..16, no repeats)."""
    try:
        bits = tuple(int(b) for b in text.split(","))
    except ValueError:
        raise UserError(f"--bits {text!r} must be comma-separated integers such as "
                        f"{','.join(map(str, DEFAULT_BITS))}") from None
    bad = [b for b in bits if not 2 <= b <= 16]
    if bad:
        raise UserError(f"--bits {text!r}: {bad[0]} is out of range; use widths in 2..16")
    if len(set(bits)) != len(bits):
        raise UserError(f"--bits {text!r} repeats a width; give each once")
    return bits


def _png(draw):
    buffer = io.BytesIO()
    draw(buffer)
    return buffer.getvalue()


@cli
def main(argv=None):
    parser = ArgumentParser(prog="python -m quant.report", description=__doc__.split("\n")[0])
    parser.add_argument("--config", required=True)
    parser.add_argument("--out", help="output folder (default build/<preset>)")
    parser.add_argument("--bits", default=",".join(map(str, DEFAULT_BITS)))
    parser.add_argument("--qat-epochs", type=int, help="override quant.qat_epochs")
    args = parser.parse_args(argv)
    config = load_config(args.config)
    bits = parse_bits(args.bits)
    if args.qat_epochs is not None and args.qat_epochs < 0:
        raise UserError(f"--qat-epochs={args.qat_epochs} must be 0 or more; leave it out for "
                        f"quant.qat_epochs={config.quant['qat_epochs']}")
    out = output_folder(args.out, config)
    checkpoint = out / "model.pt"
    model = load_checkpoint(config, checkpoint)
    data = load_dataset(config.dataset)
    check_fits(config, data)
    check_checkpoint(config, model, data, checkpoint)
    torch.set_num_threads(config.train["threads"])
    report, confusion = build_report(config, model, data, bits, args.qat_epochs)
    report["provenance"] = {"checkpoint": sha256_file(checkpoint), "data": data.sha256,
                            "config": config.sections_sha256("model", "layers", "train",
                                                             "quant")}
    reports = out / "reports"
    figures = {}
    _plots(figures, report, confusion, config.name)
    with BuildLock(out, "report"):
        for name, png in figures.items():
            write_bytes(reports / name, png)
        write_json(reports / "quant.json", report)
        write_bytes(reports / "quant.md", markdown(report, config).encode("utf-8"))
    print(f"report: {reports / 'quant.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

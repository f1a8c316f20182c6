"""Benchmark the golden model against PyTorch inference on the whole test split.

    python -m quant.bench [--presets lenet5,lenet5-tanh,lenet5-1998] [--repeat 3]

For each preset with an integer model in ``build/<preset>/``: the time golden/ takes for the
10,000 test images, the time the float PyTorch model takes (its normal inference, threads as
the config's ``train.threads``), and the fake-quantized float64 model, as medians of
``--repeat`` runs measured alternately in one process so machine noise hits all alike. Writes
``build/bench/golden.json`` and ``golden.md``. The figure that matters is the ratio golden ÷
PyTorch float (target: at most 2); the spread of the ratios of adjacent runs and the load
average show how noisy the machine was. Golden's per-layer path (float32 or int64) is listed.
"""

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import torch

import golden
from core.config import load_config
from core.data import load_dataset
from core.errors import cli
from core.paths import BUILD_DIR, build_dir
from core.provenance import write_bytes

from .fakequant import QuantLeNet
from .model import load_checkpoint
from .quantize import fake_predict, plan_formats
from .train import predict, write_json

__all__ = ["bench_preset", "main"]

BATCH = 1000  # PyTorch's batch; golden runs with its own default (cache-sized) batch


def _timed(fn):
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def bench_preset(preset, data, repeat):
    config = load_config(preset)
    out = build_dir(preset)
    model = load_checkpoint(config, out / "model.pt")
    integer = golden.load(out)
    torch.set_num_threads(config.train["threads"])
    images = data.test.images
    qnet = QuantLeNet(model, plan_formats(model, data.train.images[:500]))
    times = {"golden": [], "torch_float": [], "torch_fake_quant_f64": []}
    load = _load()
    for _ in range(repeat):
        times["golden"].append(_timed(lambda: integer.run(images)))
        times["torch_float"].append(_timed(lambda: predict(model, images, BATCH)))
        times["torch_fake_quant_f64"].append(_timed(lambda: fake_predict(qnet, images, BATCH)))
    med = {k: statistics.median(v) for k, v in times.items()}
    pairs = [g / t for g, t in zip(times["golden"], times["torch_float"], strict=True)]
    return {"preset": preset, "images": len(images), "repeat": repeat,
            "seconds": {k: round(v, 3) for k, v in med.items()},
            "runs": {k: [round(t, 3) for t in v] for k, v in times.items()},
            "images_per_second": {k: round(len(images) / v) for k, v in med.items()},
            "golden_over_torch_float": round(med["golden"] / med["torch_float"], 3),
            "pair_ratios": [round(r, 3) for r in pairs],
            "load_average": [load, _load()],
            "golden_paths": integer.plan().paths}


def _load():
    """The 1-minute load average (None where the system does not tell)."""
    try:
        return round(os.getloadavg()[0], 2)
    except (AttributeError, OSError):
        return None


@cli
def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m quant.bench", description=__doc__.split(
        "\n")[0])
    parser.add_argument("--presets", default="lenet5,lenet5-tanh,lenet5-1998")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--out", default=str(BUILD_DIR / "bench"))
    args = parser.parse_args(argv)
    data = load_dataset("mnist")
    rows = []
    for preset in args.presets.split(","):
        if not (build_dir(preset) / "qmodel.json").is_file():
            print(f"{preset}: no integer model; run `make quantize PRESET={preset}` (skipped)",
                  file=sys.stderr)
            continue
        rows.append(bench_preset(preset, data, args.repeat))
        r = rows[-1]
        print(f"{preset}: golden {r['seconds']['golden']} s, PyTorch float "
              f"{r['seconds']['torch_float']} s, ratio {r['golden_over_torch_float']}")
    out = Path(args.out)
    write_json(out / "golden.json", {"rows": rows, "threads": torch.get_num_threads(),
                                     "cpus": os.cpu_count()})
    lines = ["# Golden model speed (10,000 MNIST test images)", "",
             f"Medians of {args.repeat} alternating runs in one process; ratio = golden ÷ "
             f"PyTorch float (target: at most 2); pair ratios = golden ÷ PyTorch of adjacent "
             f"runs (min–max); load = 1-minute load average before–after on "
             f"{os.cpu_count()} CPUs.", "",
             "| preset | golden (s) | PyTorch float (s) | fake-quant f64 (s) | ratio | "
             "pair ratios | load |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        s = r["seconds"]
        load = "–".join(str(v) for v in r["load_average"])
        lines.append(f"| {r['preset']} | {s['golden']} | {s['torch_float']} | "
                     f"{s['torch_fake_quant_f64']} | {r['golden_over_torch_float']} | "
                     f"{min(r['pair_ratios'])}–{max(r['pair_ratios'])} | {load} |")
    lines += ["", "Golden's path per layer (golden/fast.py: float32 where provably exact, else "
              "int64):", ""]
    for r in rows:
        paths = ", ".join(f"{name} {path}" for name, path in r["golden_paths"].items())
        lines.append(f"- {r['preset']}: {paths}")
    write_bytes(out / "golden.md", ("\n".join(lines) + "\n").encode("utf-8"))
    print(f"-> {out / 'golden.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

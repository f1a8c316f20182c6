"""Benchmark the golden model against PyTorch inference on the whole test split.

    python -m quant.bench [--presets lenet5,lenet5-tanh,lenet5-1998] [--repeat 3]

For each preset with an integer model in ``build/<preset>/``: the time golden/ takes for the
10,000 test images, the time the float PyTorch model takes (same batch size, same threads), and
the fake-quantized float64 model, as medians of ``--repeat`` runs measured alternately in one
process so machine noise hits all alike. Writes ``build/bench/golden.json`` and ``golden.md``.
The figure that matters is the ratio golden ÷ PyTorch float (target: at most 2).
"""

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

import golden

from .config import load_config
from .data import load_dataset
from .errors import cli
from .fakequant import QuantLeNet
from .model import load_checkpoint
from .quantize import fake_predict, plan_formats
from .train import ROOT, predict, write_json

__all__ = ["bench_preset", "main"]

BATCH = 1000  # PyTorch's batch; golden runs with its own default (cache-sized) batch


def _timed(fn):
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def bench_preset(preset, data, repeat):
    config = load_config(preset)
    out = ROOT / "build" / preset
    model = load_checkpoint(config, out / "model.pt")
    integer = golden.load(out)
    torch.set_num_threads(config.train["threads"])
    images = data.test.images
    qnet = QuantLeNet(model, plan_formats(model, data.train.images[:500]))
    times = {"golden": [], "torch_float": [], "torch_fake_quant_f64": []}
    for _ in range(repeat):
        times["golden"].append(_timed(lambda: integer.run(images)))
        times["torch_float"].append(_timed(lambda: predict(model, images, BATCH)))
        times["torch_fake_quant_f64"].append(_timed(lambda: fake_predict(qnet, images, BATCH)))
    med = {k: statistics.median(v) for k, v in times.items()}
    return {"preset": preset, "images": len(images), "repeat": repeat,
            "seconds": {k: round(v, 3) for k, v in med.items()},
            "images_per_second": {k: round(len(images) / v) for k, v in med.items()},
            "golden_over_torch_float": round(med["golden"] / med["torch_float"], 3)}


@cli
def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m quant.bench", description=__doc__.split(
        "\n")[0])
    parser.add_argument("--presets", default="lenet5,lenet5-tanh,lenet5-1998")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--out", default=str(ROOT / "build" / "bench"))
    args = parser.parse_args(argv)
    data = load_dataset("mnist")
    rows = []
    for preset in args.presets.split(","):
        if not (ROOT / "build" / preset / "qmodel.json").is_file():
            print(f"{preset}: no integer model; run `make quantize PRESET={preset}` (skipped)",
                  file=sys.stderr)
            continue
        rows.append(bench_preset(preset, data, args.repeat))
        r = rows[-1]
        print(f"{preset}: golden {r['seconds']['golden']} s, PyTorch float "
              f"{r['seconds']['torch_float']} s, ratio {r['golden_over_torch_float']}")
    out = Path(args.out)
    write_json(out / "golden.json", {"rows": rows, "threads": torch.get_num_threads()})
    lines = ["# Golden model speed (10,000 MNIST test images)", "",
             "Medians of alternating runs in one process; ratio = golden ÷ PyTorch float.", "",
             "| preset | golden (s) | PyTorch float (s) | fake-quant f64 (s) | ratio |",
             "|---|---:|---:|---:|---:|"]
    for r in rows:
        s = r["seconds"]
        lines.append(f"| {r['preset']} | {s['golden']} | {s['torch_float']} | "
                     f"{s['torch_fake_quant_f64']} | {r['golden_over_torch_float']} |")
    (out / "golden.md").write_text("\n".join(lines) + "\n")
    print(f"-> {out / 'golden.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

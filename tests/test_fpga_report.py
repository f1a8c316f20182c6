"""fpga.report: reading nextpnr's and Yosys's reports, writing the synthesis report."""

import json

from fpga.report import (
    critical_path,
    parse_nextpnr_log,
    parse_nextpnr_report,
    synth_estimate,
    write_report,
    yosys_counts,
)

LOG = """\
Info: Device utilisation:
Info: \t         ICESTORM_LC:    6011/   5280   113%
Info: \t        ICESTORM_RAM:      94/     30   313%
Info: \t               SB_IO:      22/     39    56%
Info: \t        ICESTORM_DSP:       8/      8   100%
Info: \t      ICESTORM_SPRAM:       0/      4     0%
Info: Max frequency for clock 'clk$SB_IO_IN_$glb_clk': 21.50 MHz (FAIL at 24.00 MHz)
ERROR: Unable to place cell 'x', no BELs remaining to implement cell type 'ICESTORM_LC'
"""


def test_parse_nextpnr_log():
    util, fmax, errors = parse_nextpnr_log(LOG, "ice40")
    assert util == {"luts": (6011, 5280), "brams": (94, 30), "ios": (22, 39), "dsps": (8, 8),
                    "spram": (0, 4)}
    assert fmax == 21.5
    assert errors == ["Unable to place cell 'x', no BELs remaining to implement cell type "
                      "'ICESTORM_LC'"]
    assert parse_nextpnr_log("garbage\n", "ecp5") == ({}, None, [])


def test_parse_nextpnr_report(tmp_path):
    path = tmp_path / "report.json"
    path.write_text(json.dumps({
        "utilization": {"TRELLIS_COMB": {"used": 100, "available": 83640},
                        "MULT18X18D": {"used": 3, "available": 156},
                        "DCCA": {"used": 1, "available": 56}},
        "fmax": {"clk": {"achieved": 101.5, "constraint": 75.0},
                 "other": {"achieved": 90.25, "constraint": 75.0}}}))
    util, fmax = parse_nextpnr_report(path, "ecp5")
    assert util == {"luts": (100, 83640), "dsps": (3, 156)}
    assert fmax == 90.25


def test_critical_path(tmp_path):
    path = tmp_path / "report.json"
    path.write_text(json.dumps({"critical_paths": [
        {"path": [{"type": "clk-to-q", "delay": 1.0, "from": {"cell": "a"}, "to": {"cell": "a"}},
                  {"type": "routing", "delay": 2.5, "from": {"cell": "a"}, "to": {"cell": "b"}},
                  {"type": "setup", "delay": 0.5, "from": {"cell": "b"}, "to": {"cell": "b"}}]},
        {"path": [{"type": "routing", "delay": 1.0, "from": {"cell": "c"},
                   "to": {"cell": "d"}}]}]}))
    assert critical_path(path) == {"from": "a", "to": "b", "delay_ns": 4.0, "logic_ns": 1.5,
                                   "routing_ns": 2.5, "cells": ["a", "b"]}
    assert critical_path(tmp_path / "missing.json") is None


def test_yosys_counts_and_estimate(tmp_path):
    path = tmp_path / "stat.json"
    path.write_text("-- log line --\n" + json.dumps({"design": {"num_cells_by_type": {
        "SB_LUT4": 120, "SB_DFFE": 30, "SB_DFF": 10, "SB_MAC16": 2, "SB_RAM40_4K": 3}}}))
    counts = yosys_counts(path)
    assert counts["SB_LUT4"] == 120
    assert synth_estimate("ice40", counts) == {"luts": 120, "ffs": 40, "dsps": 2, "brams": 3,
                                               "spram": 0}
    assert synth_estimate("ecp5", {"LUT4": 10, "CCU2C": 3, "TRELLIS_DPR16X4": 1,
                                   "MULT18X18D": 4}) == {"luts": 20, "ffs": 0, "dsps": 4,
                                                         "brams": 0, "spram": 0}


def test_write_report(tmp_path):
    resources = {"luts": 100, "ffs": 50, "dsps": 1, "brams": 2, "spram": 0, "ios": 22}
    result = {"device": "up5k", "device_label": "Lattice iCE40 UP5K (SG48)", "family": "ice40",
              "fits": True, "overused": [], "fmax_mhz": 40.0, "freq_constraint_mhz": 24.0,
              "timing_met": True, "cycles_per_image": 1000, "mac_bound_cycles": 500,
              "macs": 1000, "multipliers": 2, "latency_cycles": 1200,
              "images_per_second": 40000.0, **resources,
              "capacity": {"luts": 5280, "ffs": 5280, "dsps": 8, "brams": 30, "spram": 4,
                           "ios": 39},
              "utilisation_pct": {r: 1.0 for r in resources}, "folding": [{"pe": 2, "simd": 1}],
              "load": ["dense2"], "tools": {"yosys": "Yosys 0.70", "nextpnr": "nextpnr 0.11"},
              "seconds": {"yosys": 1.0, "total": 2.0}}
    path = write_report(result, tmp_path)
    assert json.loads(path.read_text()) == result
    md = (tmp_path / "up5k.md").read_text()
    assert md.startswith("# Synthesis: Lattice iCE40 UP5K (SG48)\n")
    assert "- verdict: fits\n" in md and "(constraint 24 MHz, met)" in md
    assert "| LUTs (logic cells) | 100 | 5,280 | 1.0 |" in md
    assert "Weights loaded after reset (RAM, no ROM) for: dense2." in md
    assert md.endswith("Seconds: yosys 1.0, total 2.0.\n")


def test_critical_path_is_the_one_between_clock_edges(tmp_path):
    """A longer path to an unconstrained output pad does not set Fmax: the report names the
    slowest clock-to-clock path (an ECP5-85F report once named the reply byte → pad path)."""
    def segment(a, b, delay):
        return {"type": "routing", "delay": delay, "from": {"cell": a}, "to": {"cell": b}}
    path = tmp_path / "report.json"
    path.write_text(json.dumps({"critical_paths": [
        {"from": "posedge clk", "to": "posedge clk", "path": [segment("r1", "r2", 11.0)]},
        {"from": "<async>", "to": "posedge clk", "path": [segment("rst", "r3", 9.3)]},
        {"from": "posedge clk", "to": "<async>", "path": [segment("r4", "pad", 15.3)]}]}))
    assert critical_path(path)["cells"] == ["r1", "r2"]
    path.write_text(json.dumps({"critical_paths": [
        {"from": "posedge clk", "to": "<async>", "path": [segment("r4", "pad", 15.3)]}]}))
    assert critical_path(path)["cells"] == ["r4", "pad"]

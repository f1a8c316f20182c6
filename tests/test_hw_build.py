"""python -m hw.build: a small integer model in, its Verilog and cycle model out; errors in one
line."""

import json
import os
import shlex
import subprocess

import pytest

import golden
from core.config import load_config
from core.data import load_dataset
from core.paths import CONFIG_DIR, ROOT
from core.provenance import read_json, sha256_file
from core.records import qmodel_record
from hw import build
from hw.verilog import rtl_record

pytestmark = pytest.mark.filterwarnings("ignore::amaranth.hdl.UnusedElaboratable")

CONFIG = CONFIG_DIR / "lenet5.toml"
SPEC = [{"kind": "conv", "out_channels": 2, "kernel": 3}, {"kind": "pool", "mode": "max",
                                                          "size": 2},
        {"kind": "dense", "out_features": 10}]
#: The config of SPEC's network on MNIST (the folding is checked on the config's structure).
TINY = """[model]
name = "tiny"

[[layers]]
name = "conv0"
kind = "conv"
out_channels = 2
kernel = 3
activation = "relu"

[[layers]]
name = "pool1"
kind = "pool"
mode = "max"

[[layers]]
name = "dense2"
kind = "dense"
out_features = 10
"""


@pytest.fixture(autouse=True, scope="module")
def _discard_unused():
    yield
    from hw.simulation import discard_unused
    discard_unused()


@pytest.fixture(scope="module")
def mnist_sha256():
    return load_dataset("mnist").sha256


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """The path of the config of SPEC's network."""
    path = tmp_path_factory.mktemp("config") / "tiny.toml"
    path.write_text(TINY)
    return path


def _save(folder, mnist_sha256, config, options=None):
    """Save SPEC's integer model (random weights) in ``folder`` recorded as quantized from
    ``config`` (another config's record: the structure differs, its record is refused)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "model.pt").write_bytes(b"weights")
    meta, arrays = golden.random_qmodel(SPEC, 0, height=28, calibration=4)
    meta["provenance"] = qmodel_record(load_config(config), folder / "model.pt", mnist_sha256,
                                       options)
    golden.save(meta, arrays, folder)
    return folder


@pytest.fixture
def qmodel(tmp_path, mnist_sha256, tiny, monkeypatch):
    for name in ("WBITS", "ABITS", "QAT", "DATASET", "DATA_DIR"):
        monkeypatch.delenv(name, raising=False)
    return _save(tmp_path / "q", mnist_sha256, tiny)


def _main(capsys, argv):
    code = build.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out.strip().splitlines(), err.strip().splitlines()


def test_writes_the_verilog_and_the_cycle_model(capsys, qmodel, tiny, tmp_path):
    out_dir = tmp_path / "rtl"
    code, out, err = _main(capsys, ["--config", tiny, "--qmodel-dir", qmodel, "--out",
                                    out_dir, "--folding", "minimal", "--name", "tiny"])
    assert code == 0 and err == []
    assert sorted(p.name for p in out_dir.iterdir()) == ["cycles.json", "lint.vlt",
                                                          "provenance.json", "tiny.v",
                                                          "tiny_axis.v"]
    stored = read_json(out_dir / "provenance.json")
    assert stored["provenance"] == rtl_record(qmodel / "qmodel.json", cycles_folding(out_dir),
                                              name="tiny")
    assert stored["outputs"]["tiny.v"] == sha256_file(out_dir / "tiny.v")
    assert "module tiny(" in (out_dir / "tiny.v").read_text()
    cycles = json.loads((out_dir / "cycles.json").read_text())
    assert cycles["multipliers"] == 2                     # minimal: one per MAC layer
    assert out == [f"tiny: {out_dir}/tiny.v  cycles/image {cycles['cycles_per_image']:,}  "
                   f"latency {cycles['latency_cycles']:,}  multipliers 2  "
                   f"MACs {cycles['macs']:,}"]


def test_a_target_folding_meets_its_target(capsys, qmodel, tiny, tmp_path):
    target = 2000                               # minimal folding: 12,168 cycles per image
    code, _, _ = _main(capsys, ["--config", tiny, "--qmodel-dir", qmodel, "--out", tmp_path,
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
    assert err == [f"error: no integer model in {tmp_path}; run `make quantize PRESET=lenet5 "
                   f"OUT={tmp_path}`"]


def test_folding_and_target_together_are_refused(capsys, qmodel, tiny, tmp_path):
    code, _, err = _main(capsys, ["--config", tiny, "--qmodel-dir", qmodel, "--out", tmp_path,
                                  "--folding", "minimal", "--target-cycles", "100"])
    assert code == 2 and err == ["error: give a folding or target cycles, not both"]


def cycles_folding(out_dir):
    return json.loads((out_dir / "cycles.json").read_text())["folding"]


def test_the_rtl_goes_into_the_folder_of_the_integer_model(capsys, qmodel, tiny):
    code, _, err = _main(capsys, ["--config", tiny, "--qmodel-dir", qmodel])
    assert code == 0 and err == []
    assert (qmodel / "rtl" / "lenet_accel.v").is_file()
    assert not (qmodel / "rtl" / ".lock").exists() and (qmodel / ".lock").is_file()


def test_a_model_quantized_with_other_options_is_refused(capsys, tmp_path, mnist_sha256, tiny,
                                                         monkeypatch):
    folder = _save(tmp_path / "q4", mnist_sha256, tiny, {"wbits": 4})
    code, out, err = _main(capsys, ["--config", tiny, "--qmodel-dir", folder])
    assert code == 2 and out == []
    assert err == [f"error: {folder / 'qmodel.json'} was not made from these inputs (inputs "
                   f"changed: options); rebuild it with `make quantize CONFIG={tiny} "
                   f"OUT={folder}`"]
    assert not (folder / "rtl").exists()
    code, _, err = _main(capsys, ["--config", tiny, "--qmodel-dir", folder, "--wbits", "4",
                                  "--folding", "minimal"])
    assert code == 0 and err == []
    monkeypatch.setenv("WBITS", "4")                       # make verilog WBITS=4
    code, _, err = _main(capsys, ["--config", tiny, "--qmodel-dir", folder, "--folding",
                                  "minimal"])
    assert code == 0 and err == []
    monkeypatch.delenv("WBITS")
    (folder / "qmodel.json").write_text((folder / "qmodel.json").read_text().replace(
        "provenance", "old"))
    code, _, err = _main(capsys, ["--config", tiny, "--qmodel-dir", folder, "--wbits", "4",
                                  "--abits", "6", "--qat"])
    assert code == 2 and err == [
        f"error: {folder / 'qmodel.json'} was not made from these inputs (inputs changed: "
        f"config, options, checkpoint, data, generator); rebuild it with `make quantize "
        f"CONFIG={tiny} OUT={folder} WBITS=4 ABITS=6 QAT=1`"]


def test_a_model_of_another_config_or_checkpoint_is_refused(capsys, tmp_path, mnist_sha256):
    folder = _save(tmp_path / "tanh", mnist_sha256, CONFIG_DIR / "lenet5-tanh.toml")
    code, _, err = _main(capsys, ["--config", CONFIG, "--qmodel-dir", folder])
    assert code == 2 and err == [
        f"error: {folder / 'qmodel.json'} was not made from these inputs (inputs changed: "
        f"config); rebuild it with `make quantize PRESET=lenet5 OUT={folder}`"]
    (folder / "model.pt").write_bytes(b"retrained")
    code, _, err = _main(capsys, ["--config", CONFIG_DIR / "lenet5-tanh.toml", "--qmodel-dir",
                                  folder])
    assert code == 2 and err == [
        f"error: {folder / 'qmodel.json'} was not made from these inputs (inputs changed: "
        f"checkpoint); rebuild it with `make quantize PRESET=lenet5-tanh OUT={folder}`"]


@pytest.mark.train
def test_the_hint_works_for_a_config_outside_configs(capsys, tmp_path, monkeypatch):
    """The hints said `make ... PRESET=<name>`, which fails for a config outside configs/
    ("unknown preset") and acts on build/<name> instead of the folder given."""
    for name in ("WBITS", "ABITS", "QAT", "DATASET", "DATA_DIR", "OUT", "PRESET", "CONFIG"):
        monkeypatch.delenv(name, raising=False)
    config, out = tmp_path / "my net.toml", tmp_path / "out"
    config.write_text(TINY + "\n[train]\nepochs = 1\nbatch_size = 256\n")
    code, _, err = _main(capsys, ["--config", config, "--qmodel-dir", out])
    hint = f"make quantize 'CONFIG={config}' OUT={out}"
    assert (code, err) == (2, [f"error: no integer model in {out}; run `{hint}`"])
    words = shlex.split(hint)
    proc = subprocess.run(words[:1] + ["--no-print-directory", "STAMP="] + words[1:], cwd=ROOT,
                          capture_output=True, text=True, timeout=600,
                          env={k: v for k, v in os.environ.items() if k != "MAKEFLAGS"})
    assert proc.returncode == 0, proc.stderr
    code, lines, err = _main(capsys, ["--config", config, "--qmodel-dir", out])
    assert code == 0 and err == [] and lines[0].startswith(f"tiny: {out}/rtl/lenet_accel.v")

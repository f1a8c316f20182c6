"""sim.flow: the steps before a simulation run only when their recorded inputs changed (never
by file dates)."""

import os
import sys

import numpy as np
import pytest

import golden
import hw.verilog
from core import records
from core.config import load_config
from core.errors import UserError
from core.paths import CONFIG_DIR
from core.provenance import read_json, sha256_file, write_json
from sim import flow

pytestmark = pytest.mark.filterwarnings("ignore::amaranth.hdl.UnusedElaboratable")

SPEC = [{"kind": "conv", "out_channels": 2, "kernel": 3}, {"kind": "pool", "mode": "max",
                                                          "size": 2},
        {"kind": "dense", "out_features": 3}]
MINIMAL = [{"pe": 1, "simd": 1}, {"pe": 1, "simd": 1}]


@pytest.fixture(autouse=True, scope="module")
def _discard_unused():
    yield
    from hw.simulation import discard_unused
    discard_unused()


CONFIG_TEXT = (CONFIG_DIR / "lenet5.toml").read_text()
DATA = "d" * 64


class Data:
    """Stands in for a loaded data set: its name and identity."""
    name = "mnist"
    sha256 = DATA


class Steps:
    """Stands in for ``_run_step``: records each step and writes what it would write; the
    integer model gets the record of the checkpoint, config, options and data it was asked
    for."""

    def __init__(self, out, config):
        self.out = out
        self.config = config
        self.ran = []
        self.commands = []

    def __call__(self, what, cmd):
        self.ran.append(what)
        self.commands.append(cmd)
        if what == "checkpoint":
            if not (self.out / "model.pt").exists():
                (self.out / "model.pt").write_bytes(b"weights")
            return
        options = {}
        if "--wbits" in cmd:
            options["wbits"] = int(cmd[cmd.index("--wbits") + 1])
        record = records.qmodel_record(self.config, self.out / "model.pt", DATA, options)
        write_json(self.out / "qmodel.json", {"provenance": record})
        (self.out / "qmodel.npz").write_bytes(b"")


def _config(tmp_path, text=CONFIG_TEXT):
    path = tmp_path / "lenet5.toml"
    path.write_text(text)
    return load_config(path)


@pytest.fixture
def steps(monkeypatch, tmp_path):
    out = tmp_path / "build"
    out.mkdir()
    config = _config(tmp_path)
    recorder = Steps(out, config)
    monkeypatch.setattr(flow, "_run_step", recorder)
    return recorder, config, out


def _ensure(config, out, capsys, **kwargs):
    flow.ensure_qmodel(config, out, data=Data(), **kwargs)
    return capsys.readouterr().err.splitlines()


def test_ensure_qmodel_checkpoints_then_quantizes_from_nothing(steps, capsys):
    recorder, config, out = steps
    assert _ensure(config, out, capsys) == []
    assert recorder.ran == ["checkpoint", "quantize"]
    assert recorder.commands[0][1:] == ["-m", "quant.train", "--config", str(config.path),
                                        "--out", str(out), "--dataset", "mnist", "--ensure"]
    assert recorder.commands[1][1:] == ["-m", "quant.quantize", "--config", str(config.path),
                                        "--out", str(out), "--dataset", "mnist"]


def test_ensure_qmodel_keeps_a_current_model_whatever_the_file_dates(steps, capsys):
    recorder, config, out = steps
    _ensure(config, out, capsys)
    for name in ("qmodel.json", "qmodel.npz"):          # older than the checkpoint and config
        os.utime(out / name, (0, 0))
    recorder.ran.clear()
    assert _ensure(config, out, capsys) == []
    assert recorder.ran == ["checkpoint"]               # train --ensure decides for model.pt


def test_ensure_qmodel_requantizes_after_another_checkpoint(steps, capsys):
    recorder, config, out = steps
    _ensure(config, out, capsys)
    (out / "model.pt").write_bytes(b"retrained")
    recorder.ran.clear()
    assert _ensure(config, out, capsys) == [
        f"rebuilding {out / 'qmodel.json'}: inputs changed: checkpoint"]
    assert recorder.ran == ["checkpoint", "quantize"]
    assert _ensure(config, out, capsys) == []


def test_ensure_qmodel_requantizes_for_other_options_and_data(steps, capsys, monkeypatch):
    recorder, config, out = steps
    _ensure(config, out, capsys)
    assert _ensure(config, out, capsys, options={"wbits": 4}) == [
        f"rebuilding {out / 'qmodel.json'}: inputs changed: options"]
    assert recorder.commands[-1][-2:] == ["--wbits", "4"]
    assert _ensure(config, out, capsys) == [
        f"rebuilding {out / 'qmodel.json'}: inputs changed: options"]   # back to the config's
    monkeypatch.setattr(Data, "sha256", "e" * 64)
    assert _ensure(config, out, capsys)[0] == (f"rebuilding {out / 'qmodel.json'}: inputs "
                                               f"changed: data")


def test_ensure_qmodel_follows_the_quant_section_not_the_hardware_one(steps, capsys, tmp_path):
    recorder, config, out = steps
    _ensure(config, out, capsys)
    recorder.ran.clear()
    hardware = _config(tmp_path, CONFIG_TEXT.replace("target_cycles = 4800",
                                                     "target_cycles = 9600"))
    assert _ensure(hardware, out, capsys) == [] and recorder.ran == ["checkpoint"]
    quant = _config(tmp_path, CONFIG_TEXT.replace("wbits = 8", "wbits = 6"))
    assert _ensure(quant, out, capsys) == [
        f"rebuilding {out / 'qmodel.json'}: inputs changed: config"]
    assert recorder.ran == ["checkpoint", "checkpoint", "quantize"]


@pytest.mark.parametrize("broken", ["missing npz", "no record", "generator"])
def test_ensure_qmodel_requantizes_an_incomplete_or_foreign_model(steps, capsys, broken,
                                                                   monkeypatch):
    recorder, config, out = steps
    _ensure(config, out, capsys)
    if broken == "missing npz":
        (out / "qmodel.npz").unlink()
        names = "config, options, checkpoint, data, generator"
    elif broken == "no record":
        write_json(out / "qmodel.json", {"layers": []})
        names = "config, options, checkpoint, data, generator"
    else:
        monkeypatch.setattr(records, "generator_digest", lambda: "0" * 64)
        names = "generator"
    recorder.ran.clear()
    assert _ensure(config, out, capsys) == [
        f"rebuilding {out / 'qmodel.json'}: inputs changed: {names}"]
    assert recorder.ran == ["checkpoint", "quantize"]


def test_a_failing_step_is_one_user_error(capsys):
    with pytest.raises(UserError) as info:
        flow._run_step("quantize", ["python", "-c", "raise SystemExit(3)"])
    assert str(info.value) == ("quantize failed (exit 3): python -c raise SystemExit(3); see its "
                               "message above")
    assert capsys.readouterr().err == "[sim] quantize: raise SystemExit(3)\n"
    flow._run_step("ok", [sys.executable, "-c", "pass"])


@pytest.fixture(scope="module")
def qmodel(tmp_path_factory):
    out = tmp_path_factory.mktemp("qmodel")
    meta, arrays = golden.random_qmodel(SPEC, 0, height=6, calibration=4)
    golden.save(meta, arrays, out)
    return out


class Generate:
    """Stands in for ``hw.verilog.generate``: records each call, writes the files it names and
    the record it is given."""

    def __init__(self):
        self.calls = 0

    def __call__(self, meta, arrays, folding, out, *, name, provenance):
        self.calls += 1
        paths = hw.verilog.output_paths(out, name)
        for path in paths.values():
            write_json(path, {})
        write_json(paths["cycles"], {"folding": folding})
        write_json(out / "provenance.json", {"provenance": provenance, "outputs": {
            path.name: sha256_file(path) for path in paths.values()}})
        return paths


def test_ensure_rtl_rebuilds_only_what_changed(qmodel, tmp_path, monkeypatch, capsys):
    generate = Generate()
    monkeypatch.setattr(flow, "generate", generate)
    rtl = tmp_path / "rtl"

    def rebuilt(folding, **kwargs):
        before = generate.calls
        paths, cycles, checked = flow.ensure_rtl(qmodel, folding, rtl, **kwargs)
        assert checked == folding and cycles == {"folding": folding}
        return generate.calls - before

    assert rebuilt(MINIMAL) == 1
    assert rebuilt(MINIMAL) == 0                                    # unchanged: reused
    os.utime(qmodel / "qmodel.json")                                # dates do not count
    assert rebuilt(MINIMAL) == 0
    capsys.readouterr()
    faster = [{"pe": 2, "simd": 1}, {"pe": 1, "simd": 1}]
    assert rebuilt(faster) == 1                                     # another folding
    assert capsys.readouterr().err.splitlines()[0] == (
        f"rebuilding {rtl / 'lenet_accel.v'}: inputs changed: folding")
    assert rebuilt(MINIMAL) == 1                                    # one record: the last build
    model = golden.load(qmodel)
    arrays = {k: np.array(v) for k, v in model.arrays.items()}
    assert rebuilt(MINIMAL, arrays=arrays) == 1                    # weights given explicitly
    assert rebuilt(MINIMAL, arrays=arrays) == 0
    arrays["conv0.weight"][0, 0, 0, 0] ^= 1
    assert rebuilt(MINIMAL, arrays=arrays) == 1                    # other weights
    (rtl / "lint.vlt").unlink()
    assert rebuilt(MINIMAL, arrays=arrays) == 1                    # an output went missing
    (rtl / "lenet_accel.v").write_text("edited")
    capsys.readouterr()
    assert rebuilt(MINIMAL, arrays=arrays) == 1                    # an output was edited
    assert capsys.readouterr().err.splitlines()[0] == (
        f"rebuilding {rtl / 'lenet_accel.v'}: inputs changed: outputs")
    assert rebuilt(MINIMAL, arrays=arrays, name="tiny") == 1       # another module name
    monkeypatch.setattr(hw.verilog, "generator_digest", lambda: "1" * 64)
    assert rebuilt(MINIMAL, arrays=arrays, name="tiny") == 1       # hw/ or core/ changed
    assert rebuilt(MINIMAL, arrays=arrays, name="tiny") == 0
    record = read_json(rtl / "provenance.json")["provenance"]
    assert sorted(record) == ["arrays", "folding", "generator", "load", "name", "qmodel"]
    assert record["qmodel"] == sha256_file(qmodel / "qmodel.json")
    assert record["name"] == "tiny" and record["generator"] == "1" * 64


def test_ensure_rtl_with_the_real_generator(capsys, qmodel, tmp_path):
    paths, cycles, _ = flow.ensure_rtl(qmodel, MINIMAL, tmp_path, name="tiny")
    assert capsys.readouterr().err == (f"[sim] verilog: {tmp_path}/tiny.v (folding "
                                       f"{MINIMAL})\n")
    assert paths["top"] == tmp_path / "tiny.v" and paths["axis"] == tmp_path / "tiny_axis.v"
    assert all(path.is_file() for path in paths.values())
    assert cycles["multipliers"] == 2
    stored = read_json(tmp_path / "provenance.json")
    assert stored["provenance"] == hw.verilog.rtl_record(qmodel / "qmodel.json", MINIMAL,
                                                         name="tiny")
    assert stored["outputs"] == {p.name: sha256_file(p) for k, p in paths.items()
                                 if k != "provenance"}
    flow.ensure_rtl(qmodel, MINIMAL, tmp_path, name="tiny")
    assert capsys.readouterr().err == ""


def test_chain_names_every_artifact(qmodel, tmp_path):
    config = _config(tmp_path)
    (qmodel / "model.pt").write_bytes(b"weights")
    top = tmp_path / "top.v"
    top.write_text("module top; endmodule\n")
    assert flow.chain(config, qmodel, top, "r" * 64) == {
        "config": config.sha256, "checkpoint": sha256_file(qmodel / "model.pt"),
        "qmodel": sha256_file(qmodel / "qmodel.json"), "rtl": sha256_file(top),
        "result": "r" * 64}


def test_ensure_rtl_bad_folding(qmodel, tmp_path):
    with pytest.raises(UserError) as info:
        flow.ensure_rtl(qmodel, [{"pe": 1, "simd": 1}], tmp_path)
    assert str(info.value) == ("folding: folding has 1 entries but the model has 2 MAC layers "
                               "(conv0, dense2); give one {'pe', 'simd'} per MAC layer")
    assert not any(tmp_path.iterdir())

"""sim.flow: the steps before a simulation run only when their inputs changed."""

import json
import os
import sys

import numpy as np
import pytest

import golden
from core.errors import UserError
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


class Steps:
    """Stands in for ``_run_step``: records each step and writes the files it would write."""

    def __init__(self, out):
        self.out = out
        self.ran = []

    def __call__(self, what, cmd):
        self.ran.append(what)
        names = ["model.pt"] if what == "checkpoint" else ["qmodel.json", "qmodel.npz"]
        for name in names:
            (self.out / name).write_bytes(b"")


def _age(path, seconds):
    stat = path.stat()
    os.utime(path, (stat.st_atime - seconds, stat.st_mtime - seconds))


@pytest.fixture
def steps(monkeypatch, tmp_path):
    out = tmp_path / "build"
    out.mkdir()
    recorder = Steps(out)
    monkeypatch.setattr(flow, "_run_step", recorder)
    config = tmp_path / "lenet5.toml"
    config.write_text("")
    _age(config, 100)
    return recorder, config, out


def test_ensure_qmodel_trains_then_quantizes_from_nothing(steps):
    recorder, config, out = steps
    assert flow.ensure_qmodel(config, out) == out
    assert recorder.ran == ["checkpoint", "quantize"]


def test_ensure_qmodel_keeps_an_up_to_date_model(steps):
    recorder, config, out = steps
    for name in ("model.pt", "qmodel.json", "qmodel.npz"):
        (out / name).write_bytes(b"")
    _age(out / "model.pt", 50)
    flow.ensure_qmodel(config, out)
    assert recorder.ran == []


@pytest.mark.parametrize("older", ["qmodel.json", "qmodel.npz"])
def test_ensure_qmodel_requantizes_after_a_new_checkpoint(steps, older):
    recorder, config, out = steps
    for name in ("model.pt", "qmodel.json", "qmodel.npz"):
        (out / name).write_bytes(b"")
    _age(out / older, 60)                       # older than model.pt
    flow.ensure_qmodel(config, out)
    assert recorder.ran == ["quantize"]


def test_ensure_qmodel_requantizes_after_a_config_change(steps):
    recorder, config, out = steps
    for name in ("model.pt", "qmodel.json", "qmodel.npz"):
        (out / name).write_bytes(b"")
        _age(out / name, 200)
    flow.ensure_qmodel(config, out)
    assert recorder.ran == ["quantize"]


def test_ensure_qmodel_requantizes_a_missing_half(steps):
    recorder, config, out = steps
    for name in ("model.pt", "qmodel.json"):
        (out / name).write_bytes(b"")
    flow.ensure_qmodel(config, out)
    assert recorder.ran == ["quantize"]


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
    """Stands in for ``hw.verilog.generate``: records each call, writes the files it names."""

    def __init__(self):
        self.calls = 0

    def __call__(self, meta, arrays, folding, out, *, name):
        self.calls += 1
        out.mkdir(parents=True, exist_ok=True)
        paths = {"top": out / f"{name}.v", "axis": out / f"{name}_axis.v",
                 "cycles": out / "cycles.json", "lint": out / "lint.vlt"}
        for path in paths.values():
            path.write_text("")
        paths["cycles"].write_text(json.dumps({"folding": folding}))
        return paths


def test_ensure_rtl_rebuilds_only_what_changed(qmodel, tmp_path, monkeypatch):
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
    faster = [{"pe": 2, "simd": 1}, {"pe": 1, "simd": 1}]
    assert rebuilt(faster) == 1                                     # another folding
    assert rebuilt(MINIMAL) == 1                                    # one stamp: the last build
    model = golden.load(qmodel)
    arrays = {k: np.array(v) for k, v in model.arrays.items()}
    assert rebuilt(MINIMAL, arrays=arrays) == 1                    # weights given explicitly
    assert rebuilt(MINIMAL, arrays=arrays) == 0
    arrays["conv0.weight"][0, 0, 0, 0] ^= 1
    assert rebuilt(MINIMAL, arrays=arrays) == 1                    # other weights
    (rtl / "lint.vlt").unlink()
    assert rebuilt(MINIMAL, arrays=arrays) == 1                    # an output went missing
    assert rebuilt(MINIMAL, arrays=arrays, name="tiny") == 1       # another module name
    hw = tmp_path / "hw"
    hw.mkdir()
    (hw / "stage.py").write_text("x = 1\n")
    monkeypatch.setattr(flow, "HW_DIR", hw)
    assert rebuilt(MINIMAL, arrays=arrays, name="tiny") == 1       # hw/ sources changed
    (hw / "stage.py").write_text("x = 2\n")
    assert rebuilt(MINIMAL, arrays=arrays, name="tiny") == 1
    assert rebuilt(MINIMAL, arrays=arrays, name="tiny") == 0


def test_ensure_rtl_with_the_real_generator(capsys, qmodel, tmp_path):
    paths, cycles, _ = flow.ensure_rtl(qmodel, MINIMAL, tmp_path, name="tiny")
    assert capsys.readouterr().err == (f"[sim] verilog: {tmp_path}/tiny.v (folding "
                                       f"{MINIMAL})\n")
    assert paths["top"] == tmp_path / "tiny.v" and paths["axis"] == tmp_path / "tiny_axis.v"
    assert all(path.is_file() for path in paths.values())
    assert cycles["multipliers"] == 2
    flow.ensure_rtl(qmodel, MINIMAL, tmp_path, name="tiny")
    assert capsys.readouterr().err == ""


def test_ensure_rtl_bad_folding(qmodel, tmp_path):
    with pytest.raises(UserError) as info:
        flow.ensure_rtl(qmodel, [{"pe": 1, "simd": 1}], tmp_path)
    assert str(info.value) == ("folding: folding has 1 entries but the model has 2 MAC layers "
                               "(conv0, dense2); give one {'pe', 'simd'} per MAC layer")
    assert not any(tmp_path.iterdir())

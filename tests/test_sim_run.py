"""python -m sim.run: user errors are one line without a traceback."""

import shutil

import pytest

from core.paths import SHIPPED_DIR
from sim import run

pytestmark = pytest.mark.filterwarnings("ignore::amaranth.hdl.UnusedElaboratable")


@pytest.fixture(autouse=True, scope="module")
def _discard_unused():
    yield
    from hw.simulation import discard_unused
    discard_unused()


def _error(capsys, argv):
    code = run.main(argv)
    err = capsys.readouterr().err.strip().splitlines()
    return code, err


def test_bad_config(capsys, tmp_path):
    code, err = _error(capsys, ["--config", str(tmp_path / "nope.toml"), "--n", "1"])
    assert code == 2
    assert len(err) == 1 and err[0].startswith("error: config ")
    assert "Traceback" not in "\n".join(err)


def test_bad_gaps(capsys):
    code, err = _error(capsys, ["--gaps", "2", "--n", "1"])
    assert code == 2 and err == ["error: --gaps 2.0: use a probability in 0..0.95"]


def test_missing_simulator(capsys, monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))
    code, err = _error(capsys, ["--sim", "icarus", "--n", "1"])
    assert code == 2
    assert len(err) == 1 and "Icarus Verilog is missing" in err[0]


def test_bad_folding(capsys):
    pytest.importorskip("golden")
    code, err = _error(capsys, ["--folding", "[{\"pe\": 7, \"simd\": 1}]", "--n", "1",
                                "--sim", "icarus"])
    assert code == 2 and [line for line in err if line.startswith("error:")] == err[-1:]
    assert err[-1].startswith("error: folding '[{\"pe\": 7, \"simd\": 1}]': folding has 1 "
                             "entries but the model has 5 MAC layers"), err[-1]


@pytest.mark.sim
@pytest.mark.slow
def test_run_two_images_icarus(capsys):
    import json

    from sim.fixtures import QMODEL_DIR
    from sim.tools import simulator_available
    if simulator_available("icarus"):
        pytest.skip(simulator_available("icarus"))
    code = run.main(["--n", "2", "--sim", "icarus", "--folding", "target:4096"])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "0 mismatches" in out
    summary = json.loads((QMODEL_DIR / "sim" / "summary.json").read_text())
    for key in ("preset", "simulator", "images", "mismatches", "rtl_accuracy",
                "golden_accuracy", "cycles_per_image", "latency_cycles", "wall_seconds"):
        assert key in summary
    assert summary["mismatches"] == 0 and summary["images"] == 2
    assert summary["cycles_per_image"] == summary["model_cycles_per_image"]


def test_bad_first_and_n(capsys, monkeypatch):
    code, err = _error(capsys, ["--first", "-1", "--n", "1"])
    assert code == 2 and err == ["error: --first -1: give the index of a test image (0 or more)"]
    monkeypatch.setenv("N", "ten")
    code, err = _error(capsys, [])
    assert code == 2 and err == ["error: N='ten' is not an integer; give a whole number such as "
                                 "N=16"]


def test_current_artifacts_skip_the_checkpoint_step(monkeypatch, tmp_path):
    """sim.run ran `quant.train --ensure` (seconds of torch import) even when the checkpoint's
    record, read without torch, said it was current."""
    if shutil.which("iverilog") is None:
        pytest.skip("Icarus Verilog is missing")
    for name in ("WBITS", "ABITS", "QAT", "DATASET", "DATA_DIR", "TARGET_CYCLES", "FOLDING"):
        monkeypatch.delenv(name, raising=False)
    calls = []
    monkeypatch.setattr(run, "ensure_qmodel", lambda *a, **k: calls.append("ensure"))
    monkeypatch.setattr(run, "require_current_qmodel", lambda *a, **k: None)
    monkeypatch.setattr(run, "_simulate", lambda *a: 0)
    monkeypatch.setattr(run, "qmodel_changes", lambda *a, **k: [])
    argv = ["--out", str(tmp_path), "--n", "1", "--sim", "icarus"]
    assert run.main(argv) == 0 and calls == ["ensure"]          # no checkpoint yet
    shutil.copyfile(SHIPPED_DIR / "lenet5.pt", tmp_path / "model.pt")
    assert run.main(argv) == 0 and calls == ["ensure"]          # current: skipped
    monkeypatch.setattr(run, "qmodel_changes", lambda *a, **k: ["checkpoint"])
    assert run.main(argv) == 0 and calls == ["ensure"] * 2      # the integer model is not

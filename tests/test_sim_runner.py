"""sim.runner: the cocotb testbench built and run on the real lenet5 RTL (Icarus, Verilator);
the JUnit verdict and the waves file."""

import numpy as np
import pytest

from sim import runner
from sim.fixtures import QMODEL_DIR, fast_rtl, mnist_images
from sim.runner import simulate
from sim.tools import SimulatorMissing, simulator_available

pytestmark = [pytest.mark.usefixtures("discard_unused_elaboratables"),
              pytest.mark.filterwarnings("ignore::amaranth.hdl.UnusedElaboratable")]


def _need(sim):
    reason = simulator_available(sim)
    if reason:
        pytest.skip(reason)


@pytest.fixture(scope="module")
def rtl():
    return fast_rtl()


def _run(sim, rtl, n, tmp, *, first=0, **kw):
    path, cycles, folding = rtl
    images, _ = mnist_images(n, first)
    # The compiled model is cached beside the RTL (rebuilt only when the RTL changes).
    build_dir = None if kw.get("waves") else path.parent.parent / f"build_{sim}"
    return simulate(sim=sim, rtl=path, qmodel_dir=QMODEL_DIR, images=images, out_dir=tmp,
                    folding=folding, quiet=True, build_dir=build_dir,
                    max_cycles=20 * (n * cycles["cycles_per_image"] + cycles["latency_cycles"]),
                    **kw), cycles


def _assert_clean(result, n):
    assert result["mismatches"] == []
    assert result["error"] is None
    assert len(result["outputs"]) == n
    assert all(o["match"] for o in result["outputs"])
    assert result["passed"]


@pytest.mark.parametrize("cases,passed", [
    ('<testcase name="stream"/>', True),
    ('<testcase name="stream"/><testcase name="reset_mid_image"/>', True),
    ('<testcase name="stream"><failure message="x"/></testcase>', False),
    ('<testcase name="stream"/><testcase name="b"><error message="x"/></testcase>', False),
    ("", False)])                                # no test ran: not a pass
def test_junit_verdict(tmp_path, cases, passed):
    xml = tmp_path / "results.xml"
    xml.write_text(f'<testsuites><testsuite name="t">{cases}</testsuite></testsuites>')
    assert runner._junit_passed(xml) is passed


def test_junit_verdict_of_a_missing_or_broken_file(tmp_path):
    assert runner._junit_passed(tmp_path / "none.xml") is False
    (tmp_path / "broken.xml").write_text("<testsuites>")
    assert runner._junit_passed(tmp_path / "broken.xml") is False


def test_find_waves_prefers_fst_then_the_first_folder(tmp_path):
    build, run = tmp_path / "build", tmp_path / "run"
    build.mkdir()
    run.mkdir()
    assert runner._find_waves(build, run) is None
    (run / "dump.vcd").write_text("")
    assert runner._find_waves(build, run) == str(run / "dump.vcd")
    (run / "b.fst").write_text("")
    (run / "a.fst").write_text("")
    assert runner._find_waves(build, run) == str(run / "a.fst")
    (build / "z.fst").write_text("")
    assert runner._find_waves(build, run) == str(build / "z.fst")


def test_build_without_the_simulator(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(SimulatorMissing) as info:
        runner.build("icarus", tmp_path / "top.v", tmp_path / "build")
    assert str(info.value).startswith("Icarus Verilog is missing")
    assert not (tmp_path / "build").exists()


@pytest.mark.sim
def test_icarus_images_and_taps(rtl, tmp_path):
    _need("icarus")
    result, _ = _run("icarus", rtl, 2, tmp_path, taps=True)
    _assert_clean(result, 2)
    assert result["divergence"] is None
    assert result["taps_checked"]["s1_c1"] == 2 * 28 * 28       # every tap beat compared
    assert result["results_xml"].endswith(".xml") and "testcase" in open(
        result["results_xml"]).read()


@pytest.mark.sim
def test_icarus_waves_fst(rtl, tmp_path):
    _need("icarus")
    result, _ = _run("icarus", rtl, 1, tmp_path, waves=True)
    _assert_clean(result, 1)
    assert result["waves"] and result["waves"].endswith(".fst")
    with open(result["waves"], "rb") as f:
        assert len(f.read(64)) == 64


@pytest.fixture(scope="module")
def verilator_run(rtl, tmp_path_factory):
    _need("verilator")
    return _run("verilator", rtl, 6, tmp_path_factory.mktemp("verilator"))


@pytest.mark.sim
def test_verilator_images(verilator_run):
    result, _ = verilator_run
    _assert_clean(result, 6)


@pytest.mark.sim
def test_verilator_cycles_per_image_equal_model(verilator_run):
    result, cycles = verilator_run
    times = [o["cycle"] for o in result["outputs"]]
    intervals = np.diff(times)
    # Steady state: every interval between results of back-to-back images.
    assert set(intervals[1:].tolist()) == {cycles["cycles_per_image"]}


@pytest.mark.sim
@pytest.mark.slow
def test_verilator_stress_gaps_backpressure(rtl, tmp_path):
    _need("verilator")
    n = 100
    result, _ = _run("verilator", rtl, n, tmp_path, first=100, gaps=0.3, backpressure=0.3,
                     seed=7)
    _assert_clean(result, n)                 # nothing lost, duplicated (+64 idle cycles) or bad

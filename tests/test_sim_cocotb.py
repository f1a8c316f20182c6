"""The cocotb testbench (sim/) on the real lenet5 RTL: results, cycles, stress, reset, faults."""

import copy

import numpy as np
import pytest

import golden
from sim.fixtures import QMODEL_DIR, fast_rtl, lenet5_qmodel, mnist_images
from sim.runner import simulate
from sim.tools import simulator_available

pytestmark = [pytest.mark.sim, pytest.mark.usefixtures("discard_unused_elaboratables"),
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


def test_icarus_images_and_taps(rtl, tmp_path):
    _need("icarus")
    result, _ = _run("icarus", rtl, 2, tmp_path, taps=True)
    _assert_clean(result, 2)
    assert result["divergence"] is None
    assert result["taps_checked"]["s1_c1"] == 2 * 28 * 28       # every tap beat compared
    assert result["results_xml"].endswith(".xml") and "testcase" in open(
        result["results_xml"]).read()


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


def test_verilator_images(verilator_run):
    result, _ = verilator_run
    _assert_clean(result, 6)


def test_verilator_cycles_per_image_equal_model(verilator_run):
    result, cycles = verilator_run
    times = [o["cycle"] for o in result["outputs"]]
    intervals = np.diff(times)
    # Steady state: every interval between results of back-to-back images.
    assert set(intervals[1:].tolist()) == {cycles["cycles_per_image"]}


@pytest.mark.slow
def test_verilator_stress_gaps_backpressure(rtl, tmp_path):
    _need("verilator")
    n = 100
    result, _ = _run("verilator", rtl, n, tmp_path, first=100, gaps=0.3, backpressure=0.3,
                     seed=7)
    _assert_clean(result, n)                 # nothing lost, duplicated (+64 idle cycles) or bad


def test_reset_mid_image(rtl, tmp_path):
    _need("icarus")
    result, _ = _run("icarus", rtl, 4, tmp_path, test="reset_mid_image")
    assert result["passed"], result["mismatches"]
    assert len(result["outputs"]) == 3
    assert result["mismatches"] == []


def _corrupt(model, layer):
    """Return arrays with the largest-magnitude weight of ``layer`` negated."""
    name = next(entry for entry in model.meta["layers"] if entry["name"] == layer)
    key = name["arrays"]["weight"]
    arrays = {k: np.array(v) for k, v in model.arrays.items()}
    w = arrays[key]
    index = np.unravel_index(np.argmax(np.abs(w)), w.shape)
    w[index] = -w[index] if w[index] != -128 else 127
    return arrays, key


def test_corrupted_weight_names_first_divergent_layer(tmp_path):
    _need("icarus")
    model = lenet5_qmodel()
    arrays, key = _corrupt(model, "c3")
    images, _ = mnist_images(1)
    meta = copy.deepcopy(model.meta)
    meta["arrays"][key]["sha256"] = golden.array_sha256(arrays[key])
    bad = golden.IntegerModel(meta, arrays).run(images, taps=True)["taps"]
    good = model.run(images, taps=True)["taps"]
    assert np.array_equal(bad["s2"], good["s2"]) and not np.array_equal(bad["c3"], good["c3"])
    # The hardware gets the corrupted weights, golden keeps the original ones.
    path, cycles, folding = fast_rtl("corrupt-c3", arrays=arrays)
    result = simulate(sim="icarus", rtl=path, qmodel_dir=QMODEL_DIR, images=images,
                      out_dir=tmp_path, folding=folding, taps=True, quiet=True)
    assert not result["passed"]
    d = result["divergence"]
    assert d is not None and d["layer"] == "c3", d
    assert d["image"] == 0
    c, h, w = good["c3"].shape[1:]
    y, x = divmod(d["position"], w)
    assert good["c3"][0, d["channel"], y, x] == d["expected"]
    assert bad["c3"][0, d["channel"], y, x] == d["got"]

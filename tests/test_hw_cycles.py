"""Cycle model (hw/cycles.py): exact against the RTL, MAC counts, derived folding."""

import json

import numpy as np
import pytest

from golden import random_images, random_qmodel
from hw.cycles import cycle_model, derive_folding, stage_table, write_cycles_json
from hw.plan import mac_cycles
from hw.simulation import discard_unused, run_stream
from hw.top import LeNetAccelerator

pytestmark = pytest.mark.filterwarnings("ignore::amaranth.hdl.UnusedElaboratable")


@pytest.fixture(autouse=True, scope="module")
def _discard_unused():
    yield
    discard_unused()


SMALL = [
    {"kind": "conv", "out_channels": 4, "kernel": 3},
    {"kind": "pool", "mode": "max", "size": 2},
    {"kind": "conv", "out_channels": 4, "kernel": 2, "padding": 1},
    {"kind": "dense", "out_features": 6},
    {"kind": "dense", "out_features": 3},
]

LENET5 = [
    {"kind": "conv", "out_channels": 6, "kernel": 5, "name": "c1"},
    {"kind": "pool", "mode": "max", "size": 2, "name": "s2"},
    {"kind": "conv", "out_channels": 16, "kernel": 5, "name": "c3"},
    {"kind": "pool", "mode": "max", "size": 2, "name": "s4"},
    {"kind": "dense", "out_features": 120, "name": "f5"},
    {"kind": "dense", "out_features": 84, "name": "f6"},
    {"kind": "dense", "out_features": 10, "name": "out"},
]


@pytest.fixture(scope="module")
def small():
    return random_qmodel(SMALL, 2, height=6, pad=1, calibration=4)


@pytest.fixture(scope="module")
def lenet():
    return random_qmodel(LENET5, 0, height=28, pad=2, calibration=2)


@pytest.mark.parametrize("folding", [
    None,                                                             # c1 bottleneck
    [{"pe": 4, "simd": 1}, {"pe": 1, "simd": 1}, {"pe": 1, "simd": 1}, {"pe": 1, "simd": 1}],
    [{"pe": 2, "simd": 1}, {"pe": 4, "simd": 2}, {"pe": 1, "simd": 4}, {"pe": 1, "simd": 1}],
    [{"pe": 4, "simd": 1}, {"pe": 4, "simd": 4}, {"pe": 6, "simd": 4}, {"pe": 3, "simd": 6}],
    [{"pe": 1, "simd": 1}, {"pe": 2, "simd": 2}, {"pe": 1, "simd": 1}, {"pe": 1, "simd": 2}],
])
def test_rtl_interval_and_latency_match_model(small, folding):
    meta, arrays = small
    model = cycle_model(meta, folding, arrays)
    n = 4
    images = random_images(meta, n, 0)
    top = LeNetAccelerator(meta, arrays, folding)
    _, times = run_stream(top, [[int(v)] for v in images.reshape(-1)] * 1, n)
    intervals = np.diff(times)
    assert intervals.tolist() == [model["cycles_per_image"]] * (n - 1)
    assert times[0] == model["latency_cycles"]


def test_stage_cycles(small):
    meta, _ = small
    stages = stage_table(meta, None)
    assert [s["kind"] for s in stages] == ["pad", "conv", "pool", "pad", "conv", "dense",
                                           "dense", "classify"]
    assert [s["cycles"] for s in stages] == [
        8 * 8, 6 * 6 * 4 * 9, 6 * 6, 5 * 5, 4 * 4 * 4 * 16, 6 * 4 * 16, 3 * 6, 1]


def test_lenet5_macs(lenet):
    meta, arrays = lenet
    model = cycle_model(meta, None, arrays)
    assert model["macs"] == 416_520 - 840 + 10 * 84      # dense output instead of RBF: same
    assert model["multipliers"] == 5
    assert model["cycles_per_image"] == max(s["cycles"] for s in model["stages"])
    assert set(model) == {"cycles_per_image", "latency_cycles", "multipliers", "macs", "stages"}


def test_sparse_macs():
    table = np.array([[1, 0], [1, 1], [0, 1]])
    spec = [{"kind": "conv", "out_channels": 2, "kernel": 3},
            {"kind": "conv", "out_channels": 3, "kernel": 3, "connections": table},
            {"kind": "dense", "out_features": 2}]
    meta, arrays = random_qmodel(spec, 0, height=6, calibration=2)
    conv2 = cycle_model(meta, None, arrays)["stages"][1]
    assert conv2["macs"] == 2 * 2 * 4 * 9                 # 4 connected pairs, 2x2 outputs
    assert cycle_model(meta, None)["stages"][1]["macs"] == 2 * 2 * 6 * 9     # no table: full


@pytest.mark.parametrize("target", [400_000, 100_000, 30_000, 19_600])
def test_derive_folding_is_cheapest(lenet, target):
    meta, _ = lenet
    folding = derive_folding(meta, target)
    model = cycle_model(meta, folding)
    assert model["cycles_per_image"] <= target
    macs = [s for s in stage_table(meta, folding) if "pe" in s]
    for stage in macs:                                  # no cheaper (pe, simd) meets the target
        c, h, w = stage["in_shape"]
        out_channels = stage["pe"] * stage["groups"]
        for pe in range(1, out_channels + 1):
            for simd in range(1, c + 1):
                if out_channels % pe or c % simd or pe * simd >= stage["multipliers"]:
                    continue
                assert mac_cycles(stage["in_shape"], stage["kernel"], out_channels,
                                  pe, simd) > target


def test_derive_folding_errors(lenet):
    meta, _ = lenet
    # SIMD divides the input channels: C1 (one input channel) needs 28·28·25 cycles at best.
    with pytest.raises(ValueError) as info:
        derive_folding(meta, 19_599)
    assert str(info.value) == ("layers[0] 'c1': no folding reaches 19599 cycles per image; "
                               "fully parallel it needs 19600; raise the target")
    with pytest.raises(TypeError) as info:
        derive_folding(meta, 0)
    assert str(info.value) == "target_cycles must be a positive integer, not 0"


def test_derive_folding_lenet5(lenet):
    meta, _ = lenet
    assert derive_folding(meta, 19_600) == [
        {"pe": 6, "simd": 1}, {"pe": 8, "simd": 2}, {"pe": 3, "simd": 1},
        {"pe": 1, "simd": 1}, {"pe": 1, "simd": 1}]
    assert cycle_model(meta, derive_folding(meta, 19_600))["multipliers"] == 6 + 16 + 3 + 1 + 1


def test_write_cycles_json(tmp_path, small):
    meta, arrays = small
    model = cycle_model(meta, None, arrays)
    path = write_cycles_json(model, tmp_path / "cycles.json")
    assert json.loads(path.read_text()) == json.loads(json.dumps(model))

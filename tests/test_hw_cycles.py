"""Cycle model (hw/cycles.py): exact against the RTL, MAC counts, derived folding."""

import json
import os

import numpy as np
import pytest

from core.config import LECUN_1998_C3
from golden import IntegerModel, random_images, random_qmodel
from hw.cycles import cycle_model, cycles_json_text, stage_table, write_cycles_json
from hw.folding import derive_folding
from hw.geometry import mac_cycles, simd_options
from hw.simulation import run_stream
from hw.top import LeNetAccelerator

pytestmark = [pytest.mark.usefixtures("discard_unused_elaboratables"),
              pytest.mark.filterwarnings("ignore::amaranth.hdl.UnusedElaboratable")]


SMALL = [
    {"kind": "conv", "out_channels": 4, "kernel": 3},
    {"kind": "pool", "mode": "max", "size": 2},
    {"kind": "conv", "out_channels": 4, "kernel": 2, "padding": 1},
    {"kind": "dense", "out_features": 6},
    {"kind": "dense", "out_features": 3},
]

@pytest.fixture(scope="module")
def small():
    return random_qmodel(SMALL, 2, height=6, pad=1, calibration=4)


@pytest.mark.parametrize("folding", [
    None,                                                             # c1 bottleneck
    [{"pe": 4, "simd": 1}, {"pe": 1, "simd": 1}, {"pe": 1, "simd": 1}, {"pe": 1, "simd": 1}],
    [{"pe": 2, "simd": 1}, {"pe": 4, "simd": 2}, {"pe": 1, "simd": 4}, {"pe": 1, "simd": 1}],
    [{"pe": 4, "simd": 1}, {"pe": 4, "simd": 4}, {"pe": 6, "simd": 4}, {"pe": 3, "simd": 6}],
    [{"pe": 1, "simd": 1}, {"pe": 2, "simd": 2}, {"pe": 1, "simd": 1}, {"pe": 1, "simd": 2}],
    # SIMD over taps and rows: (c_block, t, r) = (1, 3, 3), (4, 2, 1), (4, 4, 1), (3, 1, 1)
    [{"pe": 2, "simd": 9}, {"pe": 2, "simd": 8}, {"pe": 3, "simd": 16}, {"pe": 1, "simd": 3}],
    # (1, 3, 1), (4, 2, 2), (4, 4, 2), (6, 1, 1): whole windows, balanced stages
    [{"pe": 4, "simd": 3}, {"pe": 4, "simd": 16}, {"pe": 2, "simd": 32}, {"pe": 3, "simd": 6}],
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
    # The pool takes conv's beats of 1 channel; regroups: pool -> padder (whole positions of
    # 4), padder -> conv (one channel block of 1).
    assert [s["kind"] for s in stages] == ["pad", "conv", "pool", "regroup", "pad", "regroup",
                                           "conv", "dense", "dense", "classify"]
    assert [s["cycles"] for s in stages] == [
        8 * 8, 6 * 6 * 4 * 9, 6 * 6 * 4, 3 * 3 * 4, 5 * 5, 5 * 5 * 4, 4 * 4 * 4 * 16,
        6 * 4 * 16, 3 * 6, 3 + 1]
    assert [(s["n_in"], s["n_out"]) for s in stages if s["kind"] == "regroup"] == [
        (1, 4), (4, 1)]


def test_lenet5_macs(lenet5):
    meta, arrays = lenet5
    model = cycle_model(meta, None, arrays)
    assert model["macs"] == model["dense_macs"] == 416_520   # dense output: as many as RBF
    assert model["multipliers"] == 5
    assert model["cycles_per_image"] == max(s["cycles"] for s in model["stages"]) == 240_000
    assert model["latency_cycles"] == 341_120
    assert set(model) == {"cycles_per_image", "latency_cycles", "multipliers", "macs",
                          "dense_macs", "memory_bits", "stages"}
    assert model["memory_bits"]["weights"] == 8 * (150 + 2400 + 48_000 + 10_080 + 840)


@pytest.mark.parametrize("folding,cycles,multipliers", [
    # Hand folding: c1 pe6 simd5 (5 taps), c3 pe2 simd25 (5 taps x 5 rows), f5 pe10, f6 pe3.
    ([{"pe": 6, "simd": 5}, {"pe": 2, "simd": 25}, {"pe": 10, "simd": 1},
      {"pe": 3, "simd": 1}, {"pe": 1, "simd": 1}], 4800, 94),
    ("4800", 4800, 89),
    ("2400", 2400, 176),
])
def test_lenet5_fast_foldings_near_bound(lenet5, folding, cycles, multipliers):
    # The physical limit is MACs / multipliers; fine-grained SIMD gets within 10% of it.
    meta, arrays = lenet5
    if isinstance(folding, str):
        folding = derive_folding(meta, int(folding))
    model = cycle_model(meta, folding, arrays)
    assert (model["cycles_per_image"], model["multipliers"]) == (cycles, multipliers)
    assert model["cycles_per_image"] <= 1.1 * model["macs"] / model["multipliers"]


def test_sparse_macs():
    table = np.array([[1, 0], [1, 1], [0, 1]])
    spec = [{"kind": "conv", "out_channels": 2, "kernel": 3},
            {"kind": "conv", "out_channels": 3, "kernel": 3, "connections": table},
            {"kind": "dense", "out_features": 2}]
    meta, arrays = random_qmodel(spec, 0, height=6, calibration=2)
    model = cycle_model(meta, None, arrays)
    conv2 = model["stages"][1]
    assert conv2["macs"] == 2 * 2 * 4 * 9                 # 4 connected pairs, 2x2 outputs
    assert conv2["cycles"] == conv2["macs"]               # pe = simd = 1: one MAC per cycle
    assert model["dense_macs"] - model["macs"] == 2 * 2 * 2 * 9
    # Without the table the sparse layer's figures are unknowable: an error, never a silent
    # full count (sim.run once derived lenet5-1998's folding and cycles that way).
    with pytest.raises(ValueError, match=r"layer 'conv1' has a connection table "
                       r"\('conv1.connections'\) but no arrays were given; pass the integer "
                       r"model's arrays"):
        cycle_model(meta, None)


def _c3_table():
    """Return LeCun's C3 connection table (16 maps reading 6) as a 0/1 array."""
    table = np.zeros((16, 6), np.int64)
    for o, inputs in enumerate(LECUN_1998_C3):
        table[o, list(inputs)] = 1
    return table


def test_lecun1998_c3_skips_unconnected_pairs(lenet5_spec):
    lenet5_spec[2]["connections"] = _c3_table()
    meta, arrays = random_qmodel(lenet5_spec, 0, height=28, pad=2, calibration=2)
    model = cycle_model(meta, None, arrays)
    c3 = next(s for s in model["stages"] if s["name"] == "c3")
    assert c3["cycles"] == c3["macs"] == 60 * 25 * 100 == 150_000
    assert model["macs"] == 326_520 and model["dense_macs"] == 416_520
    assert model["cycles_per_image"] == 150_000
    folding = derive_folding(meta, 4800, arrays)
    assert cycle_model(meta, folding, arrays)["cycles_per_image"] <= 4800


@pytest.mark.parametrize("target", [400_000, 100_000, 30_000, 19_600, 4800, 2400, 1500])
def test_derive_folding_is_cheapest(lenet5, target):
    meta, _ = lenet5
    folding = derive_folding(meta, target)
    model = cycle_model(meta, folding)
    assert model["cycles_per_image"] <= target
    macs = [s for s in stage_table(meta, folding) if "pe" in s]
    for stage in macs:                                  # no cheaper (pe, simd) meets the target
        c, h, w = stage["in_shape"]
        out_channels = stage["pe"] * stage["groups"]
        window = c * stage["kernel"][0] * stage["kernel"][1]
        assert sorted(simd_options(c, *stage["kernel"])) == [
            d for d in range(1, window + 1) if window % d == 0]
        for pe in range(1, out_channels + 1):
            for simd in range(1, window + 1):
                if out_channels % pe or window % simd or pe * simd >= stage["multipliers"]:
                    continue
                assert mac_cycles(stage["in_shape"], stage["kernel"], out_channels,
                                  pe, simd) > target


def test_derive_folding_errors(lenet5):
    meta, _ = lenet5
    # Fully parallel, C1 still takes one input beat per cycle: 32·32.
    with pytest.raises(ValueError) as info:
        derive_folding(meta, 1023)
    assert str(info.value) == ("layers[0] 'c1': no folding reaches 1023 cycles per image; "
                               "fully parallel it needs 1024; raise the target")
    with pytest.raises(TypeError) as info:
        derive_folding(meta, 0)
    assert str(info.value) == "target_cycles must be a positive integer, not 0"


def test_derive_folding_lenet5(lenet5):
    meta, _ = lenet5
    assert derive_folding(meta, 19_600) == [
        {"pe": 6, "simd": 1}, {"pe": 1, "simd": 15}, {"pe": 3, "simd": 1},
        {"pe": 1, "simd": 1}, {"pe": 1, "simd": 1}]
    assert cycle_model(meta, derive_folding(meta, 19_600))["multipliers"] == 6 + 15 + 3 + 1 + 1
    assert derive_folding(meta, 4800) == [
        {"pe": 1, "simd": 25}, {"pe": 1, "simd": 50}, {"pe": 1, "simd": 10},
        {"pe": 1, "simd": 3}, {"pe": 1, "simd": 1}]


def test_write_cycles_json(tmp_path, small):
    meta, arrays = small
    model = cycle_model(meta, None, arrays)
    path = write_cycles_json(model, tmp_path / "cycles.json")
    assert json.loads(path.read_text()) == json.loads(json.dumps(model))
    assert path.read_text() == cycles_json_text(model)


def test_write_cycles_json_is_atomic(tmp_path, small, monkeypatch):
    # A write that fails (here at the rename into place) leaves the old file as it was and no
    # temporary file beside it.
    meta, arrays = small
    path = write_cycles_json({"old": 1}, tmp_path / "cycles.json")
    before = path.read_bytes()

    def fail(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", fail)
    with pytest.raises(OSError, match="^disk full$"):
        write_cycles_json(cycle_model(meta, None, arrays), path)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cycles.json"]


def _run_network(meta, arrays, folding, n, *, seed=3):
    """Stream ``n`` images back to back: bit-exact results, interval and latency of the model."""
    images = random_images(meta, n, seed)
    expected = IntegerModel(meta, arrays).run(images)
    model = cycle_model(meta, folding, arrays)
    top = LeNetAccelerator(meta, arrays, folding)
    beats = [[int(v)] for v in images.reshape(-1)]
    limit = model["latency_cycles"] + n * model["cycles_per_image"] + 100
    out, times = run_stream(top, beats, n, max_cycles=limit)
    assert [o["cls"] for o in out] == expected["classes"].tolist()
    assert [o["scores"] for o in out] == expected["scores"].tolist()
    assert np.diff(times).tolist() == [model["cycles_per_image"]] * (n - 1)
    assert times[0] == model["latency_cycles"]
    return model


# LeNet-5 in miniature (12x12 input, pad 2), with LeCun's C3 table on 6 -> 16 maps.
def _mini_lenet(spec, connections):
    spec = list(spec)
    spec[2] = dict(spec[2], kernel=3, connections=connections)
    spec[4] = dict(spec[4], out_features=12)
    spec[5] = dict(spec[5], out_features=8)
    spec[6] = dict(spec[6], out_features=4)
    return random_qmodel(spec, 7, height=12, pad=2, calibration=4)


@pytest.mark.parametrize("folding", [
    pytest.param(None, marks=pytest.mark.slow),          # ~45 s: pe = simd = 1 everywhere
    # c1 5 taps x 5 rows, c3 one channel block of 3x3 taps (sparse: skipped blocks), f5 whole
    # rows of 2 positions x 16 channels, f6 / out split channels.
    [{"pe": 2, "simd": 25}, {"pe": 4, "simd": 9}, {"pe": 3, "simd": 32}, {"pe": 2, "simd": 4},
     {"pe": 4, "simd": 8}],
    [{"pe": 6, "simd": 5}, {"pe": 2, "simd": 3}, {"pe": 12, "simd": 8}, {"pe": 1, "simd": 6},
     {"pe": 1, "simd": 1}],
])
def test_mini_lenet1998_rtl(folding, lenet5_spec):
    meta, arrays = _mini_lenet(lenet5_spec, _c3_table())
    model = _run_network(meta, arrays, folding, 3)
    assert model["macs"] < model["dense_macs"]


@pytest.mark.parametrize("which", ["minimal", "fast"])
@pytest.mark.slow
def test_lenet5_rtl_matches_model(lenet5, which):
    # Full LeNet-5 shape: bit-exact with golden, measured interval and latency equal the model.
    meta, arrays = lenet5
    if which == "minimal":
        folding, n = None, 2
    else:
        folding, n = [{"pe": 6, "simd": 5}, {"pe": 2, "simd": 25}, {"pe": 10, "simd": 1},
                      {"pe": 3, "simd": 1}, {"pe": 1, "simd": 1}], 3
    model = _run_network(meta, arrays, folding, n)
    assert model["cycles_per_image"] == (240_000 if which == "minimal" else 4800)


# Global average pooling: a 5x5 map (mul != 1, one multiplier per lane) after a conv, and a
# 4x4 map (mul = 1) after a pool; the gap stage takes the beats of pe channels it is given.
GAP_5X5 = [
    {"kind": "conv", "out_channels": 6, "kernel": 3},
    {"kind": "gap"},
    {"kind": "dense", "out_features": 4},
    {"kind": "dense", "out_features": 3},
]
GAP_4X4 = [
    {"kind": "conv", "out_channels": 4, "kernel": 3, "padding": 1},
    {"kind": "pool", "mode": "max", "size": 2},
    {"kind": "conv", "out_channels": 8, "kernel": 1},
    {"kind": "gap"},
    {"kind": "dense", "out_features": 3},
]


@pytest.mark.parametrize("spec,height,folding", [
    (GAP_5X5, 7, None),
    (GAP_5X5, 7, [{"pe": 2, "simd": 3}, {"pe": 4, "simd": 6}, {"pe": 3, "simd": 2}]),
    (GAP_5X5, 7, [{"pe": 6, "simd": 9}, {"pe": 1, "simd": 2}, {"pe": 1, "simd": 4}]),
    (GAP_4X4, 8, None),
    (GAP_4X4, 8, [{"pe": 4, "simd": 9}, {"pe": 8, "simd": 4}, {"pe": 3, "simd": 8}]),
])
def test_gap_network_rtl(spec, height, folding):
    meta, arrays = random_qmodel(spec, 5, height=height, calibration=4)
    model = _run_network(meta, arrays, folding, 3)
    gap = next(s for s in model["stages"] if s["kind"] == "gap")
    area = 25 if spec is GAP_5X5 else 16
    before = 0 if spec is GAP_5X5 else 1                    # the MAC layer before the gap
    lanes = 1 if folding is None else folding[before]["pe"]
    channels = 6 if spec is GAP_5X5 else 8
    assert gap["cycles"] == area * channels // lanes
    assert gap["multipliers"] == (lanes if spec is GAP_5X5 else 0)

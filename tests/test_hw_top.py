"""LeNetAccelerator (hw/top.py) on small random integer models against IntegerModel.run."""

import pytest
from amaranth.lib import data as lib_data
from amaranth.sim import Simulator

from golden import IntegerModel, random_images, random_qmodel
from hw.simulation import run_stream
from hw.top import LeNetAccelerator, LeNetAxiStream

pytestmark = pytest.mark.filterwarnings("ignore::amaranth.hdl.UnusedElaboratable")


# Every stage kind: LUT conv, subsampling, a padded sparse conv, max pooling, dense, RBF.
SPEC_RBF = [
    {"kind": "conv", "out_channels": 4, "kernel": 3, "activation": "tanh"},
    {"kind": "subsample", "size": 2, "activation": "scaled_tanh"},
    {"kind": "conv", "out_channels": 4, "kernel": 3, "padding": 1, "connections": "random",
     "activation": "none"},
    {"kind": "pool", "mode": "max", "size": 3},
    {"kind": "dense", "out_features": 6, "activation": "sigmoid"},
    {"kind": "rbf", "out_features": 3},
]
# The modern form: ReLU convs (the first with its own padding), avg pooling, dense to scores.
SPEC_DENSE = [
    {"kind": "conv", "out_channels": 3, "kernel": 3, "padding": 1},
    {"kind": "pool", "mode": "avg", "size": 2},
    {"kind": "conv", "out_channels": 4, "kernel": 2},
    {"kind": "dense", "out_features": 5},
    {"kind": "dense", "out_features": 4},
]

# Global average pooling of a 3x3 map (a multiplier per lane) after LeCun's subsampling.
SPEC_GAP = [
    {"kind": "conv", "out_channels": 4, "kernel": 3, "padding": 1, "activation": "tanh"},
    {"kind": "subsample", "size": 2, "activation": "none"},
    {"kind": "gap"},
    {"kind": "dense", "out_features": 3},
]


def _check(spec, folding, *, seed, pad, n=3, gap=0.2, stall=0.2):
    meta, arrays = random_qmodel(spec, seed, height=6, pad=pad, calibration=8)
    images = random_images(meta, n, seed + 1)
    expected = IntegerModel(meta, arrays).run(images)
    top = LeNetAccelerator(meta, arrays, folding)
    beats = [[int(v)] for v in images.reshape(-1)]
    out, _ = run_stream(top, beats, n, seed=seed, gap=gap, stall=stall)
    assert [o["cls"] for o in out] == expected["classes"].tolist()
    assert [o["scores"] for o in out] == expected["scores"].tolist()
    assert all(o["last"] == 1 for o in out)


@pytest.mark.parametrize("folding", [
    None,
    [{"pe": 2, "simd": 1}, {"pe": 4, "simd": 2}, {"pe": 3, "simd": 2}, {"pe": 1, "simd": 6}],
    [{"pe": 4, "simd": 1}, {"pe": 4, "simd": 4}, {"pe": 6, "simd": 4}, {"pe": 3, "simd": 6}],
])
def test_rbf_network(folding):
    _check(SPEC_RBF, folding, seed=1, pad=1)


@pytest.mark.parametrize("folding", [
    None,
    [{"pe": 3, "simd": 1}, {"pe": 4, "simd": 3}, {"pe": 5, "simd": 4}, {"pe": 4, "simd": 5}],
])
def test_dense_network(folding):
    _check(SPEC_DENSE, folding, seed=4, pad=0, stall=0.5)


@pytest.mark.parametrize("folding", [
    None,
    [{"pe": 2, "simd": 9}, {"pe": 3, "simd": 2}],
    [{"pe": 4, "simd": 3}, {"pe": 1, "simd": 4}],
])
def test_gap_network(folding):
    _check(SPEC_GAP, folding, seed=6, pad=0, stall=0.4)


def test_properties():
    meta, arrays = random_qmodel(SPEC_DENSE, 4, height=6, calibration=4)
    top = LeNetAccelerator(meta, arrays)
    assert top.folding == [{"pe": 1, "simd": 1}] * 4
    assert [type(st).__name__ for st in top.stages] == [
        "Padder", "MacStage", "PoolStage", "MacStage", "MacStage", "MacStage", "ClassifyStage"]
    # pe = 1 everywhere: beats of one channel from the first MAC to the classifier, no
    # regrouping needed.


def test_axi_stream_wrapper():
    meta, arrays = random_qmodel(SPEC_DENSE, 4, height=6, calibration=4)
    images = random_images(meta, 2, 9)
    expected = IntegerModel(meta, arrays).run(images)
    dut = LeNetAxiStream(meta, arrays, [{"pe": 3, "simd": 1}, {"pe": 4, "simd": 3},
                                        {"pe": 5, "simd": 4}, {"pe": 4, "simd": 5}])
    layout = dut.core.o.payload.shape()
    results = []

    async def source(ctx):
        for pixel in images.reshape(-1):
            ctx.set(dut.s_axis_tdata, int(pixel))
            ctx.set(dut.s_axis_tvalid, 1)
            await ctx.tick().until(dut.s_axis_tready)
        ctx.set(dut.s_axis_tvalid, 0)

    async def sink(ctx):
        ctx.set(dut.m_axis_tready, 1)
        while len(results) < len(images):
            _, _, valid, data, last = await ctx.tick().sample(
                dut.m_axis_tvalid, dut.m_axis_tdata, dut.m_axis_tlast)
            if valid:
                assert last == 1
                results.append(lib_data.Const(layout, data & ((1 << layout.size) - 1)))

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(source, background=True)
    sim.add_testbench(sink)
    sim.run()
    assert [r.cls for r in results] == expected["classes"].tolist()
    assert [[r.scores[k] for k in range(4)] for r in results] == expected["scores"].tolist()

"""Folding checks and the stage table (hw/plan.py)."""

import pytest

from golden import random_qmodel
from hw.folding import check_folding
from hw.plan import layer_shapes, plan
from hw.simulation import discard_unused

pytestmark = pytest.mark.filterwarnings("ignore::amaranth.hdl.UnusedElaboratable")


@pytest.fixture(autouse=True, scope="module")
def _discard_unused():
    yield
    discard_unused()

SPEC = [
    {"kind": "conv", "out_channels": 6, "kernel": 3, "name": "c1"},
    {"kind": "pool", "mode": "max", "size": 2, "name": "s2"},
    {"kind": "conv", "out_channels": 4, "kernel": 3, "padding": 1, "name": "c3"},
    {"kind": "dense", "out_features": 5, "name": "f4"},
    {"kind": "dense", "out_features": 3, "name": "out"},
]


@pytest.fixture(scope="module")
def meta():
    return random_qmodel(SPEC, 0, height=10, calibration=4)[0]


def test_fine_grained_folding(meta):
    # SIMD spans channels, taps of a row and rows: c1 (one channel) takes 3 or 9, f4 any
    # divisor of its 64 features that splits as 4 channels x 4 columns x 4 rows.
    folding = [{"pe": 6, "simd": 9}, {"pe": 4, "simd": 18}, {"pe": 5, "simd": 64},
               {"pe": 3, "simd": 5}]
    assert check_folding(meta, folding) == folding
    assert check_folding(meta, [{"simd": 3}, {"simd": 3}, {"simd": 8}, {}])[2]["simd"] == 8


def test_default_folding(meta):
    assert check_folding(meta, None) == [{"pe": 1, "simd": 1}] * 4


def test_shapes(meta):
    assert layer_shapes(meta) == [(1, 10, 10), (6, 8, 8), (6, 4, 4), (4, 4, 4), (5, 1, 1)]


@pytest.mark.parametrize("folding,message", [
    ([{"pe": 1, "simd": 1}] * 3,
     "folding has 3 entries but the model has 4 MAC layers (c1, c3, f4, out); give one "
     "{'pe', 'simd'} per MAC layer"),
    ([{"pe": 4, "simd": 1}, {}, {}, {}], "layers[0] 'c1': pe=4 does not divide out_channels=6"),
    ([{}, {"simd": 4}, {}, {}],
     "layers[2] 'c3': simd=4 does not divide the window kh·kw·C = 3·3·6 = 54"),
    ([{"simd": 2}, {}, {}, {}],
     "layers[0] 'c1': simd=2 does not divide the window kh·kw·C = 3·3·1 = 9"),
    ([{}, {}, {"simd": 3}, {}],
     "layers[3] 'f4': simd=3 does not divide in_features=64 (4 channels x 4x4 positions)"),
    ([{}, {}, {}, {"simd": 2}], "layers[4] 'out': simd=2 does not divide in_features=5"),
    ([{}, {}, {}, {"pe": 0}], "layers[4] 'out': pe=0 must be a positive integer"),
    ([{}, {}, {}, {"pe": 1, "lanes": 2}],
     "layers[4] 'out': folding entry {'pe': 1, 'lanes': 2} must be a dict with keys 'pe' "
     "and 'simd' (and optionally 'mul')"),
    ([{}, {}, {}, {"mul": "dsp48"}],
     "layers[4] 'out': mul='dsp48' must be 'dsp' (the * operator: DSP blocks where the device "
     "has them) or 'lut' (adders only)"),
])
def test_bad_folding(meta, folding, message):
    with pytest.raises(ValueError) as info:
        check_folding(meta, folding)
    assert str(info.value) == message


def test_plan_stages(meta):
    from hw.top import LeNetAccelerator
    stages = LeNetAccelerator(meta, random_qmodel(SPEC, 0, height=10, calibration=4)[1]).stages
    kinds = [type(s).__name__ for s in stages]
    # The padder takes whole positions: a gather of c1's one-channel beats before it, a split
    # into c3's one-channel blocks after it.
    assert kinds == ["MacStage", "PoolStage", "Regroup", "Padder", "Regroup", "MacStage",
                     "MacStage", "MacStage", "ClassifyStage"]
    assert [(s.n_in, s.n_out) for s in stages if kinds[stages.index(s)] == "Regroup"] == [
        (1, 6), (6, 1)]
    assert [s.label for s in stages if hasattr(s, "label")] == [
        "layers[0] 'c1'", "layers[1] 's2'", "layers[2] 'c3'", "layers[3] 'f4'",
        "layers[4] 'out'"]


def test_plan_without_final_layer(meta):
    meta = dict(meta, layers=[dict(layer) for layer in meta["layers"]])
    meta["layers"][-1]["final"] = False
    with pytest.raises(ValueError) as info:
        plan(meta, {})
    assert str(info.value) == "layers[4] 'out': the last layer must be a final dense or rbf layer"

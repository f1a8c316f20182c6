"""The stage plan (hw/plan.py): the registry entries, the chain of stages, folding checks."""

import pytest

from core.kinds import exported_kinds, mac_kinds
from golden import random_qmodel
from hw.folding import check_folding
from hw.geometry import MacGeometry
from hw.plan import STAGES, LayerStages, layer_plans, layer_shapes, mac_layers, plan
from hw.top import LeNetAccelerator

pytestmark = [pytest.mark.usefixtures("discard_unused_elaboratables"),
              pytest.mark.filterwarnings("ignore::amaranth.hdl.UnusedElaboratable")]

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
        plan(meta)
    assert str(info.value) == "layers[4] 'out': the last layer must be a final dense or rbf layer"


def test_every_exported_kind_has_a_stage():
    assert STAGES.missing() == ()
    assert set(STAGES.kinds()) == set(exported_kinds())


def test_mac_geometry_per_entry(meta):
    # The conv window slides over its padded input; a dense layer's window is its whole input.
    assert [layer.name for layer in mac_layers(meta)] == ["c1", "c3", "f4", "out"]
    assert [layer.kind in mac_kinds() for layer in layer_plans(meta)] == [
        True, False, True, True, True]
    assert [layer.geometry for layer in mac_layers(meta)] == [
        MacGeometry((1, 10, 10), (3, 3), 6, False), MacGeometry((6, 6, 6), (3, 3), 4, False),
        MacGeometry((4, 4, 4), (4, 4), 5, True), MacGeometry((5, 1, 1), (1, 1), 3, True)]
    assert [layer.padding for layer in layer_plans(meta)] == [0, 0, 1, 0, 0]


def test_mac_window_is_the_kinds(meta):
    # The products per output come from core.kinds (LayerKind.mac_window) and equal the MAC
    # geometry's kh·kw·C; a simd that does not divide them is refused with the kind's figure.
    assert [layer.window for layer in layer_plans(meta)] == [9, None, 54, 64, 5]
    c3, f4 = mac_layers(meta)[1:3]
    assert c3.simd_error(18) is None
    assert c3.simd_error(4) == ("layers[2] 'c3': simd=4 does not divide the window kh·kw·C = "
                                "3·3·6 = 54")
    assert f4.simd_error(5) == ("layers[3] 'f4': simd=5 does not divide in_features=64 "
                                "(4 channels x 4x4 positions)")


GAP_SPEC = [
    {"kind": "conv", "out_channels": 6, "kernel": 3, "name": "c1"},
    {"kind": "gap", "name": "g2"},
    {"kind": "dense", "out_features": 3, "name": "out"},
]


def test_only_the_last_layer_is_final():
    meta, _ = random_qmodel(GAP_SPEC, 1, height=7, calibration=4)
    meta = dict(meta, layers=[dict(layer) for layer in meta["layers"]])
    meta["layers"][0]["final"] = True
    with pytest.raises(ValueError) as info:
        plan(meta)
    assert str(info.value) == "layers[0] 'c1': only the last layer can be final"


def test_an_entry_without_stages_cannot_be_made():
    # LayerStages is abstract: an entry of a new kind that forgets `stages` fails when it is
    # made, not when the plan first asks it for its stages.
    class NoStages(LayerStages):
        pass

    with pytest.raises(TypeError, match=r"abstract method '?stages'?"):
        NoStages(0, {"kind": "gap", "name": "g"}, (2, 3, 3))

"""Planned stages (hw/stages.py): the figures of each planned stage equal its component's."""

import pytest

from golden import random_qmodel
from hw.cycles import cycle_model
from hw.plan import plan
from hw.stages import PlannedStage, accept_times, lut_bits
from hw.top import LeNetAccelerator

pytestmark = [pytest.mark.usefixtures("discard_unused_elaboratables"),
              pytest.mark.filterwarnings("ignore::amaranth.hdl.UnusedElaboratable")]


GAP_SPEC = [
    {"kind": "conv", "out_channels": 6, "kernel": 3, "name": "c1"},
    {"kind": "gap", "name": "g2"},
    {"kind": "dense", "out_features": 3, "name": "out"},
]

# Every planned stage class: padders (input and c3's), regroups, MAC stages with a LUT
# activation and a connection table, subsampling, average and max pools, the classifier.
MIXED_SPEC = [
    {"kind": "conv", "out_channels": 4, "kernel": 3, "activation": "tanh", "name": "c1"},
    {"kind": "subsample", "size": 2, "name": "s2"},
    {"kind": "conv", "out_channels": 4, "kernel": 2, "padding": 1, "connections": "random",
     "name": "c3"},
    {"kind": "pool", "mode": "avg", "size": 2, "name": "s4"},
    {"kind": "pool", "mode": "max", "size": 2, "name": "s5"},
    {"kind": "rbf", "out_features": 3, "name": "out"},
]


def test_planned_stages_match_components():
    meta, arrays = random_qmodel(MIXED_SPEC, 2, height=14, pad=1, calibration=4)
    folding = [{"pe": 2, "simd": 3}, {"pe": 2, "simd": 2}, {"pe": 1, "simd": 4}]
    top = LeNetAccelerator(meta, arrays, folding)
    for stage, component in zip(top.plan, top.stages, strict=True):
        assert stage.latency == component.latency, stage.name
        if hasattr(component, "cycles"):                  # a Regroup does not know its image
            assert stage.cycles == component.cycles, stage.name
        if hasattr(component, "resources"):
            assert stage.resources == component.resources(), stage.name
    assert [type(s).__name__ for s in top.plan] == [
        "PlannedPadder", "PlannedMac", "PlannedPool", "PlannedRegroup", "PlannedPadder",
        "PlannedRegroup", "PlannedMac", "PlannedPool", "PlannedPool", "PlannedRegroup",
        "PlannedMac", "PlannedClassifier"]
    assert top.plan[1].lut_bits == lut_bits(meta["layers"][0]) > 0


def test_planned_stages_build_the_accelerator():
    # One planned stage per component, the same figures as the cycle model; the gap stage
    # takes c1's beats of pe = 3 channels, the dense layer one block of simd = 6 channels.
    meta, arrays = random_qmodel(GAP_SPEC, 1, height=7, calibration=4)
    folding = [{"pe": 3, "simd": 1}, {"pe": 1, "simd": 6}]
    planned = plan(meta, folding, arrays)
    top = LeNetAccelerator(meta, arrays, folding)
    assert [type(s).__name__ for s in top.plan] == [
        "PlannedMac", "PlannedGap", "PlannedRegroup", "PlannedMac", "PlannedClassifier"]
    assert [type(s).__name__ for s in top.stages] == [
        "MacStage", "GapStage", "Regroup", "MacStage", "ClassifyStage"]
    assert [(s.kind, s.cycles, s.in_lanes, s.out_lanes) for s in planned] == [
        ("conv", 25 * 9 * 2, 1, 3), ("gap", 25 * 2, 3, 3), ("regroup", 2, 3, 6),
        ("dense", 3, 6, 1), ("classify", 4, 1, 1)]
    for stage, component in zip(top.plan, top.stages, strict=True):
        if hasattr(component, "cycles"):
            assert stage.cycles == component.cycles
        if hasattr(component, "resources"):
            assert stage.resources == component.resources()
        if hasattr(component, "latency"):
            assert stage.latency == component.latency
    model = cycle_model(meta, folding, arrays)
    assert [s["cycles"] for s in model["stages"]] == [s.cycles for s in planned]
    gap = planned[1]
    assert (gap.mul, gap.shift, gap.multipliers) == (41943, 20, 3)


def test_plan_needs_arrays_to_build():
    meta, arrays = random_qmodel(GAP_SPEC, 1, height=7, calibration=4)
    stage = plan(meta)[0]
    assert stage.cycles == 25 * 6 * 9
    with pytest.raises(ValueError) as info:
        stage.build()
    assert str(info.value) == ("layers[0] 'c1': building its stage needs the integer model's "
                               "arrays")


def test_accept_times():
    # One beat per cycle at most, never before it is valid.
    assert accept_times([0, 0, 0, 5, 5, 9]) == [0, 1, 2, 5, 6, 9]
    assert accept_times([]) == []


def test_lut_bits():
    fmt = {"bits": 6, "frac": 4, "signed": True}
    lut = {"kind": "lut", "in_bits": 7, "in_frac": 3}
    assert lut_bits({"activation": lut, "out_format": fmt}) == 128 * 6
    assert lut_bits({"activation": lut, "out_format": fmt, "final": True}) == 0
    assert lut_bits({"activation": {"kind": "relu"}, "out_format": fmt}) == 0
    assert lut_bits({"out_format": fmt}) == 0


@pytest.mark.parametrize("missing", ["times", "build"])
def test_a_stage_without_times_or_build_cannot_be_made(missing):
    # PlannedStage is abstract: a stage class lacking either fails when it is made.
    methods = {name: lambda self, *args: None for name in ("times", "build") if name != missing}
    stage = type("Partial", (PlannedStage,), methods)
    with pytest.raises(TypeError, match=f"abstract method '?{missing}'?"):
        stage("s", "s")

"""sim.testbench: the testbench's pure-Python parts (packing with the hardware's layouts, the
golden tap beats, the scoreboard, divergence location), and the divergence found in simulation
on hardware built from a corrupted weight."""

import copy
import json
from types import SimpleNamespace

import numpy as np
import pytest
from amaranth.lib import data

import golden
from hw.simulation import discard_unused
from hw.top import LeNetAccelerator
from sim import testbench as tb
from sim.fixtures import QMODEL_DIR, fast_rtl, lenet5_qmodel, mnist_images
from sim.runner import simulate
from sim.tools import simulator_available

pytestmark = [pytest.mark.usefixtures("discard_unused_elaboratables"),
              pytest.mark.filterwarnings("ignore::amaranth.hdl.UnusedElaboratable")]

SPEC = [{"kind": "conv", "out_channels": 2, "kernel": 3, "padding": 1},
        {"kind": "pool", "mode": "max", "size": 2}, {"kind": "dense", "out_features": 3}]
FOLDING = [{"pe": 2, "simd": 1}, {"pe": 1, "simd": 1}]


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    """A small integer model saved to a folder, its accelerator, and two random images."""
    folder = tmp_path_factory.mktemp("qmodel")
    meta, arrays = golden.random_qmodel(SPEC, 0, height=6, pad=1, calibration=4)
    golden.save(meta, arrays, folder)
    top = LeNetAccelerator(meta, arrays, FOLDING)
    images = golden.random_images(meta, 2, 1)
    small = SimpleNamespace(folder=folder, meta=meta, top=top, images=images)
    yield small
    del small.top, top                  # built to read its layouts, never elaborated
    discard_unused()


def test_plan_from_env(monkeypatch, tmp_path):
    monkeypatch.delenv("SIM_LENET_PLAN", raising=False)
    with pytest.raises(RuntimeError) as info:
        tb.Plan.from_env()
    assert str(info.value) == ("SIM_LENET_PLAN is not set; run the testbench through "
                               "sim.runner.simulate() (python -m sim.run)")
    plan = tb.Plan(qmodel_dir="q", images="i.npy", results="r.json", folding=FOLDING,
                   gaps=0.25, taps=True)
    (tmp_path / "plan.json").write_text(json.dumps(plan.__dict__))
    monkeypatch.setenv("SIM_LENET_PLAN", str(tmp_path / "plan.json"))
    assert tb.Plan.from_env() == plan


def test_pause_generator():
    never, always = tb.pause_generator(0.0, 1), tb.pause_generator(1.0, 1)
    assert [next(never) for _ in range(50)] == [False] * 50
    assert [next(always) for _ in range(50)] == [True] * 50
    a, b = tb.pause_generator(0.3, 7), tb.pause_generator(0.3, 7)
    first = [next(a) for _ in range(200)]
    assert first == [next(b) for _ in range(200)] and True in first and False in first


def test_stage_instances_and_layer_names(small):
    stages = tb.stage_instances(small.top)
    assert [name for name, _ in stages] == ["s0_padder", "s1_conv0", "s2_pool1", "s3_regroup",
                                            "s4_dense2", "s5_classifystage"]
    assert [tb.layer_name(stage) for _, stage in stages] == [None, "conv0", "pool1", None,
                                                            "dense2", None]


def test_image_beats_unpack_to_the_pixels(small):
    bench = tb.Testbench.__new__(tb.Testbench)          # only the packing, no simulator
    bench.in_layout, bench._packed = small.top.i.payload.shape(), {}
    image = small.images[0]
    beats = bench.image_beats(image)
    assert len(beats) == image.size
    pixels = [int(data.Const(bench.in_layout, b)[0]) for b in beats]
    assert pixels == image.reshape(-1).tolist()          # positions row-major
    multi = np.stack([image, 255 - image])               # two channels: one beat per position
    bench.in_layout = data.ArrayLayout(8, 2)
    beats = bench.image_beats(multi)
    assert [[int(data.Const(bench.in_layout, b)[c]) for c in range(2)] for b in beats] == \
        multi.reshape(2, -1).T.tolist()


def _pack(layout, lanes):
    return layout.const([int(v) for v in lanes]).as_bits()


@pytest.fixture
def monitor(small, monkeypatch):
    """A TapMonitor on the golden tap beats of ``small`` (no simulator: a fake dut)."""
    model = tb.GoldenModel(small.folder, small.images, taps=True)
    taps = model.tap_beats(tb.stage_instances(small.top))
    dut = SimpleNamespace(**{t.instance: SimpleNamespace(o__valid=None, o__ready=None,
                                                         o__payload=None) for t in taps})
    monkeypatch.setattr(tb.TapMonitor, "cycle", lambda self: 1234)
    return model, tb.TapMonitor(dut, taps, period_ns=10)


def test_tap_beats_follow_the_hardware_layouts(small, monitor):
    model, mon = monitor
    taps = {t.instance: t for t in mon.taps}
    assert list(taps) == ["s0_padder", "s1_conv0", "s2_pool1", "s3_regroup", "s4_dense2"]
    pad = small.top.stages[0].pad                 # the input's and conv0's padding, together
    assert pad == 2
    padded = np.pad(small.images, ((0, 0), (pad, pad), (pad, pad)))
    assert np.array_equal(taps["s0_padder"].expected[..., 0], padded.reshape(2, -1))
    conv = model.result["taps"]["conv0"]                          # [N, 2, 8, 8], 2 lanes
    assert np.array_equal(taps["s1_conv0"].expected, conv.transpose(0, 2, 3, 1).reshape(2, 64,
                                                                                      2))
    pool = model.result["taps"]["pool1"]                          # regrouped to 1 lane
    assert taps["s3_regroup"].blocks == 2
    assert np.array_equal(taps["s3_regroup"].expected[..., 0],
                          pool.transpose(0, 2, 3, 1).reshape(2, -1))
    assert np.array_equal(taps["s4_dense2"].expected[..., 0], model.scores)


def _feed(mon, change=None):
    """Feed every tap its expected beats, stage by stage; ``change`` alters one beat."""
    for tap in mon.taps:
        for image in range(tap.expected.shape[0]):
            for index, lanes in enumerate(tap.expected[image]):
                lanes = lanes.copy()
                if change and change[0] == tap.instance and change[1:3] == (image, index):
                    lanes[change[3]] ^= 1
                mon._check(tap, _pack(tap.layout, lanes))


def test_matching_beats_leave_no_divergence(monitor):
    _, mon = monitor
    _feed(mon)
    assert mon.first_divergence() is None
    assert [t.beats for t in mon.taps] == [t.expected.shape[0] * t.expected.shape[1]
                                           for t in mon.taps]


def test_divergence_names_layer_image_position_and_channel(monitor):
    model, mon = monitor
    # Image 1, position 9 (row 1, column 1 of 8), the beat of lanes 0-1: channel 1 differs.
    _feed(mon, change=("s1_conv0", 1, 9, 1))
    want = int(model.result["taps"]["conv0"][1, 1, 1, 1])
    assert mon.first_divergence() == {"layer": "conv0", "instance": "s1_conv0", "image": 1,
                                      "position": 9, "channel": 1, "expected": want,
                                      "got": want ^ 1, "cycle": 1234}


def test_the_earliest_stage_is_the_first_divergence(monitor):
    _, mon = monitor
    regroup = next(t for t in mon.taps if t.instance == "s3_regroup")
    mon._check(regroup, _pack(regroup.layout, [regroup.expected[0, 0, 0] ^ 1]))  # seen first
    _feed(mon, change=("s1_conv0", 0, 3, 0))                    # an earlier stage, seen later
    d = mon.first_divergence()
    assert (d["instance"], d["image"], d["position"], d["channel"]) == ("s1_conv0", 0, 3, 0)
    assert (regroup.first["layer"], regroup.first["position"]) == ("s3_regroup", 0)


def test_beats_after_the_last_image_are_counted_not_compared(monitor):
    _, mon = monitor
    _feed(mon)
    padder = mon.taps[0]
    mon._check(padder, _pack(padder.layout, [padder.expected[0, 0, 0] ^ 1]))
    assert mon.first_divergence() is None
    assert padder.beats == padder.expected.shape[0] * padder.expected.shape[1] + 1


def test_a_regrouped_beat_names_its_channel(monitor):
    model, mon = monitor
    regroup = next(t for t in mon.taps if t.instance == "s3_regroup")
    for index in range(5):                      # position 2, block 1 is beat index 5
        mon._check(regroup, _pack(regroup.layout, regroup.expected[0, index]))
    got = int(regroup.expected[0, 5, 0]) ^ 1
    mon._check(regroup, _pack(regroup.layout, [got]))
    assert regroup.first == {"layer": "s3_regroup", "instance": "s3_regroup", "image": 0,
                             "position": 2, "channel": 1, "expected": got ^ 1, "got": got,
                             "cycle": 1234}


class Log:
    def __init__(self):
        self.lines = []

    def error(self, fmt, *args):
        self.lines.append(fmt % args)


def test_scoreboard_compares_class_and_every_score(small):
    model = tb.GoldenModel(small.folder, small.images)
    layout = small.top.o.payload.shape()
    log = Log()
    board = tb.Scoreboard(model, log=log)
    scores = [int(v) for v in model.scores[0]]
    board(10, layout.const({"cls": int(model.classes[0]), "scores": scores, "last": 1}))
    wrong = [int(v) for v in model.scores[1]]
    wrong[2] += 1
    board(20, layout.const({"cls": int(model.classes[1]), "scores": wrong, "last": 1}))
    board(30, layout.const({"cls": 0, "scores": [0, 0, 0], "last": 1}))
    assert board.received == [
        {"cls": int(model.classes[0]), "scores": scores, "last": 1, "cycle": 10, "match": True},
        {"cls": int(model.classes[1]), "scores": wrong, "last": 1, "cycle": 20, "match": False},
        {"cls": 0, "scores": [0, 0, 0], "last": 1, "cycle": 30, "match": False}]
    want = [int(v) for v in model.scores[1]]
    assert board.mismatches == [
        {"image": 1, "expected_cls": int(model.classes[1]), "got_cls": int(model.classes[1]),
         "bad_scores": [2], "expected_scores": want, "got_scores": wrong},
        {"image": 2, "reason": "unexpected extra output beat"}]
    assert log.lines == [f"image 1: expected class {int(model.classes[1])} scores {want}, got "
                         f"class {int(model.classes[1])} scores {wrong}"]


def test_scoreboard_wants_last_set(small):
    model = tb.GoldenModel(small.folder, small.images[:1])
    layout = small.top.o.payload.shape()
    board = tb.Scoreboard(model)
    board(1, layout.const({"cls": int(model.classes[0]),
                           "scores": [int(v) for v in model.scores[0]], "last": 0}))
    assert board.received[0]["match"] is False and board.mismatches[0]["bad_scores"] == []


def _corrupt(model, layer):
    """Return arrays with the largest-magnitude weight of ``layer`` negated."""
    name = next(entry for entry in model.meta["layers"] if entry["name"] == layer)
    key = name["arrays"]["weight"]
    arrays = {k: np.array(v) for k, v in model.arrays.items()}
    w = arrays[key]
    index = np.unravel_index(np.argmax(np.abs(w)), w.shape)
    w[index] = -w[index] if w[index] != -128 else 127
    return arrays, key


@pytest.mark.sim
def test_corrupted_weight_names_first_divergent_layer(tmp_path):
    reason = simulator_available("icarus")
    if reason:
        pytest.skip(reason)
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

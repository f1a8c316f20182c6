"""ClassifyStage (hw/output.py) against golden classify: lowest index on ties."""

import numpy as np
import pytest

from golden import layers as L
from hw.output import ClassifyStage
from hw.simulation import run_cycles, run_stream

pytestmark = pytest.mark.filterwarnings("ignore::amaranth.hdl.UnusedElaboratable")



@pytest.mark.parametrize("kind", ["argmax", "argmin"])
def test_classify(kind):
    rng = np.random.default_rng(0)
    scores = rng.integers(-4, 4, (40, 5))              # many ties
    scores[0] = [7, 7, 7, 7, 7]
    scores[1] = [-2048, -2048, 2047, 2047, -2048]       # extremes of the 12-bit input
    dut = ClassifyStage(num_classes=5, in_bits=12, score_bits=16, kind=kind)
    beats = [[int(v)] for v in scores.reshape(-1)]       # one score per beat
    out, _ = run_stream(dut, beats, len(scores), gap=0.3, stall=0.3)
    assert [o["cls"] for o in out] == L.classify(scores, kind).tolist()
    assert [o["scores"] for o in out] == scores.tolist()
    assert all(o["last"] == 1 for o in out)


def test_back_to_back():
    # Scores presented every cycle, output always taken: an image per num_classes + 1 cycles.
    scores = np.arange(30).reshape(6, 5) % 7 - 3
    dut = ClassifyStage(num_classes=5, in_bits=8, score_bits=8, kind="argmax")
    out, times = run_stream(dut, [[int(v)] for v in scores.reshape(-1)], len(scores))
    assert [o["cls"] for o in out] == L.classify(scores, "argmax").tolist()
    assert np.diff(times).tolist() == [dut.cycles] * (len(scores) - 1)


def test_latency_measured():
    # Scores offered in cycles 0, 1, 2: the output beat is valid `latency` cycles after the
    # last is accepted (the output register, written with it).
    dut = ClassifyStage(num_classes=3, in_bits=8, score_bits=8, kind="argmax")
    inputs = [[(dut.o.ready, 0), (dut.i.valid, 1), (dut.i.payload, [v])] for v in (1, 3, 2)]
    seen = run_cycles(dut, inputs + [[(dut.i.valid, 0)]] + [[]] * 2,
                      lambda ctx: (ctx.get(dut.o.valid), ctx.get(dut.o.payload.cls)))
    assert [s[0] for s in seen].index(1) == 2 + ClassifyStage.latency
    assert ClassifyStage.latency == 1 and seen[-1] == (1, 1)


def test_errors():
    with pytest.raises(ValueError) as info:
        ClassifyStage(num_classes=10, in_bits=26, score_bits=20, kind="argmax")
    assert str(info.value) == ("output.score_bits=20 is narrower than the final layer's "
                               "acc_bits=26; set score_bits >= 26")
    with pytest.raises(ValueError) as info:
        ClassifyStage(num_classes=10, in_bits=26, score_bits=26, kind="softmax")
    assert str(info.value) == "output kind must be 'argmax' or 'argmin', not 'softmax'"

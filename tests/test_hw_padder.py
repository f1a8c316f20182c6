"""Padder (hw/padder.py) against golden pad2d."""

import numpy as np
import pytest

from golden import layers as L
from hw.padder import Padder
from hw.simulation import run_cycles, run_stream

pytestmark = pytest.mark.filterwarnings("ignore::amaranth.hdl.UnusedElaboratable")



@pytest.mark.parametrize("channels,pad", [(1, 2), (3, 1), (2, 0)])
def test_pad(channels, pad):
    rng = np.random.default_rng(pad)
    x = rng.integers(0, 256, (3, channels, 3, 4))
    dut = Padder(channels=channels, height=3, width=4, pad=pad,
                 fmt={"bits": 8, "frac": 8, "signed": False})
    y = L.pad2d(x, pad)
    beats = [[int(v) for v in x[i, :, r, q]] for i in range(3) for r in range(3) for q in range(4)]
    expected = [[int(v) for v in y[i, :, r, q]] for i in range(3)
                for r in range(y.shape[2]) for q in range(y.shape[3])]
    out, _ = run_stream(dut, beats, len(expected), seed=channels, gap=0.5, stall=0.3)
    assert out == expected
    assert dut.cycles == y.shape[2] * y.shape[3]


def test_full_rate():
    dut = Padder(channels=1, height=2, width=2, pad=1, fmt={"bits": 8, "frac": 8, "signed": False})
    out, times = run_stream(dut, [[v] for v in range(8)], 32)
    assert np.all(np.diff(times) == 1)


@pytest.mark.parametrize("pad", [0, 1])
def test_latency_measured(pad):
    # A position (an input beat accepted in cycle 0, or a zero position's turn) is valid on o
    # `latency` cycles later: the output register.
    dut = Padder(channels=2, height=2, width=2, pad=pad,
                 fmt={"bits": 8, "frac": 8, "signed": False})
    inputs = [[(dut.o.ready, 1), (dut.i.valid, 1), (dut.i.payload, [5, 6])], [(dut.i.valid, 0)],
              [], []]
    seen = run_cycles(dut, inputs, lambda ctx: (ctx.get(dut.i.ready), ctx.get(dut.o.valid)))
    assert [s[1] for s in seen].index(1) == Padder.latency == 1
    assert seen[0][0] == (1 if pad == 0 else 0)          # a zero position is sent first


def test_errors():
    with pytest.raises(TypeError) as info:
        Padder(channels=1, height=0, width=2, pad=1, fmt={"bits": 8, "frac": 8, "signed": False})
    assert str(info.value) == "height must be a positive integer, not 0"
    with pytest.raises(TypeError) as info:
        Padder(channels=1, height=2, width=2, pad=-1,
               fmt={"bits": 8, "frac": 8, "signed": False})
    assert str(info.value) == "pad must be a non-negative integer, not -1"

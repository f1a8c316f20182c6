"""SkidBuffer (hw/skid.py): order kept under gaps and stalls, registered ready, latency."""

import pytest
from amaranth.hdl import signed
from amaranth.lib import data

from hw.simulation import run_cycles, run_stream
from hw.skid import SkidBuffer

pytestmark = pytest.mark.filterwarnings("ignore::amaranth.hdl.UnusedElaboratable")



LAYOUT = data.ArrayLayout(signed(5), 3)


@pytest.mark.parametrize("gap,stall", [(0.0, 0.0), (0.3, 0.5), (0.0, 0.7)])
def test_order_kept(gap, stall):
    beats = [[(k * 7 + j) % 32 - 16 for j in range(3)] for k in range(40)]
    out, times = run_stream(SkidBuffer(shape=LAYOUT), beats, len(beats), seed=3, gap=gap,
                            stall=stall)
    assert out == beats
    if gap == stall == 0:
        assert times == list(range(1, len(beats) + 1))          # one beat per cycle


def test_latency_and_registered_ready():
    dut = SkidBuffer(shape=LAYOUT)
    # A beat offered in cycle 0 is on o in cycle `latency`; with o stalled, the next beat
    # lands in the skid register and i.ready drops only in the cycle after (a register).
    inputs = [[(dut.i.valid, 1), (dut.i.payload, [1, 2, 3]), (dut.o.ready, 0)],
              [(dut.i.payload, [4, 5, 6])], [(dut.i.payload, [7, 8, 9])], [(dut.o.ready, 1)],
              [], []]
    seen = run_cycles(dut, inputs, lambda ctx: (ctx.get(dut.i.ready), ctx.get(dut.o.valid),
                                                ctx.get(dut.o.payload.as_value())))
    assert [s[1] for s in seen].index(1) == SkidBuffer.latency == 1
    assert [s[0] for s in seen] == [1, 1, 0, 0, 1, 1]
    first = data.Const(LAYOUT, seen[1][2])
    assert [first[j] for j in range(3)] == [1, 2, 3]

"""Regroup (hw/regroup.py): gather and split channel beats, order kept, under gaps and stalls."""

import pytest
from amaranth.hdl import signed

from hw.regroup import Regroup, regroup_steps
from hw.simulation import run_cycles, run_stream

pytestmark = pytest.mark.filterwarnings("ignore::amaranth.hdl.UnusedElaboratable")



def _values(count):
    # Signed 6-bit codes covering both extremes.
    return [((v * 37) % 64) - 32 for v in range(count)]


@pytest.mark.parametrize("n_in,n_out", [(1, 1), (1, 4), (2, 6), (6, 2), (6, 1), (3, 3)])
@pytest.mark.parametrize("gap,stall", [(0.0, 0.0), (0.4, 0.4)])
def test_order_kept(n_in, n_out, gap, stall):
    values = _values(12 * 5)
    dut = Regroup(shape=signed(6), n_in=n_in, n_out=n_out)
    beats = [values[k:k + n_in] for k in range(0, len(values), n_in)]
    out, times = run_stream(dut, beats, len(values) // n_out, seed=n_in * 7 + n_out, gap=gap,
                            stall=stall)
    assert sum(out, []) == values
    if gap == stall == 0.0:
        # Full rate: one beat per cycle on the narrow side.
        assert times[-1] - times[0] == (len(values) // n_out - 1) * max(1, n_out // n_in)


@pytest.mark.parametrize("n_in,n_out", [(1, 3), (3, 1), (2, 2)])
def test_latency_measured(n_in, n_out):
    # Beats offered from cycle 0: the first output beat is valid `latency` cycles after the
    # last input beat it needs is accepted (the output register, or the held beat of a split).
    dut = Regroup(shape=signed(6), n_in=n_in, n_out=n_out)
    needed = max(1, n_out // n_in)
    inputs = [[(dut.o.ready, 1), (dut.i.valid, 1), (dut.i.payload, _values(n_in))]]
    inputs += [[] for _ in range(needed - 1)] + [[(dut.i.valid, 0)]] + [[]] * 3
    seen = run_cycles(dut, inputs, lambda ctx: ctx.get(dut.o.valid))
    assert seen.index(1) == needed - 1 + Regroup.latency
    assert Regroup.latency == 1


def test_steps():
    assert regroup_steps(4, 4) == []
    assert regroup_steps(1, 6) == [(1, 6)]
    assert regroup_steps(6, 2) == [(6, 2)]
    assert regroup_steps(4, 6) == [(4, 12), (12, 6)]


def test_bad_arguments():
    with pytest.raises(ValueError) as info:
        Regroup(shape=signed(6), n_in=4, n_out=6)
    assert str(info.value) == "n_in=4 and n_out=6: one must divide the other"
    with pytest.raises(TypeError) as info:
        Regroup(shape=signed(6), n_in=0, n_out=6)
    assert str(info.value) == "n_in must be a positive integer, not 0"

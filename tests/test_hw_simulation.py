"""hw.simulation: streams driven with gaps, drained under stalls; cycle-by-cycle probes."""

import pytest
from amaranth.hdl import Module, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from hw.simulation import run_cycles, run_stream, to_python

pytestmark = pytest.mark.filterwarnings("ignore::amaranth.hdl.UnusedElaboratable")

PAIR = data.StructLayout({"x": signed(6), "v": data.ArrayLayout(unsigned(4), 2)})



class Stage(wiring.Component):
    """A registered stage (one cycle of latency) that adds 1 to ``x`` and swaps ``v``."""

    def __init__(self):
        super().__init__({"i": In(stream.Signature(PAIR)), "o": Out(stream.Signature(PAIR))})

    def elaborate(self, platform):
        m = Module()
        m.d.comb += self.i.ready.eq(~self.o.valid | self.o.ready)
        with m.If(self.i.ready):
            m.d.sync += [self.o.valid.eq(self.i.valid), self.o.payload.x.eq(self.i.payload.x + 1),
                         self.o.payload.v[0].eq(self.i.payload.v[1]),
                         self.o.payload.v[1].eq(self.i.payload.v[0])]
        return m


BEATS = [{"x": x, "v": [x % 16, (3 * x) % 16]} for x in range(-20, 20)]
EXPECTED = [{"x": b["x"] + 1, "v": [b["v"][1], b["v"][0]]} for b in BEATS]


def test_run_stream_without_gaps_takes_a_beat_per_cycle():
    outputs, times = run_stream(Stage(), BEATS, len(BEATS))
    assert outputs == EXPECTED
    assert times == list(range(1, len(BEATS) + 1))     # one register: first beat at cycle 1


@pytest.mark.parametrize("gap,stall", [(0.5, 0.0), (0.0, 0.5), (0.4, 0.4)])
def test_run_stream_under_gaps_and_stalls_loses_nothing(gap, stall):
    outputs, times = run_stream(Stage(), BEATS, len(BEATS), seed=3, gap=gap, stall=stall)
    assert outputs == EXPECTED
    assert times == sorted(set(times))                  # one beat per cycle at most
    assert times[-1] > len(BEATS)                       # the idle cycles took time


def test_run_stream_is_reproducible_from_the_seed():
    first = run_stream(Stage(), BEATS, len(BEATS), seed=5, gap=0.3, stall=0.3)
    assert run_stream(Stage(), BEATS, len(BEATS), seed=5, gap=0.3, stall=0.3) == first
    assert run_stream(Stage(), BEATS, len(BEATS), seed=6, gap=0.3, stall=0.3)[1] != first[1]


def test_run_stream_gives_up_after_max_cycles():
    with pytest.raises(AssertionError) as info:
        run_stream(Stage(), BEATS[:3], 5, max_cycles=20)
    assert str(info.value) == "only 3 of 5 outputs after 20 cycles"


def test_run_stream_writes_waves(tmp_path):
    run_stream(Stage(), BEATS[:2], 2, vcd=str(tmp_path / "stage.vcd"))
    vcd = (tmp_path / "stage.vcd").read_text()
    assert "$timescale" in vcd and "$enddefinitions" in vcd


def test_run_cycles_sees_a_register_one_entry_later():
    m = Module()
    a, q = Signal(4), Signal(4)
    m.d.sync += q.eq(a + 1)
    seen = run_cycles(m, [[(a, 3)], [], [(a, 9)], []], lambda ctx: (ctx.get(a), ctx.get(q)))
    assert seen == [(3, 0), (3, 4), (9, 4), (9, 10)]   # a signal keeps its last value


def test_run_cycles_on_a_combinational_design():
    m = Module()
    a, b = Signal(4), Signal(5)
    m.d.comb += b.eq(a * 2)
    seen = run_cycles(m, [[(a, v)] for v in (1, 7, 15)], lambda ctx: ctx.get(b))
    assert seen == [2, 14, 30]


def test_to_python_unpacks_nested_layouts():
    layout = data.ArrayLayout(PAIR, 2)
    const = layout.const([{"x": -5, "v": [1, 2]}, {"x": 31, "v": [15, 0]}])
    assert to_python(const) == [{"x": -5, "v": [1, 2]}, {"x": 31, "v": [15, 0]}]
    assert to_python(7) == 7

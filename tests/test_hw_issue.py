"""IssueCounter (hw/issue.py): the step order of a naive loop nest, row releases, stalls."""

import random

import pytest

from hw.issue import IssueCounter
from hw.simulation import run_cycles

pytestmark = pytest.mark.filterwarnings("ignore::amaranth.hdl.UnusedElaboratable")



def _model(in_shape, kernel, split, steps):
    """The steps of one image, as (rd, wa, first, last, g, free) in issue order."""
    _, height, width = in_shape
    (kh, kw), (_, t, r) = kernel, split
    out_h, out_w = height - kh + 1, width - kw + 1
    result = []
    for y in range(out_h):
        for x in range(out_w):
            wa = 0
            for g, blocks in enumerate(steps):
                walk = [(ky, kx, b) for ky in range(kh // r) for kx in range(kw // t)
                        for b in blocks]
                for k, (ky, kx, b) in enumerate(walk):
                    last = k == len(walk) - 1
                    row_last = last and g == len(steps) - 1 and x == out_w - 1
                    free = (kh if y == out_h - 1 else 1) if row_last else 0
                    ring_row = y % (2 * kh)               # the ring holds 2 kh rows
                    rd = {"row_q": ring_row // r, "row_m": ring_row % r, "ky": ky, "col_q": x // t,
                          "col_m": x % t, "kx": kx, "block": b}
                    result.append((rd, wa, int(k == 0), int(last), g, free))
                    wa += 1
    return result


@pytest.mark.parametrize("kernel,split,steps", [
    ((3, 3), (1, 1, 1), [[0, 1], [0, 1]]),
    ((2, 4), (2, 2, 2), [[0, 1]]),
    ((3, 2), (1, 2, 3), [[1, 3], [0], [2, 3]]),              # a sparse connection table
])
def test_order_under_stalls(kernel, split, steps):
    in_shape = (4, 6, 5)
    dut = IssueCounter(in_shape=in_shape, kernel=kernel, split=split, steps=steps)
    want = _model(in_shape, kernel, split, steps)
    rng = random.Random(len(want))
    inputs = [[(dut.avail, int(rng.random() < 0.8)), (dut.en, int(rng.random() < 0.8))]
              for _ in range(3 * len(want))]

    def probe(ctx):
        step = ctx.get(dut.step)
        rd = {name: step.rd[name] for name in want[0][0]}
        return (ctx.get(dut.issue), (rd, step.wa, step.first, step.last, step.g,
                                     ctx.get(dut.free)))
    seen = run_cycles(dut, inputs, probe)
    issued = [step for issue, step in seen if issue]
    assert len(issued) >= len(want)
    assert issued[:len(want)] == want
    assert all(step[5] == 0 for issue, step in seen if not issue)


def test_errors():
    with pytest.raises(ValueError) as info:
        IssueCounter(in_shape=(4, 6, 6), kernel=(3, 3), split=(2, 1, 1), steps=[[0, 2]])
    assert str(info.value) == ("steps must list, per group, channel blocks in range(2), "
                               "not [[0, 2]]")

"""LineBuffer (hw/window.py): every window part read back from the ring; latency measured."""

import numpy as np
import pytest
from amaranth.hdl import unsigned

from hw.simulation import run_cycles
from hw.window import LineBuffer, ring_geometry

pytestmark = pytest.mark.filterwarnings("ignore::amaranth.hdl.UnusedElaboratable")



@pytest.mark.parametrize("split", [(2, 1, 1), (1, 2, 3), (2, 4, 1), (1, 2, 1), (2, 4, 3)])
def test_reads_and_latency(split):
    (channels, height, width), (kh, kw) = (2, 5, 7), (3, 4)
    c_block, t, r = split
    dut = LineBuffer(code=unsigned(6), in_shape=(channels, height, width), kernel=(kh, kw),
                     split=split)
    img = np.random.default_rng(sum(split)).integers(0, 64, (channels, height, width))
    writes = [[(dut.i.valid, 1), (dut.i.payload, [int(v) for v in
                                                   img[b * c_block:(b + 1) * c_block, y, x]])]
              for y in range(height) for x in range(width) for b in range(channels // c_block)]
    reads, want = [], []
    for y in range(height - kh + 1):
        for x in range(width - kw + 1):
            for ky in range(kh // r):
                for kx in range(kw // t):
                    for b in range(channels // c_block):
                        reads.append([(dut.en, 1), (dut.rd, {
                            "row_q": y // r, "row_m": y % r, "ky": ky, "col_q": x // t,
                            "col_m": x % t, "kx": kx, "block": b})])
                        want.append([int(img[b * c_block + s, y + ky * r + i, x + kx * t + j])
                                     for i in range(r) for j in range(t)
                                     for s in range(c_block)])
    inputs = writes + [[(dut.i.valid, 0)] + reads[0]] + reads[1:] + [[]] * 3
    simd = c_block * t * r
    seen = run_cycles(dut, inputs, lambda ctx: (
        ctx.get(dut.avail), ctx.get(dut.i.ready), [ctx.get(dut.x[k]) for k in range(simd)]))
    assert all(ready for _, ready, _ in seen[:len(writes)])
    assert [avail for avail, _, _ in seen[:len(writes) + 1:width * channels // c_block]] == \
        [0, 0, 0, 1, 1, 1]                      # kh rows written
    got = [x for _, _, x in seen[len(writes):]]
    assert got[LineBuffer.latency:LineBuffer.latency + len(want)] == want
    assert got[LineBuffer.latency - 1] != want[0] or want[0] == [0] * simd


def test_free_rows_and_backpressure():
    # A ring of 2·kh rows: the input stalls when it is full, until rows are freed.
    dut = LineBuffer(code=unsigned(4), in_shape=(1, 8, 3), kernel=(2, 2), split=(1, 1, 1))
    inputs = [[(dut.i.valid, 1), (dut.i.payload, [k % 16])] for k in range(13)]
    inputs += [[(dut.free, 2)], [(dut.free, 0)], [], [], [], []]
    seen = run_cycles(dut, inputs, lambda ctx: ctx.get(dut.i.ready))
    assert seen[:14] == [1] * 12 + [0, 0] and seen[14:16] == [1, 1]     # freed in cycle 13


def test_geometry_and_errors():
    geo = ring_geometry((6, 14, 14), (5, 5), (1, 5, 5))
    assert (geo["rows"], geo["bank_rows"], geo["bank_cols"], geo["depth"]) == (10, 2, 3, 64)
    with pytest.raises(ValueError) as info:
        LineBuffer(code=unsigned(4), in_shape=(3, 8, 8), kernel=(3, 3), split=(2, 1, 1))
    assert str(info.value) == "split (2, 1, 1) does not divide (channels, kw, kh) = (3, 3, 3)"
    with pytest.raises(ValueError) as info:
        LineBuffer(code=unsigned(4), in_shape=(3, 2, 8), kernel=(3, 3), split=(1, 1, 1))
    assert str(info.value) == "kernel 3x3 is larger than the input 2x8"

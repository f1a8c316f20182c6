"""WeightStore (hw/weights.py): ROM and loaded reads agree with the words; latency measured."""

import numpy as np
import pytest
from amaranth.hdl import signed

from hw.simulation import run_cycles
from hw.weights import LOADED_WEIGHTS, WeightStore

pytestmark = pytest.mark.filterwarnings("ignore::amaranth.hdl.UnusedElaboratable")



@pytest.mark.parametrize("load", [False, True])
@pytest.mark.parametrize("pe,simd", [(1, 1), (3, 2), (2, 5)])
def test_reads_and_latency(load, pe, simd):
    rows = 5
    words = np.random.default_rng(pe * simd).integers(-128, 128, (pe, rows, simd)).tolist()
    dut = WeightStore(shape=signed(8), words=words, load=load)
    inputs = []
    if load:
        codes = [v for lane in words for word in lane for v in word]
        inputs += [[(dut.w.valid, 1), (dut.w.payload, v)] for v in codes]
        inputs += [[(dut.w.valid, 0)]]
    addrs = [3, 0, 4, 4, 1, 2]
    inputs += [[(dut.en, 1), (dut.addr, a)] for a in addrs] + [[]] * 3

    def probe(ctx):
        return (ctx.get(dut.loaded) if load else 1,
                [[ctx.get(dut.data[p][s]) for s in range(simd)] for p in range(pe)])
    seen = run_cycles(dut, inputs, probe)
    start = len(inputs) - len(addrs) - 3
    if load:
        # the last word is registered, written the next cycle, then ``loaded`` rises
        assert [loaded for loaded, _ in seen[start - 2:start + 1]] == [0, 0, 1]
    got = [data for _, data in seen[start:]]
    want = [[words[p][a] for p in range(pe)] for a in addrs]
    assert got[WeightStore.latency:WeightStore.latency + len(addrs)] == want
    assert got[WeightStore.latency - 1] != want[0]


def test_names_and_errors():
    assert LOADED_WEIGHTS == "loaded_weights"
    with pytest.raises(ValueError) as info:
        WeightStore(shape=signed(8), words=[[[1, 2]], [[1]]])
    assert str(info.value) == "every lane must have 1 words of 2 codes"
    with pytest.raises(TypeError) as info:
        WeightStore(shape=signed(8), words=[[[1]]], load=1)
    assert str(info.value) == "load must be a bool, not 1"
    with pytest.raises(ValueError) as info:
        WeightStore(shape=signed(8), words=[])
    assert str(info.value) == "words must hold at least one lane of one word of one code"

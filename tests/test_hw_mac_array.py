"""MacArray (hw/mac_array.py) against NumPy dot products; latency measured; lut_mul exact."""

import numpy as np
import pytest
from amaranth.hdl import signed, unsigned

from hw.mac_array import TREE_FANIN, MacArray, mac_array_latency, tree_stages
from hw.simulation import run_cycles

pytestmark = pytest.mark.filterwarnings("ignore::amaranth.hdl.UnusedElaboratable")



def test_tree_stages():
    assert [tree_stages(n) for n in (1, TREE_FANIN, TREE_FANIN + 1, 64, 65, 512, 513)] == \
        [0, 0, 1, 1, 2, 2, 3]
    assert mac_array_latency(1) == 4 and mac_array_latency(9) == 5


@pytest.mark.parametrize("op,pe,simd,steps,lut_mul", [
    ("mul", 2, 3, 4, False), ("mul", 1, 9, 2, False), ("mul", 3, 70, 1, False),
    ("sqdiff", 2, 4, 3, False), ("mul", 2, 2, 2, True), ("sqdiff", 1, 3, 2, True),
])
def test_groups_exact_and_latency(op, pe, simd, steps, lut_mul):
    rng = np.random.default_rng(pe * 100 + simd)
    groups, x_shape = 3, (unsigned(8) if op == "sqdiff" else signed(8))
    bias = rng.integers(-1000, 1000, groups * pe) if op == "mul" else np.zeros(groups * pe)
    dut = MacArray(x_shape=x_shape, w_shape=x_shape if op == "sqdiff" else signed(8),
                   acc_bits=28, pe=pe, simd=simd, bias=bias, op=op, lut_mul=lut_mul)
    lo, hi = (0, 255) if op == "sqdiff" else (-128, 127)
    xs = rng.integers(lo, hi, (groups, steps, simd), endpoint=True)
    ws = rng.integers(lo, hi, (groups, steps, pe, simd), endpoint=True)
    xs[0, 0, 0], ws[0, 0, 0, 0] = lo, hi if op == "sqdiff" else lo
    inputs = []
    for g in range(groups):
        for k in range(steps):
            inputs.append([(dut.en, 1), (dut.i.valid, 1), (dut.i.g, g),
                           (dut.i.first, int(k == 0)), (dut.i.last, int(k == steps - 1)),
                           (dut.i.x, [int(v) for v in xs[g, k]]),
                           (dut.i.w, [[int(v) for v in lane] for lane in ws[g, k]])])
    inputs += [[(dut.i.valid, 0)]] + [[]] * (dut.latency + 1)
    seen = run_cycles(dut, inputs, lambda ctx: (ctx.get(dut.o.valid), ctx.get(dut.o.g),
                                                [ctx.get(dut.o.acc[p]) for p in range(pe)]))
    done = [k for k, (valid, _, _) in enumerate(seen) if valid]
    # A group's accumulators are on o `latency` cycles after its last step was on i.
    assert done == [g * steps + steps - 1 + dut.latency for g in range(groups)]
    assert dut.latency == mac_array_latency(simd)
    for g, k in enumerate(done):
        if op == "mul":
            want = np.einsum("kps,ks->p", ws[g], xs[g]) + bias[g * pe:(g + 1) * pe]
        else:
            want = ((xs[g][:, None, :] - ws[g]) ** 2).sum(axis=(0, 2))
        assert seen[k][1] == g and seen[k][2] == want.tolist()


def test_errors():
    args = dict(x_shape=signed(8), w_shape=signed(8), acc_bits=20, pe=2, simd=3,
                bias=np.zeros(4))
    with pytest.raises(ValueError) as info:
        MacArray(**{**args, "bias": np.zeros(3)})
    assert str(info.value) == "bias must have a positive multiple of pe=2 entries, not 3"
    with pytest.raises(ValueError) as info:
        MacArray(**args, op="add")
    assert str(info.value) == "op must be 'mul' or 'sqdiff', not 'add'"
    with pytest.raises(TypeError) as info:
        MacArray(**{**args, "simd": 0})
    assert str(info.value) == "simd must be an integer >= 1, not 0"

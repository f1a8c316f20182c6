"""Requantizer (hw/requant.py) against golden requantize + apply_lut; latency measured."""

import numpy as np
import pytest
from amaranth.hdl import signed, unsigned

from golden import layers as L
from hw.arith import Activation
from hw.requant import Requantizer, requant_latency
from hw.simulation import run_cycles

pytestmark = pytest.mark.filterwarnings("ignore::amaranth.hdl.UnusedElaboratable")



def _activation(kind, channels):
    acc_frac = [6 + (c % 3) for c in range(channels)]
    acc_frac[0] = 1                                             # a left shift (s < 0)
    if kind == "relu":
        return Activation(name="t", activation={"kind": "relu"}, acc_frac=acc_frac,
                          out_format={"bits": 8, "frac": 4, "signed": False})
    out_format = {"bits": 8, "frac": 6, "signed": True}
    return Activation(name="t", activation={"kind": "lut", "in_bits": 7, "in_frac": 3},
                      out_format=out_format, acc_frac=acc_frac,
                      table=L.build_lut("scaled_tanh", 7, 3, out_format))


@pytest.mark.parametrize("kind,lanes,blocks", [("relu", 2, 3), ("lut", 3, 2), ("lut", 1, 1)])
def test_exact_and_latency(kind, lanes, blocks):
    act = _activation(kind, lanes * blocks)
    dut = Requantizer(activation=act, acc_shape=signed(18), lanes=lanes, blocks=blocks)
    assert dut.latency == requant_latency(kind == "lut") == (2 if kind == "lut" else 0)
    rng = np.random.default_rng(lanes)
    accs = rng.integers(-(1 << 17), 1 << 17, (12, lanes))
    accs[0] = -(1 << 17)
    sels = [k % blocks for k in range(len(accs))]
    inputs = [[(dut.en, 1), (dut.i.valid, int(k == 0)), (dut.i.sel, sel),
               (dut.i.acc, [int(v) for v in acc])] for k, (acc, sel) in
              enumerate(zip(accs, sels, strict=True))] + [[(dut.i.valid, 0)]] * 3
    seen = run_cycles(dut, inputs, lambda ctx: (ctx.get(dut.o.valid),
                                                [ctx.get(dut.o.code[c]) for c in range(lanes)]))
    latency = [valid for valid, _ in seen].index(1)
    assert latency == dut.latency
    for k, (acc, sel) in enumerate(zip(accs, sels, strict=True)):
        shifts = np.array(act.shifts[sel * lanes:(sel + 1) * lanes])
        want, _ = L.requantize(acc[None, :, None, None], shifts, act.pre_format)
        if act.table is not None:
            want = L.apply_lut(want, np.array(act.table), act.pre_format["bits"])
        assert seen[k + latency][1] == want.reshape(-1).tolist()


def test_frozen_while_not_enabled():
    act = _activation("lut", 1)
    dut = Requantizer(activation=act, acc_shape=signed(12), lanes=1, blocks=1)
    inputs = [[(dut.en, 1), (dut.i.valid, 1), (dut.i.acc, [100])], [(dut.en, 0),
              (dut.i.valid, 0)], [], [], [(dut.en, 1)], [], []]
    seen = run_cycles(dut, inputs, lambda ctx: ctx.get(dut.o.valid))
    assert seen == [0, 0, 0, 0, 0, 1, 0]        # valid after the 2nd advancing cycle only


def test_errors():
    act = _activation("relu", 4)
    with pytest.raises(ValueError) as info:
        Requantizer(activation=act, acc_shape=signed(12), lanes=3, blocks=1)
    assert str(info.value) == "activation has 4 channels, not lanes·blocks = 3·1 = 3"
    with pytest.raises(ValueError) as info:
        Requantizer(activation=act, acc_shape=unsigned(12), lanes=2, blocks=2)
    assert str(info.value) == "acc_shape must be signed, not unsigned(12)"
    with pytest.raises(TypeError) as info:
        Requantizer(activation=act, acc_shape=signed(12), lanes=0, blocks=2)
    assert str(info.value) == "lanes must be a positive integer, not 0"
    with pytest.raises(TypeError) as info:
        Requantizer(activation={"kind": "relu"}, acc_shape=signed(12), lanes=1, blocks=1)
    assert str(info.value) == "activation must be an Activation, not {'kind': 'relu'}"

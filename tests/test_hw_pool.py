"""PoolStage (hw/pool.py) against golden maxpool / avgpool / subsample, bit-exact."""

import numpy as np
import pytest
from conftest import position_beats, random_codes

from golden import layers as L
from hw.arith import Activation
from hw.pool import (
    SCALE_REGISTERS,
    WINDOW_REGISTERS,
    PoolStage,
    pool_latency,
    pool_part_bits,
    pool_resources,
)
from hw.requant import requant_latency
from hw.simulation import run_cycles, run_stream
from hw.skid import SkidBuffer

pytestmark = [pytest.mark.usefixtures("discard_unused_elaboratables"),
              pytest.mark.filterwarnings("ignore::amaranth.hdl.UnusedElaboratable")]


S8 = {"bits": 8, "frac": 5, "signed": True}
U8 = {"bits": 8, "frac": 4, "signed": False}


@pytest.mark.parametrize("mode,size,fmt,lanes", [
    ("max", 2, S8, None), ("max", 3, U8, None), ("avg", 2, S8, None), ("avg", 2, U8, None),
    ("avg", 1, S8, None), ("max", 2, S8, 1), ("max", 3, U8, 2), ("avg", 2, S8, 3),
    ("avg", 2, U8, 1),
])
def test_pool(mode, size, fmt, lanes):
    # lanes: a position's 6 channels in beats of 1, 2 or 3 (a MAC stage's pe output channels).
    rng = np.random.default_rng(size)
    shape = (2, 6 if lanes else 3, 2 * size, 3 * size)
    x = random_codes(rng, fmt, shape)
    dut = PoolStage(label="layers[1] 's2'", mode=mode, size=size, in_shape=shape[1:],
                    in_format=fmt, lanes=lanes)
    ref = L.maxpool(x, size) if mode == "max" else L.avgpool(x, size)
    expected = position_beats(ref, lanes)
    out, _ = run_stream(dut, position_beats(x, lanes), len(expected), seed=size, gap=0.3,
                        stall=0.4)
    assert out == expected
    assert dut.cycles == 6 * size * size * shape[1] // (lanes or shape[1])


@pytest.mark.parametrize("kind,lanes", [("lut", None), ("none", None), ("lut", 1),
                                        ("none", 2)])
def test_subsample(kind, lanes):
    rng = np.random.default_rng(11)
    channels, size = (3, 2) if lanes is None else (4, 2)
    x = random_codes(rng, U8, (2, channels, 4, 6))
    coef = rng.integers(-128, 128, channels)
    bias = rng.integers(-4000, 4000, channels)
    acc_bits = L.acc_bits_for("subsample", 8, 8, size * size)
    acc_frac = [7 + U8["frac"]] * channels
    if kind == "lut":
        out_format = {"bits": 8, "frac": 6, "signed": True}
        spec = {"kind": "lut", "function": "scaled_tanh", "in_bits": 8, "in_frac": 4}
        table = L.build_lut("scaled_tanh", 8, 4, out_format)
    else:
        out_format, spec, table = {"bits": 8, "frac": 3, "signed": True}, {"kind": "none"}, None
    act = Activation(name="s", activation=spec, out_format=out_format, acc_frac=acc_frac,
                     table=table)
    dut = PoolStage(label="layers[1] 's2'", mode="subsample", size=size,
                    in_shape=(channels, 4, 6), in_format=U8, coef=coef, bias=bias,
                    coef_format={"bits": 8, "frac": 7, "signed": True}, acc_bits=acc_bits,
                    activation=act, lanes=lanes)
    acc = L.subsample(x, coef, bias, size)
    q, _ = L.requantize(acc, np.array(act.shifts), act.pre_format)
    if table is not None:
        q = L.apply_lut(q, table, 8)
    expected = position_beats(q, lanes)
    out, _ = run_stream(dut, position_beats(x, lanes), len(expected), seed=3, gap=0.3, stall=0.3)
    assert out == expected


def test_errors():
    with pytest.raises(ValueError) as info:
        PoolStage(label="layers[1] 's2'", mode="max", size=3, in_shape=(6, 28, 28),
                  in_format=U8)
    assert str(info.value) == "layers[1] 's2': size=3 does not divide the 28x28 input"
    with pytest.raises(ValueError) as info:
        PoolStage(label="layers[1] 's2'", mode="avg", size=3, in_shape=(6, 27, 27),
                  in_format=U8)
    assert str(info.value) == ("layers[1] 's2': size=3 is not a power of two; average pooling "
                               "divides by a shift")
    with pytest.raises(ValueError) as info:
        PoolStage(label="layers[1] 's2'", mode="min", size=2, in_shape=(6, 4, 4), in_format=U8)
    assert str(info.value) == ("layers[1] 's2': mode must be 'max', 'avg' or 'subsample', "
                               "not 'min'")
    with pytest.raises(ValueError) as info:
        PoolStage(label="layers[1] 's2'", mode="max", size=2, in_shape=(6, 4, 4), in_format=U8,
                  lanes=4)
    assert str(info.value) == ("layers[1] 's2': lanes=4 must be a positive divisor of "
                               "channels=6")
    # The checks every map stage shares (hw.arith.check_map_stage), before its own.
    with pytest.raises(TypeError) as info:
        PoolStage(label="layers[1] 's2'", mode="max", size=2, in_shape=(6, 4), in_format=U8)
    assert str(info.value) == ("layers[1] 's2': in_shape must be (channels, height, width), "
                               "not (6, 4)")
    with pytest.raises(TypeError) as info:
        PoolStage(label=None, mode="max", size=2, in_shape=(6, 4, 4), in_format=U8)
    assert str(info.value) == "label must be a string, not None"


def test_cycles():
    dut = PoolStage(label="p", mode="max", size=2, in_shape=(6, 28, 28), in_format=U8)
    assert dut.cycles == 28 * 28
    assert dut.out_shape == (6, 14, 14)


@pytest.mark.parametrize("mode", ["max", "avg"])
def test_single_window_column(mode):
    # One window per row: the next row reads back the column written the cycle before
    # (synchronous read port, transparent for the write-back).
    rng = np.random.default_rng(5)
    x = random_codes(rng, S8, (3, 2, 6, 2))
    dut = PoolStage(label="p", mode=mode, size=2, in_shape=(2, 6, 2), in_format=S8)
    ref = L.maxpool(x, 2) if mode == "max" else L.avgpool(x, 2)
    out, _ = run_stream(dut, position_beats(x), 9, seed=1, gap=0.2, stall=0.5)
    assert out == position_beats(ref)
    assert dut.latency == 2 and dut.resources()["memory_bits"]["lut"] == 0


@pytest.mark.parametrize("mode,kind", [("max", None), ("avg", None), ("subsample", "relu"),
                                       ("subsample", "lut")])
def test_latency_measured(mode, kind):
    # From a window's last beat accepted to its output: the sum of the parts' registers.
    args = {}
    if mode == "subsample":
        if kind == "relu":
            act = Activation(name="s", activation={"kind": "relu"}, out_format=U8,
                             acc_frac=[5, 5])
        else:
            act = Activation(name="s", activation={"kind": "lut", "in_bits": 7, "in_frac": 3},
                             out_format=S8, acc_frac=[5, 5],
                             table=L.build_lut("tanh", 7, 3, S8))
        args = dict(coef=[3, -2], bias=[10, 20], coef_format=S8, acc_bits=20, activation=act)
    dut = PoolStage(label="s", mode=mode, size=2, in_shape=(2, 2, 2), in_format=S8, **args)
    lut = kind == "lut"
    scale = SCALE_REGISTERS + requant_latency(lut) if mode == "subsample" else 0
    assert dut.latency == pool_latency(mode, lut) == WINDOW_REGISTERS + scale + \
        SkidBuffer.latency
    inputs = [[(dut.o.ready, 1), (dut.i.valid, 1), (dut.i.payload, [k, -k])] for k in range(4)]
    seen = run_cycles(dut, inputs + [[(dut.i.valid, 0)]] * 8, lambda ctx: ctx.get(dut.o.valid))
    assert seen.index(1) == 3 + dut.latency


@pytest.mark.parametrize("mode,in_bits,size,bits", [
    ("max", 8, 2, 8), ("avg", 8, 2, 11), ("avg", 6, 4, 11), ("subsample", 8, 2, 11),
    ("subsample", 8, 3, 13)])
def test_part_bits(mode, in_bits, size, bits):
    # The partial result holds the sum of size² codes (one bit more than the count's width,
    # so unsigned codes sum signed), and a max pool's partial result is a code.
    assert pool_part_bits(mode, in_bits, size) == bits
    if mode == "subsample" or size & (size - 1) == 0:
        fmt = {"bits": in_bits, "frac": 0, "signed": True}
        args = {}
        if mode == "subsample":
            act = Activation(name="s", activation={"kind": "relu"}, out_format=U8,
                             acc_frac=[0, 0])
            args = dict(coef=[1, 1], bias=[0, 0], coef_format=S8, acc_bits=24, activation=act)
        dut = PoolStage(label="s", mode=mode, size=size, in_shape=(2, size, 2 * size),
                        in_format=fmt, **args)
        assert dut.resources() == pool_resources(mode, 2, 2 * size, size, 2, bits, 0)

"""GapStage (hw/gap.py) against golden's global average pooling, bit-exact, and its timing."""

import numpy as np
import pytest
from conftest import position_beats, random_codes

from core.kinds import gap_scale
from golden import layers as L
from hw.gap import (
    PRODUCT_REGISTERS,
    REGISTER_BLOCKS,
    SUM_REGISTERS,
    GapStage,
    gap_latency,
    gap_resources,
)
from hw.simulation import run_stream
from hw.skid import SkidBuffer

pytestmark = [pytest.mark.usefixtures("discard_unused_elaboratables"),
              pytest.mark.filterwarnings("ignore::amaranth.hdl.UnusedElaboratable")]


S8 = {"bits": 8, "frac": 5, "signed": True}
U8 = {"bits": 8, "frac": 4, "signed": False}
S4 = {"bits": 4, "frac": 2, "signed": True}


def _dut(shape, fmt, lanes):
    channels, h, w = shape
    mul, shift = gap_scale(h * w)
    return GapStage(label="layers[2] 'gap'", in_shape=shape, in_format=fmt, mul=mul,
                    shift=shift, lanes=lanes)


@pytest.mark.parametrize("hw", [(2, 2), (4, 4), (5, 5), (3, 2)])
@pytest.mark.parametrize("lanes", [1, 2, 3, 6])
@pytest.mark.parametrize("fmt", [S8, U8])
def test_gap_matches_golden(hw, lanes, fmt):
    # 6 channels in beats of 1 (6 blocks: memory), 2, 3 or 6 (registers); 3 images back to
    # back, with idle input cycles and output backpressure.
    rng = np.random.default_rng(hw[0] * 10 + lanes)
    shape = (6,) + hw
    x = np.concatenate([random_codes(rng, fmt, (1,) + shape, codes)
                        for codes in ("random", "extreme", "max")])
    dut = _dut(shape, fmt, lanes)
    mul, shift = gap_scale(hw[0] * hw[1])
    ref, _ = L.global_avgpool(x, mul, shift, fmt)
    expected = position_beats(ref, lanes)
    out, _ = run_stream(dut, position_beats(x, lanes), len(expected), seed=lanes, gap=0.3,
                        stall=0.4)
    assert out == expected


@pytest.mark.parametrize("codes", ["min", "max", "extreme"])
def test_gap_saturates(codes):
    # A 5x5 map's scale is not exact: the extremes round and saturate to the format.
    rng = np.random.default_rng(3)
    shape = (2, 5, 5)
    x = random_codes(rng, S4, (2,) + shape, codes)
    mul, shift = gap_scale(25)
    ref, _ = L.global_avgpool(x, mul, shift, S4)
    dut = _dut(shape, S4, 1)
    out, _ = run_stream(dut, position_beats(x, 1), 4, gap=0.2, stall=0.2)
    assert out == position_beats(ref, 1)


@pytest.mark.parametrize("shape,lanes", [((6, 4, 4), 6), ((6, 5, 5), 2), ((6, 2, 2), 1)])
def test_gap_timing(shape, lanes):
    # Fed back to back and always drained: a block leaves `latency` cycles after its last
    # beat, and the next image's beats are taken while the last ones leave.
    channels, h, w = shape
    blocks = channels // lanes
    n = 3
    x = np.random.default_rng(0).integers(0, 255, (n,) + shape)
    dut = _dut(shape, U8, lanes)
    _, times = run_stream(dut, position_beats(x, lanes), n * blocks)
    assert dut.cycles == h * w * blocks
    # The latency is the sum of the registers on the way (measured by `times` below).
    product = PRODUCT_REGISTERS if dut.mul != 1 else 0
    assert dut.latency == gap_latency(dut.mul) == SUM_REGISTERS + product + SkidBuffer.latency
    assert times == [k * dut.cycles + (h * w - 1) * blocks + b + dut.latency
                     for k in range(n) for b in range(blocks)]


def test_gap_resources():
    assert GapStage(label="g", in_shape=(6, 4, 4), in_format=S8, mul=1, shift=4,
                    lanes=2).resources() == {"multipliers": 0, "memory_bits": {"partial": 0}}
    blocks = REGISTER_BLOCKS + 1
    dut = GapStage(label="g", in_shape=(2 * blocks, 5, 5), in_format=S8, mul=41943,
                   shift=20, lanes=2)
    # Sums of 25 signed 8-bit codes: 8 + 5 bits and a sign bit, one word per block.
    assert dut.resources() == gap_resources(channels=2 * blocks, lanes=2, sum_bits=14,
                                            mul=41943) == {
        "multipliers": 2, "memory_bits": {"partial": blocks * 2 * 14}}
    assert dut.out_shape == (2 * blocks, 1, 1)


@pytest.mark.parametrize("kwargs,error,message", [
    ({"in_shape": (4, 1, 1)}, ValueError,
     "layers[2] 'gap': global average pooling of a 1x1 map does nothing; remove the layer"),
    ({"in_shape": (4, 2)}, TypeError,
     "layers[2] 'gap': in_shape must be (channels, height, width), not (4, 2)"),
    ({"in_shape": (0, 2, 2)}, TypeError,
     "layers[2] 'gap': channels must be an integer >= 1, not 0"),
    ({"lanes": 3}, ValueError,
     "layers[2] 'gap': lanes=3 must be a positive divisor of channels=4"),
    ({"mul": 0}, TypeError, "layers[2] 'gap': mul must be an integer >= 1, not 0"),
    ({"shift": 0}, TypeError, "layers[2] 'gap': shift must be an integer >= 1, not 0"),
    ({"label": None}, TypeError, "label must be a string, not None"),
])
def test_gap_errors(kwargs, error, message):
    args = {"label": "layers[2] 'gap'", "in_shape": (4, 2, 2), "in_format": S8, "mul": 1,
            "shift": 2, "lanes": 2, **kwargs}
    with pytest.raises(error) as info:
        GapStage(**args)
    assert str(info.value) == message

"""hw.arith: the integer rules of golden/ as Amaranth expressions, against Python arithmetic over
every code of small formats (in the Amaranth simulator)."""

import pytest
from amaranth.hdl import Module, Shape, Signal, signed, unsigned
from amaranth.lib import data

from hw import arith
from hw.arith import Activation
from hw.simulation import run_cycles

pytestmark = [pytest.mark.usefixtures("discard_unused_elaboratables"),
              pytest.mark.filterwarnings("ignore::amaranth.hdl.UnusedElaboratable")]

FORMATS = [{"bits": 4, "frac": 1, "signed": True}, {"bits": 3, "frac": 0, "signed": False},
           {"bits": 1, "frac": 0, "signed": True}]
SHIFTS = [-2, 0, 1, 3]


def _codes(shape):
    shape = Shape.cast(shape)
    if shape.signed:
        return range(-(1 << (shape.width - 1)), 1 << (shape.width - 1))
    return range(1 << shape.width)


def _requantize(a, shift, fmt):
    """golden/README.md's rule in plain Python: round half up by ``shift``, then clamp."""
    rounded = (a + (1 << (shift - 1))) >> shift if shift > 0 else a << -shift
    lo, hi = (-(1 << (fmt["bits"] - 1)), (1 << (fmt["bits"] - 1)) - 1) if fmt["signed"] \
        else (0, (1 << fmt["bits"]) - 1)
    return min(max(rounded, lo), hi)


def _sweep(m, signal, outputs):
    """Drive ``signal`` through all its codes; return ``{code: [output values]}``."""
    codes = list(_codes(signal.shape()))
    seen = run_cycles(m, [[(signal, v)] for v in codes],
                      lambda ctx: [ctx.get(o) for o in outputs])
    return dict(zip(codes, seen, strict=True))


def test_requantize_every_code_shift_and_format():
    m = Module()
    acc = Signal(signed(8))
    cases = [(shift, fmt) for shift in SHIFTS for fmt in FORMATS]
    outputs = []
    for shift, fmt in cases:
        out = Signal(arith.format_shape(fmt))
        m.d.comb += out.eq(arith.requantize(acc, shift, fmt))
        outputs.append(out)
    for a, got in _sweep(m, acc, outputs).items():
        want = [_requantize(a, shift, fmt) for shift, fmt in cases]
        assert got == want, f"acc={a}"


def test_requantize_rounds_ties_half_up():
    m = Module()
    acc = Signal(signed(6))
    out = Signal(signed(6))
    m.d.comb += out.eq(arith.requantize(acc, 1, {"bits": 6, "frac": 0, "signed": True}))
    got = _sweep(m, acc, [out])
    assert [got[a][0] for a in (-3, -1, 1, 3)] == [-1, 0, 1, 2]     # -1.5, -0.5, 0.5, 1.5


@pytest.mark.parametrize("shape", [signed(5), unsigned(4)])
def test_saturate_every_code(shape):
    m = Module()
    value = Signal(signed(6))
    bounds = [(lo, hi) for lo in _codes(shape) for hi in _codes(shape) if lo <= hi][::7]
    outputs = []
    for lo, hi in bounds:
        out = Signal(shape)
        m.d.comb += out.eq(arith.saturate(value, lo, hi, shape))
        outputs.append(out)
    for v, got in _sweep(m, value, outputs).items():
        assert got == [min(max(v, lo), hi) for lo, hi in bounds], f"value={v}"


def test_saturate_returns_the_shape():
    assert arith.saturate(Signal(signed(9)), -8, 7, signed(4)).shape() == signed(4)
    assert arith.saturate(Signal(signed(9)), 0, 15, unsigned(4)).shape() == unsigned(4)


@pytest.mark.parametrize("fmt", FORMATS + [{"bits": 8, "frac": 8, "signed": False}])
def test_format_shape_and_range_hold_exactly_the_codes(fmt):
    shape = arith.format_shape(fmt)
    assert shape == (signed if fmt["signed"] else unsigned)(fmt["bits"])
    codes = _codes(shape)
    assert arith.format_range(fmt) == (codes[0], codes[-1])


@pytest.mark.parametrize("bits", [0, -1, 2.0, None])
def test_format_shape_rejects_bits(bits):
    fmt = {"bits": bits, "frac": 0, "signed": True}
    with pytest.raises(ValueError) as info:
        arith.format_shape(fmt)
    assert str(info.value) == f"format {fmt!r}: bits must be a positive integer"


@pytest.mark.parametrize("lo,hi,shape", [(0, 0, unsigned(0)), (0, 1, unsigned(1)),
                                         (0, 255, unsigned(8)), (-1, 0, signed(1)),
                                         (-3, 4, signed(4)), (-128, 127, signed(8)),
                                         (-129, 0, signed(9))])
def test_shape_of_range_is_the_narrowest(lo, hi, shape):
    assert arith.shape_of_range(lo, hi) == shape


def test_bits_for_sum_holds_the_extreme_sums():
    for shape in (signed(4), unsigned(3)):
        for terms in (1, 2, 3, 25, 64):
            got = arith.bits_for_sum(shape, terms)
            codes = _codes(shape)
            want = arith.shape_of_range(codes[0] * terms, codes[-1] * terms)
            assert got.signed == shape.signed and got.width >= want.width, (shape, terms)
    assert arith.bits_for_sum(signed(8), 25) == signed(13)


def test_counter_shape_and_rom_depth_never_zero_width():
    assert [arith.counter_shape(n) for n in (0, 1, 2, 5)] == [range(2), range(2), range(2),
                                                             range(5)]
    assert [arith.rom_depth(n) for n in (0, 1, 2, 84)] == [2, 2, 2, 84]


def test_lut_index_of_every_signed_code():
    m = Module()
    pre = Signal(signed(4))
    index = Signal(4)
    m.d.comb += index.eq(arith.lut_index(pre, 4))
    for p, (got,) in _sweep(m, pre, [index]).items():
        assert got == p + 8


def test_select_every_index():
    m = Module()
    index = Signal(3)
    values = [5, 0, 7, 3, 6]
    out = arith.select(m, index, values, unsigned(3), "picked")
    for k, (got,) in _sweep(m, index, [out]).items():
        assert got == values[min(k, len(values) - 1)]   # indexes past the end: the last value


def test_address_layout_leaves_out_zero_width_fields():
    layout = arith.address_layout({"block": 0, "row": 3, "col": 0, "tap": 2})
    assert layout == data.StructLayout({"row": 3, "tap": 2})
    assert list(dict(layout.members)) == ["row", "tap"]
    assert arith.address_layout({"block": 0}).size == 0


def test_address_eq_assigns_the_fields_the_layout_kept():
    m = Module()
    address = Signal(arith.address_layout({"block": 0, "row": 3, "tap": 2}))
    row = Signal(3)
    m.d.comb += arith.address_eq(address, block=0, row=row, tap=1)
    for r, (got,) in _sweep(m, row, [address.as_value()]).items():
        assert got == r | (1 << 3)               # row in bits 0..2, tap = 1 in bits 3..4


def test_activation_shifts_and_tables():
    relu = Activation(name="c1", activation={"kind": "relu"}, acc_frac=[9, 7, 3],
                      out_format={"bits": 8, "frac": 4, "signed": False})
    assert relu.shifts == [5, 3, -1] and relu.table is None and relu.lut_memory() is None
    assert relu.pre_format == relu.out_format
    out = {"bits": 3, "frac": 2, "signed": True}
    lut = Activation(name="c1", activation={"kind": "lut", "in_bits": 2, "in_frac": 1},
                     acc_frac=[4], out_format=out, table=[-4, -1, 0, 3])
    assert lut.pre_format == {"bits": 2, "frac": 1, "signed": True}
    assert lut.shifts == [3] and lut.table == [-4, -1, 0, 3]
    memory = lut.lut_memory()
    assert memory.depth == 4 and memory.shape == signed(3)
    assert list(memory.init) == [-4, -1, 0, 3]


def test_activation_errors():
    fmt = {"bits": 3, "frac": 2, "signed": True}
    lut = {"kind": "lut", "in_bits": 2, "in_frac": 1}
    cases = [
        (dict(activation={"kind": "gelu"}),
         "layer 'f5': activation kind 'gelu' is not one of 'relu', 'none', 'lut'"),
        (dict(activation=lut), "layer 'f5': the LUT must have 2^in_bits = 4 entries"),
        (dict(activation=lut, table=[0, 1, 2]),
         "layer 'f5': the LUT must have 2^in_bits = 4 entries"),
        (dict(activation=lut, table=[0, 1, 2, 4]),
         "layer 'f5': LUT codes leave the output format {'bits': 3, 'frac': 2, 'signed': "
         "True}"),
    ]
    for kwargs, message in cases:
        with pytest.raises(ValueError) as info:
            Activation(name="f5", out_format=fmt, acc_frac=[3], **kwargs)
        assert str(info.value) == message


def test_activation_requantize_picks_the_shift_of_the_selected_channel():
    fmt = {"bits": 4, "frac": 0, "signed": True}
    act = Activation(name="c1", activation={"kind": "none"}, acc_frac=[1, 3, 1], out_format=fmt)
    m = Module()
    acc = Signal(signed(7))
    select = Signal(2)
    pre = act.requantize(m, acc, act.shifts, select)
    inputs = [[(acc, a), (select, s)] for s in range(3) for a in _codes(acc.shape())]
    seen = run_cycles(m, inputs, lambda ctx: ctx.get(pre))
    want = [_requantize(a, act.shifts[s], fmt) for s in range(3) for a in _codes(acc.shape())]
    assert seen == want


def test_check_int():
    assert arith.check_int("L", "mul", 3) == 3
    assert arith.check_int("L", "acc_bits", 2, 2) == 2


@pytest.mark.parametrize("value,minimum,message", [
    (0, 1, "L: mul must be an integer >= 1, not 0"),
    (True, 1, "L: mul must be an integer >= 1, not True"),
    (2.0, 1, "L: mul must be an integer >= 1, not 2.0"),
    (1, 2, "L: mul must be an integer >= 2, not 1"),
])
def test_check_int_errors(value, minimum, message):
    with pytest.raises(TypeError) as info:
        arith.check_int("L", "mul", value, minimum)
    assert str(info.value) == message


def test_check_map_stage():
    assert arith.check_map_stage("L", (6, 4, 2), None) == ((6, 4, 2), 6)
    assert arith.check_map_stage("L", [6, 4, 2], 3) == ((6, 4, 2), 3)


@pytest.mark.parametrize("label,in_shape,lanes,error,message", [
    (None, (6, 4, 4), 1, TypeError, "label must be a string, not None"),
    ("L", (6, 4), 1, TypeError, "L: in_shape must be (channels, height, width), not (6, 4)"),
    ("L", 6, 1, TypeError, "L: in_shape must be (channels, height, width), not 6"),
    ("L", (6, 0, 4), 1, TypeError, "L: height must be an integer >= 1, not 0"),
    ("L", (6, 4, 4.0), 1, TypeError, "L: width must be an integer >= 1, not 4.0"),
    ("L", (6, 4, 4), 4, ValueError, "L: lanes=4 must be a positive divisor of channels=6"),
    ("L", (6, 4, 4), 0, ValueError, "L: lanes=0 must be a positive divisor of channels=6"),
    ("L", (6, 4, 4), True, ValueError,
     "L: lanes=True must be a positive divisor of channels=6"),
])
def test_check_map_stage_errors(label, in_shape, lanes, error, message):
    with pytest.raises(error) as info:
        arith.check_map_stage(label, in_shape, lanes)
    assert str(info.value) == message

"""MacStage (hw/mac.py) against golden conv2d / dense / rbf + requantize + apply_lut, bit-exact."""

import numpy as np
import pytest
from amaranth.back import rtlil
from amaranth.hdl import signed

from golden import layers as L
from hw.arith import Activation
from hw.mac import MacStage, mac_extra_latency
from hw.mac_array import mac_array_latency
from hw.requant import requant_latency
from hw.simulation import run_cycles, run_stream
from hw.skid import SkidBuffer
from hw.window import LineBuffer

pytestmark = pytest.mark.filterwarnings("ignore::amaranth.hdl.UnusedElaboratable")


U8 = {"bits": 8, "frac": 8, "signed": False}


def _activation(rng, kind, out_channels, in_frac):
    w_frac = [int(v) for v in rng.integers(3, 8, out_channels)]
    acc_frac = [f + in_frac for f in w_frac]
    if kind == "relu":
        spec, out_format, table = {"kind": "relu"}, {"bits": 8, "frac": 4, "signed": False}, None
    elif kind == "none":
        spec, out_format, table = {"kind": "none"}, {"bits": 6, "frac": 3, "signed": True}, None
        acc_frac[0] = 1                                   # a left shift (s < 0)
    else:
        out_format = {"bits": 8, "frac": 6, "signed": True}
        spec = {"kind": "lut", "function": "scaled_tanh", "in_bits": 7, "in_frac": 3}
        table = L.build_lut("scaled_tanh", 7, 3, out_format)
    act = Activation(name="t", activation=spec, out_format=out_format, acc_frac=acc_frac,
                     table=table)
    return act, w_frac


def _golden_act(acc, act):
    q, _ = L.requantize(acc, np.array(act.shifts), act.pre_format)
    if act.table is not None:
        q = L.apply_lut(q, np.array(act.table), act.pre_format["bits"])
    return q


def _beats(x):
    """NCHW images -> one beat per position (all channels), row-major, images back to back."""
    n, c, h, w = x.shape
    return [[int(v) for v in x[i, :, r, q]] for i in range(n) for r in range(h) for q in range(w)]


def _conv(x, weight, bias):
    """Valid stride-1 cross-correlation with a non-square kernel (golden's conv2d is square)."""
    _, _, kh, kw = weight.shape
    n, _, h, w = x.shape
    acc = np.zeros((n, weight.shape[0], h - kh + 1, w - kw + 1), np.int64) + bias[:, None, None]
    for u in range(kh):
        for v in range(kw):
            acc += np.einsum("nchw,oc->nohw", x[:, :, u:u + h - kh + 1, v:v + w - kw + 1],
                             weight[:, :, u, v])
    return acc


def _positions(y):
    n, c, h, w = y.shape
    return [[int(v) for v in y[i, :, r, q]] for i in range(n) for r in range(h) for q in range(w)]


def _run(dut, positions, n_out, **kwargs):
    """Send whole positions as beats of ``c_block`` channels; return the outputs regrouped into
    whole positions from beats of ``pe`` channels (and the cycle of each position's last beat).
    """
    c_block, pe = dut.split[0], dut.pe
    beats = [pos[k:k + c_block] for pos in positions for k in range(0, len(pos), c_block)]
    groups = dut.groups
    out, times = run_stream(dut, beats, n_out * groups, **kwargs)
    assert all(len(beat) == pe for beat in out)
    return ([sum(out[k:k + groups], []) for k in range(0, len(out), groups)],
            times[groups - 1::groups])


@pytest.mark.parametrize("kind,pe,simd", [
    ("relu", 1, 1), ("relu", 2, 3), ("relu", 4, 3), ("lut", 2, 1), ("none", 1, 3),
])
def test_conv(kind, pe, simd):
    rng = np.random.default_rng(pe * 10 + simd)
    channels, height, width, out_channels, k, n = 3, 6, 5, 4, 3, 2
    act, _ = _activation(rng, kind, out_channels, U8["frac"])
    weight = rng.integers(-128, 128, (out_channels, channels, k, k))
    bias = rng.integers(-20000, 20000, out_channels)
    acc_bits = L.acc_bits_for("conv", 8, 8, channels * k * k)
    dut = MacStage(label="layers[0] 'c'", in_shape=(channels, height, width), in_format=U8,
                   weight_format={"bits": 8, "frac": 5, "signed": True}, weight=weight,
                   bias=bias, acc_bits=acc_bits, activation=act, pe=pe, simd=simd)
    x = rng.integers(0, 256, (n, channels, height, width))
    expected = _positions(_golden_act(L.conv2d(x, weight, bias), act))
    out, _ = _run(dut, _beats(x), len(expected), seed=pe + simd, gap=0.3, stall=0.3)
    assert out == expected


@pytest.mark.parametrize("kernel,channels,pe,simd,split", [
    ((3, 3), 2, 2, 3, (1, 3, 1)),          # a window row of one channel per step
    ((3, 3), 2, 1, 9, (1, 3, 3)),          # one channel of the whole window
    ((3, 3), 2, 4, 18, (2, 3, 3)),         # the whole window in one step
    ((4, 6), 1, 2, 4, (1, 2, 2)),          # 2 of 6 taps x 2 of 4 rows: both rotations
    ((4, 6), 2, 1, 6, (2, 3, 1)),
    ((2, 2), 3, 2, 6, (3, 2, 1)),
])
def test_conv_fine_grained(kernel, channels, pe, simd, split):
    # SIMD = c_block·t·r: banked line buffer (t column banks, r row banks), rotated reads.
    rng = np.random.default_rng(simd * 7 + pe)
    (kh, kw), height, width, out_channels, n = kernel, 6, 9, 4, 2
    act, _ = _activation(rng, "lut" if channels == 3 else "relu", out_channels, U8["frac"])
    weight = rng.integers(-128, 128, (out_channels, channels, kh, kw))
    bias = rng.integers(-20000, 20000, out_channels)
    dut = MacStage(label="layers[0] 'c'", in_shape=(channels, height, width), in_format=U8,
                   weight_format={"bits": 8, "frac": 5, "signed": True}, weight=weight,
                   bias=bias, acc_bits=L.acc_bits_for("conv", 8, 8, channels * kh * kw),
                   activation=act, pe=pe, simd=simd)
    assert dut.split == split
    assert dut.steps == out_channels // pe * kh * kw * channels // simd
    x = rng.integers(0, 256, (n, channels, height, width))
    expected = _positions(_golden_act(_conv(x, weight, bias), act))
    if kh == kw:
        assert np.array_equal(_conv(x, weight, bias), L.conv2d(x, weight, bias))
    out, _ = _run(dut, _beats(x), len(expected), seed=simd, gap=0.3, stall=0.3)
    assert out == expected


@pytest.mark.parametrize("pe,simd", [(1, 1), (2, 1), (2, 3), (3, 2), (1, 18), (6, 4)])
def test_sparse_conv(pe, simd):
    # A connection table: each group's steps visit only the channel blocks connected to one
    # of its outputs; the weight ROMs hold only those steps.
    rng = np.random.default_rng(100 + pe * simd)
    channels, height, width, out_channels, k, n = 4, 5, 6, 6, 3, 2
    table = rng.integers(0, 2, (out_channels, channels))
    table[np.arange(out_channels), rng.integers(0, channels, out_channels)] = 1
    table[0] = [1, 0, 0, 0]
    act, _ = _activation(rng, "relu", out_channels, U8["frac"])
    weight = rng.integers(-128, 128, (out_channels, channels, k, k)) * table[:, :, None, None]
    bias = rng.integers(-20000, 20000, out_channels)
    dut = MacStage(label="layers[2] 'c3'", in_shape=(channels, height, width), in_format=U8,
                   weight_format={"bits": 8, "frac": 5, "signed": True}, weight=weight,
                   bias=bias, acc_bits=L.acc_bits_for("conv", 8, 8, channels * k * k),
                   activation=act, pe=pe, simd=simd, connections=table)
    c_block, t, r = dut.split
    blocks = table.reshape(out_channels // pe, pe, channels // c_block, c_block).any(axis=(1, 3))
    assert dut.steps == (k // t) * (k // r) * int(blocks.sum())
    if (pe, simd) == (1, 1):
        assert dut.steps == int(table.sum()) * k * k
    x = rng.integers(0, 256, (n, channels, height, width))
    expected = _positions(_golden_act(L.conv2d(x, weight, bias), act))
    out, _ = _run(dut, _beats(x), len(expected), seed=pe, gap=0.3, stall=0.3)
    assert out == expected


def test_sparse_errors():
    table = np.ones((16, 6), np.int64)
    table[3, 2] = 0
    weight = np.ones((16, 6, 5, 5), np.int64)
    with pytest.raises(ValueError) as info:
        MacStage(**_conv_args(weight=weight, connections=table))
    assert str(info.value) == ("layers[2] 'c3': nonzero weights of unconnected (output, input) "
                               "pairs would be skipped")
    with pytest.raises(ValueError) as info:
        MacStage(**_conv_args(connections=table[:, :4]))
    assert str(info.value) == "layers[2] 'c3': connections must have shape (16, 6), not (16, 4)"


@pytest.mark.parametrize("pe,simd", [(1, 1), (3, 2), (6, 4), (2, 8), (3, 12), (6, 24)])
def test_dense_after_spatial(pe, simd):
    # The stream delivers HWC order; golden flattens CHW: the ROM must be permuted.
    rng = np.random.default_rng(pe + 7 * simd)
    channels, height, width, out_features, n = 4, 2, 3, 6, 3
    fmt = {"bits": 8, "frac": 4, "signed": True}
    act, _ = _activation(rng, "relu", out_features, fmt["frac"])
    features = channels * height * width
    weight = rng.integers(-128, 128, (out_features, features))
    bias = rng.integers(-5000, 5000, out_features)
    dut = MacStage(label="layers[3] 'f'", in_shape=(channels, height, width), in_format=fmt,
                   weight_format={"bits": 8, "frac": 5, "signed": True},
                   weight=weight.reshape(out_features, channels, height, width), bias=bias,
                   acc_bits=L.acc_bits_for("dense", 8, 8, features), activation=act,
                   pe=pe, simd=simd)
    x = rng.integers(-128, 128, (n, channels, height, width))
    acc = L.dense(x.reshape(n, -1), weight, bias)
    expected = _golden_act(acc, act).tolist()
    out, _ = _run(dut, _beats(x), n, seed=pe, gap=0.4, stall=0.4)
    assert out == expected


@pytest.mark.parametrize("pe,simd", [(1, 1), (3, 5)])
def test_rbf_final(pe, simd):
    rng = np.random.default_rng(pe)
    features, classes, n = 10, 3, 3
    fmt = {"bits": 8, "frac": 4, "signed": False}
    centers = rng.integers(0, 256, (classes, features))
    acc_bits = L.acc_bits_for("rbf", None, 8, features)
    dut = MacStage(label="layers[5] 'out'", in_shape=(features, 1, 1), in_format=fmt,
                   weight_format=fmt, weight=centers.reshape(classes, features, 1, 1),
                   bias=None, acc_bits=acc_bits, activation=None, op="sqdiff", pe=pe, simd=simd)
    x = rng.integers(0, 256, (n, features))
    out, _ = _run(dut, [[int(v) for v in row] for row in x], n, gap=0.3, stall=0.3)
    assert out == L.rbf(x, centers).tolist()


def test_final_dense_raw_scores():
    rng = np.random.default_rng(3)
    weight = rng.integers(-128, 128, (3, 4))
    bias = rng.integers(-100, 100, 3)
    fmt = {"bits": 8, "frac": 4, "signed": False}
    dut = MacStage(label="layers[1] 'out'", in_shape=(4, 1, 1), in_format=fmt,
                   weight_format={"bits": 8, "frac": 6, "signed": True},
                   weight=weight.reshape(3, 4, 1, 1), bias=bias,
                   acc_bits=L.acc_bits_for("dense", 8, 8, 4), activation=None, pe=3, simd=4)
    x = rng.integers(0, 256, (4, 4))
    out, _ = _run(dut, x.tolist(), 4, stall=0.5)
    assert out == L.dense(x, weight, bias).tolist()


def _conv_args(**overrides):
    args = dict(label="layers[2] 'c3'", in_shape=(6, 14, 14), in_format=U8,
                weight_format={"bits": 8, "frac": 5, "signed": True},
                weight=np.zeros((16, 6, 5, 5), dtype=np.int64), bias=np.zeros(16, np.int64),
                acc_bits=22, activation=None)
    args.update(overrides)
    return args


def test_bad_pe():
    with pytest.raises(ValueError) as info:
        MacStage(**_conv_args(pe=7))
    assert str(info.value) == "layers[2] 'c3': pe=7 does not divide out_channels=16"


def test_bad_simd():
    with pytest.raises(ValueError) as info:
        MacStage(**_conv_args(simd=4))
    assert str(info.value) == ("layers[2] 'c3': simd=4 does not divide the window "
                               "kh·kw·C = 5·5·6 = 150")
    assert MacStage(**_conv_args(simd=25)).split == (1, 5, 5)         # 5 taps x 5 rows
    assert MacStage(**_conv_args(simd=30)).split == (6, 5, 1)
    assert MacStage(**_conv_args(simd=10)).split == (2, 5, 1)


def test_bad_arguments():
    with pytest.raises(TypeError) as info:
        MacStage(**_conv_args(pe=0))
    assert str(info.value) == "layers[2] 'c3': pe must be an integer >= 1, not 0"
    with pytest.raises(ValueError) as info:
        MacStage(**_conv_args(op="add"))
    assert str(info.value) == "layers[2] 'c3': op must be 'mul' or 'sqdiff', not 'add'"
    with pytest.raises(ValueError) as info:
        MacStage(**_conv_args(in_shape=(6, 4, 4)))
    assert str(info.value) == "layers[2] 'c3': kernel 5x5 is larger than the input 4x4"


def test_cycles_and_properties():
    dut = MacStage(**_conv_args(pe=4, simd=3))
    assert dut.out_shape == (16, 10, 10)
    assert (dut.groups, dut.fold, dut.steps) == (4, 50, 200)
    assert dut.cycles == 10 * 10 * 4 * 50
    dut = MacStage(**_conv_args(pe=16, simd=6, weight=np.zeros((16, 6, 1, 1), np.int64)))
    assert dut.cycles == 14 * 14                    # bound by input beats, one per cycle
    dut = MacStage(**_conv_args(pe=16, simd=2, weight=np.zeros((16, 6, 1, 1), np.int64)))
    assert dut.cycles == 14 * 14 * 3                # three beats of 2 channels per position
    dut = MacStage(**_conv_args(pe=2, simd=25))    # 5 taps x 5 rows of a channel per step
    assert (dut.split, dut.steps, dut.cycles) == ((1, 5, 5), 8 * 6, 10 * 10 * 8 * 6)
    resources = dut.resources()
    assert resources["multipliers"] == 50
    assert resources["weight_memories"] == [
        {"depth": 48, "width": 25 * 8, "bits": 48 * 200, "large": False}] * 2
    # One channel per word: 2 rows x 4 columns x 6 channel blocks (padded to 8) per bank.
    assert resources["ring_banks"] == {"count": 25, "depth": 2 * 4 * 8, "width": 8}
    assert resources["memory_bits"] == {"ring": 25 * 64 * 8, "weights": 2 * 48 * 200,
                                        "bias": 0, "lut": 0}


@pytest.mark.parametrize("op,in_signed", [("mul", False), ("mul", True), ("sqdiff", False),
                                          ("sqdiff", True)])
def test_lut_multipliers_exact(op, in_signed):
    # lut_mul: products from shifted partial products (no `*`), bit-exact at the code extremes
    # (-128 x -128, 255 x 127, ...) for unsigned and signed inputs and both ops.
    rng = np.random.default_rng(17 + in_signed)
    fmt = {"bits": 8, "frac": 4, "signed": in_signed}
    lo, hi = (-128, 127) if in_signed else (0, 255)
    features, classes, n = 6, 4, 6
    w_fmt = fmt if op == "sqdiff" else {"bits": 8, "frac": 6, "signed": True}
    w_lo, w_hi = (lo, hi) if op == "sqdiff" else (-128, 127)
    weight = rng.integers(w_lo, w_hi, (classes, features), endpoint=True)
    weight[0, :2] = [w_lo, w_hi]
    x = rng.integers(lo, hi, (n, features), endpoint=True)
    x[0, :2] = [lo, hi]
    x[1, :2] = [hi, lo]
    bias = None if op == "sqdiff" else rng.integers(-100, 100, classes)
    acc_bits = L.acc_bits_for("rbf" if op == "sqdiff" else "dense", None if op == "sqdiff"
                              else 8, 8, features)
    args = dict(label="layers[1] 'out'", in_shape=(features, 1, 1), in_format=fmt,
                weight_format=w_fmt, weight=weight.reshape(classes, features, 1, 1), bias=bias,
                acc_bits=acc_bits, activation=None, op=op, pe=2, simd=3)
    dut = MacStage(**args, lut_mul=True)
    out, _ = _run(dut, x.tolist(), n, gap=0.2, stall=0.2)
    want = L.rbf(x, weight) if op == "sqdiff" else L.dense(x, weight, bias)
    assert out == want.tolist()
    # The products are adders only: no multiplication cell in the design (so synthesis cannot
    # map them to DSP blocks), unlike the default.
    assert "$mul" not in rtlil.convert(MacStage(**args, lut_mul=True))
    assert "$mul" in rtlil.convert(MacStage(**args))


@pytest.mark.parametrize("kind,simd", [("relu", 1), ("lut", 2), ("relu", 16), ("final", 4)])
def test_latency_measured(kind, simd):
    # A dense layer's first step issues the cycle after its last input beat is written; its
    # output is valid `steps + latency` cycles after that issue. The latency is the sum of
    # the parts' registers.
    rng = np.random.default_rng(simd)
    features, outs = 16, 2
    act = None if kind == "final" else _activation(rng, kind, outs, U8["frac"])[0]
    dut = MacStage(label="f", in_shape=(features, 1, 1), in_format=U8,
                   weight_format={"bits": 8, "frac": 5, "signed": True},
                   weight=rng.integers(-128, 128, (outs, features, 1, 1)), bias=None,
                   acc_bits=24, activation=act, pe=outs, simd=simd)
    lut = kind == "lut"
    assert dut.latency == mac_extra_latency(simd, lut) == (
        LineBuffer.latency + mac_array_latency(simd) + requant_latency(lut)
        + SkidBuffer.latency - 1)
    c_block = dut.split[0]
    beats = [[(dut.i.valid, 1), (dut.i.payload, rng.integers(0, 256, c_block).tolist())]
             for _ in range(features // c_block)]
    inputs = [[(dut.o.ready, 1)] + beats[0]] + beats[1:] + [[(dut.i.valid, 0)]] * 40
    seen = run_cycles(dut, inputs, lambda ctx: ctx.get(dut.o.valid))
    first_issue = len(beats)
    assert seen.index(1) == first_issue + dut.steps + dut.latency
    assert signed(24) == dut.o.payload.shape().elem_shape or kind != "final"

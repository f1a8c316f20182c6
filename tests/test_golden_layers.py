"""golden/layers.py against deliberately naive Python-int references (loops, no NumPy math)."""

import itertools
import math

import numpy as np
import pytest

from core.kinds import gap_scale
from golden import layers as L

S8 = {"bits": 8, "frac": 0, "signed": True}
U8 = {"bits": 8, "frac": 0, "signed": False}


def rng(seed):
    return np.random.default_rng(seed)


def codes(r, bits, signed, shape, extremes=True):
    """Random codes of a format, with its minimum and maximum placed in the array."""
    lo, hi = (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if signed else (0, (1 << bits) - 1)
    a = r.integers(lo, hi, endpoint=True, size=shape).astype(np.int64)
    if extremes and a.size >= 2:
        a.flat[0], a.flat[-1] = lo, hi
    return a


# Naive references: Python ints, one element at a time, straight from golden/README.md.

def naive_conv2d(x, w, b):
    n, c, h, wd = x.shape
    o, _, k, _ = w.shape
    out = np.zeros((n, o, h - k + 1, wd - k + 1), dtype=object)
    for i0, o0, y, z in itertools.product(range(n), range(o), range(h - k + 1),
                                          range(wd - k + 1)):
        total = int(b[o0])
        for c0, u, v in itertools.product(range(c), range(k), range(k)):
            total += int(w[o0, c0, u, v]) * int(x[i0, c0, y + u, z + v])
        out[i0, o0, y, z] = total
    return out


def naive_dense(x, w, b):
    return np.array([[int(b[o]) + sum(int(w[o, f]) * int(x[n, f]) for f in range(x.shape[1]))
                      for o in range(w.shape[0])] for n in range(x.shape[0])], dtype=object)


def naive_requantize(acc, shifts, fmt):
    """``shifts`` has one entry per channel (axis 1)."""
    lo, hi = L.format_range(fmt)
    out = np.zeros(acc.shape, dtype=object)
    count = 0
    for index in np.ndindex(acc.shape):
        a, s = int(acc[index]), int(shifts[index[1]])
        v = (a + 2 ** (s - 1)) // 2 ** s if s > 0 else a * 2 ** -s
        if v > hi or (v < lo and fmt["signed"]):
            count += 1
        out[index] = min(max(v, lo), hi)
    return out, count


def naive_pool(x, size, reduce):
    n, c, h, w = x.shape
    out = np.zeros((n, c, h // size, w // size), dtype=object)
    for index in np.ndindex(out.shape):
        i, j = index[2] * size, index[3] * size
        window = [int(x[index[0], index[1], i + u, j + v])
                  for u in range(size) for v in range(size)]
        out[index] = reduce(window, index[1])
    return out


def tolist(a):
    return np.asarray(a).tolist()


class TestFormatRange:
    def test_signed_unsigned(self):
        assert L.format_range(S8) == (-128, 127)
        assert L.format_range(U8) == (0, 255)
        assert L.format_range({"bits": 1, "frac": 3, "signed": True}) == (-1, 0)
        assert L.format_range({"bits": 24, "signed": False}) == (0, 2 ** 24 - 1)

    def test_wrong(self):
        with pytest.raises(TypeError, match=r"^format_range: fmt must be a dict with 'bits' and "
                                            r"'signed', not 8$"):
            L.format_range(8)
        with pytest.raises(ValueError, match=r"fmt\['bits'\] must be at least 1, not 0"):
            L.format_range({"bits": 0, "signed": True})


class TestPad2d:
    def test_zeros_around(self):
        x = codes(rng(0), 8, False, (2, 3, 4, 5))
        y = L.pad2d(x, 2)
        assert y.shape == (2, 3, 8, 9) and y.dtype == np.int64
        assert tolist(y[:, :, 2:6, 2:7]) == tolist(x)
        y[:, :, 2:6, 2:7] = 0
        assert not y.any()

    def test_zero_pad_copies(self):
        x = np.ones((1, 1, 2, 2), dtype=np.uint8)
        y = L.pad2d(x, 0)
        y[0, 0, 0, 0] = 5
        assert x[0, 0, 0, 0] == 1 and y.dtype == np.int64

    def test_negative(self):
        with pytest.raises(ValueError, match=r"^pad2d: pad must be at least 0, not -1$"):
            L.pad2d(np.zeros((1, 1, 2, 2), dtype=np.int64), -1)


class TestConv2d:
    @pytest.mark.parametrize("seed", range(4))
    def test_random_shapes(self, seed):
        r = rng(seed)
        n, c, o, k = (int(v) for v in r.integers(1, 4, size=4))
        h, w = (int(v) for v in r.integers(k, k + 4, size=2))
        x = codes(r, 8, bool(seed % 2), (n, c, h, w))
        weight = codes(r, 8, True, (o, c, k, k))
        bias = codes(r, 20, True, (o,))
        got = L.conv2d(x, weight, bias)
        assert got.dtype == np.int64 and got.shape == (n, o, h - k + 1, w - k + 1)
        assert tolist(got) == tolist(naive_conv2d(x, weight, bias))

    def test_maximal_fan_in_extremes(self):
        # Every product at its extreme: 16 channels x 5x5 = 400 of -128 * 255.
        x = np.full((2, 16, 6, 6), 255, dtype=np.int64)
        weight = np.full((3, 16, 5, 5), -128, dtype=np.int64)
        weight[1] = 127
        bias = np.array([-(1 << 24), (1 << 24) - 1, 0])
        got = L.conv2d(x, weight, bias)
        assert tolist(got) == tolist(naive_conv2d(x, weight, bias))
        assert got[0, 0, 0, 0] == -(1 << 24) - 400 * 128 * 255
        assert L.acc_bits_for("conv", 8, 8, 400) == 26
        assert -(1 << 25) <= got.min() and got.max() < (1 << 25)

    def test_beyond_float_exactness_uses_int64(self):
        # Partial sums above 2^53: float64 would round, the int64 path must not.
        r = rng(7)
        x = r.integers(-(1 << 20), 1 << 20, size=(2, 2, 4, 4))
        weight = r.integers(-(1 << 35), 1 << 35, size=(2, 2, 3, 3))
        weight.flat[0] = (1 << 35) + 1
        bias = np.array([1, -1])
        assert tolist(L.conv2d(x, weight, bias)) == tolist(naive_conv2d(x, weight, bias))

    def test_overflow(self):
        x = np.full((1, 1, 2, 2), 1 << 31, dtype=np.int64)
        weight = np.full((1, 1, 2, 2), 1 << 31, dtype=np.int64)
        with pytest.raises(OverflowError, match=r"^conv2d: sums can reach 1.84e\+19, beyond "
                                                r"2\^62"):
            L.conv2d(x, weight, np.zeros(1, dtype=np.int64))

    def test_many_images_in_blocks(self):
        r = rng(3)
        x = codes(r, 8, False, (300, 2, 9, 9))
        weight = codes(r, 8, True, (4, 2, 3, 3))
        bias = codes(r, 12, True, (4,))
        got = L.conv2d(x, weight, bias)
        for i in (0, 137, 299):
            assert tolist(got[i:i + 1]) == tolist(naive_conv2d(x[i:i + 1], weight, bias))

    def test_errors(self):
        x = np.zeros((1, 2, 4, 4), dtype=np.int64)
        with pytest.raises(TypeError, match=r"^conv2d: x must be an array of integer codes, not "
                                            r"float64; quantize it first$"):
            L.conv2d(x.astype(float), np.zeros((1, 2, 3, 3), int), np.zeros(1, int))
        with pytest.raises(ValueError, match=r"^conv2d: weight has 3 input channels but x has "
                                             r"2$"):
            L.conv2d(x, np.zeros((1, 3, 3, 3), int), np.zeros(1, int))
        with pytest.raises(ValueError, match=r"^conv2d: bias must be \[1\], not \[2\]$"):
            L.conv2d(x, np.zeros((1, 2, 3, 3), int), np.zeros(2, int))
        with pytest.raises(ValueError, match=r"^conv2d: kernel 5 is larger than the 4x4 input$"):
            L.conv2d(x, np.zeros((1, 2, 5, 5), int), np.zeros(1, int))
        with pytest.raises(ValueError, match=r"^conv2d: x must have 4 dimensions, not shape "
                                             r"\[2, 4, 4\]$"):
            L.conv2d(x[0], np.zeros((1, 2, 3, 3), int), np.zeros(1, int))


class TestDense:
    @pytest.mark.parametrize("seed", range(3))
    def test_random(self, seed):
        r = rng(seed)
        n, f, o = (int(v) for v in r.integers(1, 30, size=3))
        x = codes(r, 8, bool(seed % 2), (n, f))
        weight = codes(r, 8, True, (o, f))
        bias = codes(r, 24, True, (o,))
        assert tolist(L.dense(x, weight, bias)) == tolist(naive_dense(x, weight, bias))

    def test_extremes(self):
        x = np.full((1, 400), -128, dtype=np.int64)
        weight = np.full((2, 400), -128, dtype=np.int64)
        weight[1] = 127
        bias = np.array([(1 << 24) - 1, -(1 << 24)])
        assert tolist(L.dense(x, weight, bias)) == [[(1 << 24) - 1 + 400 * 128 * 128,
                                                     -(1 << 24) - 400 * 127 * 128]]

    def test_beyond_float_exactness(self):
        r = rng(5)
        x = r.integers(-(1 << 25), 1 << 25, size=(3, 40))
        weight = r.integers(-(1 << 30), 1 << 30, size=(2, 40))
        bias = np.array([3, -3])
        assert tolist(L.dense(x, weight, bias)) == tolist(naive_dense(x, weight, bias))

    def test_errors(self):
        with pytest.raises(ValueError, match=r"^dense: weight has 4 input features but x has "
                                             r"3$"):
            L.dense(np.zeros((1, 3), int), np.zeros((2, 4), int), np.zeros(2, int))


class TestRequantize:
    def test_round_half_up_ties(self):
        acc = np.array([-3, -2, -1, 0, 1, 2, 3])
        q, saturations = L.requantize(acc, 1, S8)
        # -1.5 -> -1, -1 -> -1, -0.5 -> 0, 0, 0.5 -> 1, 1, 1.5 -> 2
        assert tolist(q) == [-1, -1, 0, 0, 1, 1, 2] and saturations == 0
        q, _ = L.requantize(np.array([-6, -2, 2, 6, -5, 5]), 2, S8)
        # -1.5 -> -1, -0.5 -> 0, 0.5 -> 1, 1.5 -> 2, -1.25 -> -1, 1.25 -> 1
        assert tolist(q) == [-1, 0, 1, 2, -1, 1]

    def test_negative_and_zero_shift(self):
        q, saturations = L.requantize(np.array([3, -3, 31, 32, -32, -33]), -2, S8)
        assert tolist(q) == [12, -12, 124, 127, -128, -128] and saturations == 2
        q, saturations = L.requantize(np.array([5, -129, 128]), 0, S8)
        assert tolist(q) == [5, -128, 127] and saturations == 2

    def test_left_shift_does_not_wrap(self):
        acc = np.array([1 << 40, -(1 << 40), 1, 0])
        q, saturations = L.requantize(acc, -40, {"bits": 48, "frac": 0, "signed": True})
        assert tolist(q) == [(1 << 47) - 1, -(1 << 47), 1 << 40, 0] and saturations == 2

    def test_unsigned_clamp_at_zero_is_relu_not_saturation(self):
        q, saturations = L.requantize(np.array([-5, -1, 300, 7, 511]), 1, U8)
        assert tolist(q) == [0, 0, 150, 4, 255] and saturations == 1

    @pytest.mark.parametrize("seed", range(4))
    @pytest.mark.parametrize("fmt", [S8, U8, {"bits": 4, "frac": 2, "signed": True}])
    def test_per_channel_against_naive(self, seed, fmt):
        r = rng(seed)
        acc = codes(r, 18, True, (3, 6, 4, 2))
        shifts = np.array([-40, -2, 0, 1, 7, 12])
        q, saturations = L.requantize(acc, shifts, fmt)
        expected, count = naive_requantize(acc, shifts, fmt)
        assert tolist(q) == tolist(expected) and saturations == count
        q, saturations = L.requantize(acc[:, 0], 9, fmt)
        expected, count = naive_requantize(acc[:, 0], [9] * 4, fmt)
        assert tolist(q) == tolist(expected) and saturations == count

    def test_errors(self):
        with pytest.raises(ValueError, match=r"^requantize: a per-channel shift needs one entry "
                                             r"per channel \(axis 1 of acc \[2, 3\]\), not 2$"):
            L.requantize(np.zeros((2, 3), int), np.array([1, 2]), S8)
        with pytest.raises(ValueError, match=r"^requantize: shifts must lie in -62..62, not 63"):
            L.requantize(np.zeros(3, int), 63, S8)


class TestRequantizeSplit:
    ACC = np.array([-300, -129, -128, 0, 127, 128, 400])

    @pytest.mark.parametrize("lossless, expected", [((False, False), (4, 0)),
                                                    ((True, False), (2, 2)),
                                                    ((False, True), (2, 2)),
                                                    ((True, True), (0, 4))])
    def test_lossless_ends_count_as_clamps(self, lossless, expected):
        q, saturations, clamps = L.requantize_split(self.ACC, 0, S8, lossless)
        assert tolist(q) == [-128, -128, -128, 0, 127, 127, 127]
        assert (saturations, clamps) == expected
        assert saturations + clamps == L.requantize(self.ACC, 0, S8)[1]

    def test_unsigned_clamp_at_zero_is_neither(self):
        q, saturations, clamps = L.requantize_split(np.array([-5, 300, 7]), 1, U8, (True, False))
        assert tolist(q) == [0, 150, 4] and (saturations, clamps) == (0, 0)

    def test_errors(self):
        with pytest.raises(ValueError, match=r"^requantize_split: shifts must lie in -62..62, "
                                             r"not 63; check the fractions$"):
            L.requantize_split(np.zeros(3, int), 63, S8, (True, True))


class TestLutLossless:
    @pytest.mark.parametrize("function, fmt, limits", [
        ("tanh", S8, (-1, 1)),
        ("tanh", {"bits": 8, "frac": 7, "signed": True}, (-128, 127)),
        ("tanh", {"bits": 8, "frac": 6, "signed": True}, (-64, 64)),
        ("scaled_tanh", {"bits": 8, "frac": 6, "signed": True}, (-110, 110)),
        ("sigmoid", U8, (0, 1)),
        ("sigmoid", {"bits": 8, "frac": 8, "signed": False}, (0, 255)),
    ])
    def test_limits(self, function, fmt, limits):
        assert L.lut_limits(function, fmt) == limits

    def test_table_flat_at_its_ends_is_lossless(self):
        out = {"bits": 8, "frac": 7, "signed": True}
        # tanh(±4) rounds to the limit codes -128 and 127; tanh(±2) does not.
        assert L.lut_lossless(L.build_lut("tanh", 8, 5, out), "tanh", out) == (True, True)
        assert L.lut_lossless(L.build_lut("tanh", 8, 6, out), "tanh", out) == (False, False)
        sig = {"bits": 8, "frac": 8, "signed": False}
        # sigmoid(-4) = 0.018 rounds to 5, not 0; sigmoid(4) = 0.982 rounds to 251, not 255.
        assert L.lut_lossless(L.build_lut("sigmoid", 8, 5, sig), "sigmoid", sig) == \
            (False, False)
        assert L.lut_lossless(L.build_lut("sigmoid", 8, 4, sig), "sigmoid", sig) == \
            (True, True)

    def test_errors(self):
        with pytest.raises(ValueError, match=r"^build_lut: function='relu' is not one of: tanh, "
                                             r"scaled_tanh, sigmoid$"):
            L.lut_limits("relu", S8)


class TestApplyLut:
    def test_indexing(self):
        table = np.arange(16) * 10 - 3
        pre = np.array([[-8, -1], [0, 7]])
        assert tolist(L.apply_lut(pre, table, 4)) == [[-3, 67], [77, 147]]

    def test_errors(self):
        with pytest.raises(ValueError, match=r"^apply_lut: pre-activation codes -9..0 exceed the "
                                             r"signed 4-bit range; requantize them first$"):
            L.apply_lut(np.array([-9, 0]), np.zeros(16, int), 4)
        with pytest.raises(ValueError, match=r"^apply_lut: table has 8 entries but in_bits=4 "
                                             r"needs 16$"):
            L.apply_lut(np.array([0]), np.zeros(8, int), 4)


class TestPools:
    @pytest.mark.parametrize("size", [1, 2, 3])
    def test_maxpool(self, size):
        x = codes(rng(size), 8, True, (2, 3, 6, 6))
        assert tolist(L.maxpool(x, size)) == tolist(naive_pool(x, size, lambda w, c: max(w)))

    @pytest.mark.parametrize("size", [1, 2, 4])
    def test_avgpool(self, size):
        x = codes(rng(size), 8, True, (2, 3, 8, 8))
        d = size * size
        expected = naive_pool(x, size, lambda w, c: (sum(w) + d // 2) // d)
        assert tolist(L.avgpool(x, size)) == tolist(expected)

    def test_avgpool_ties(self):
        x = np.array([[[[-1, 0, -1, -1, 1, 1], [-1, 0, 0, 0, 0, 0]]]])
        # sums -2, -2, 2: -0.5 -> 0, -0.5 -> 0, 0.5 -> 1
        assert tolist(L.avgpool(x, 2)) == [[[[0, 0, 1]]]]
        x = np.array([[[[-3, -3], [0, 0]]]])
        assert tolist(L.avgpool(x, 2)) == [[[[-1]]]]  # -1.5 -> -1

    def test_errors(self):
        x = np.zeros((1, 1, 6, 6), dtype=np.int64)
        with pytest.raises(ValueError, match=r"^avgpool: size=3 is not a power of two; the "
                                             r"division by size² must be a shift"):
            L.avgpool(x, 3)
        with pytest.raises(ValueError, match=r"^maxpool: size=4 does not divide the 6x6 input; "
                                             r"pooling windows do not overlap and may not be "
                                             r"partial$"):
            L.maxpool(x, 4)


def naive_gap(x, mul, shift, fmt):
    """Per image and channel, in Python ints: the README's rule for global average pooling."""
    lo, hi = L.format_range(fmt)
    out, saturations = [], 0
    for image in x.tolist():
        row = []
        for channel in image:
            total = sum(sum(line) for line in channel)
            value = (total * mul + (1 << (shift - 1))) >> shift
            saturations += value < lo or value > hi
            row.append([[min(max(value, lo), hi)]])
        out.append(row)
    return out, saturations


class TestGlobalAvgpool:
    @pytest.mark.parametrize("height, width", [(2, 2), (4, 4), (5, 5), (3, 5), (1, 7)])
    @pytest.mark.parametrize("bits, signed", [(8, False), (8, True), (3, True)])
    def test_against_naive(self, height, width, bits, signed):
        fmt = {"bits": bits, "frac": 4, "signed": signed}
        x = codes(rng(height * width + bits), bits, signed, (5, 3, height, width))
        mul, shift = gap_scale(height * width)
        q, saturations = L.global_avgpool(x, mul, shift, fmt)
        assert q.dtype == np.int64 and q.shape == (5, 3, 1, 1)
        assert (tolist(q), saturations) == naive_gap(x, mul, shift, fmt)

    def test_power_of_two_is_the_exact_mean_rounded_half_up(self):
        x = np.array([[[[-1, 0], [0, -1]], [[1, 0], [0, 1]], [[-3, -3], [0, 0]]]])
        assert gap_scale(4) == (1, 2)
        # -0.5 -> 0, 0.5 -> 1, -1.5 -> -1
        assert tolist(L.global_avgpool(x, 1, 2, S8)[0]) == [[[[0]], [[1]], [[-1]]]]

    def test_saturation_at_the_extremes(self):
        # 3x5: mul / 2^shift = 34953 / 2^19 is above 1/15, so a full-scale map of 18-bit
        # codes rounds past the range at both ends.
        mul, shift = gap_scale(15)
        assert (mul, shift) == (34953, 19) and mul * 15 > 1 << shift
        fmt = {"bits": 18, "frac": 0, "signed": True}
        lo, hi = L.format_range(fmt)
        x = np.stack([np.full((3, 5), hi), np.full((3, 5), lo), np.zeros((3, 5), np.int64)])
        q, saturations = L.global_avgpool(x[None], mul, shift, fmt)
        assert tolist(q) == [[[[hi]], [[lo]], [[0]]]] and saturations == 2
        assert naive_gap(x[None], mul, shift, fmt) == (tolist(q), 2)
        # 16-bit signed codes stay in range: hi · 7 / 2^19 + 1/2 < 1.
        fmt = {"bits": 16, "frac": 0, "signed": True}
        lo, hi = L.format_range(fmt)
        x = np.stack([np.full((3, 5), hi), np.full((3, 5), lo)])
        q, saturations = L.global_avgpool(x[None], mul, shift, fmt)
        assert tolist(q) == [[[[hi]], [[lo]]]] and saturations == 0

    def test_errors(self):
        x = np.zeros((1, 1, 2, 2), dtype=np.int64)
        with pytest.raises(ValueError, match=r"^global_avgpool: shift must be at least 1, "
                                             r"not 0$"):
            L.global_avgpool(x, 1, 0, S8)
        with pytest.raises(ValueError, match=r"^global_avgpool: mul must be at least 1, not 0$"):
            L.global_avgpool(x, 0, 2, S8)
        with pytest.raises(OverflowError, match=r"^global_avgpool: sums times mul can reach "
                                                r"beyond 2\^62$"):
            L.global_avgpool(np.full((1, 1, 2, 2), 1 << 50), 1 << 12, 2,
                             {"bits": 62, "frac": 0, "signed": True})


class TestSubsample:
    @pytest.mark.parametrize("size", [1, 2, 3])
    def test_against_naive(self, size):
        r = rng(size)
        x = codes(r, 8, True, (2, 4, 6, 6))
        coef = codes(r, 8, True, (4,))
        bias = codes(r, 16, True, (4,))
        expected = naive_pool(x, size, lambda w, c: int(coef[c]) * sum(w) + int(bias[c]))
        assert tolist(L.subsample(x, coef, bias, size)) == tolist(expected)

    def test_errors(self):
        with pytest.raises(ValueError, match=r"^subsample: coef and bias must be \[2\], not "
                                             r"\[3\] and \[2\]$"):
            L.subsample(np.zeros((1, 2, 4, 4), int), np.zeros(3, int), np.zeros(2, int), 2)


class TestRbf:
    @pytest.mark.parametrize("signed", [True, False])
    def test_against_naive(self, signed):
        r = rng(int(signed))
        x = codes(r, 8, signed, (5, 17))
        centers = codes(r, 8, signed, (4, 17))
        lo, hi = L.format_range({"bits": 8, "signed": signed})
        x[0], centers[0] = lo, hi
        expected = [[sum((int(a) - int(c)) ** 2 for a, c in zip(row, center, strict=True))
                     for center in centers] for row in x]
        got = L.rbf(x, centers)
        assert tolist(got) == expected
        assert got[0, 0] == 17 * 255 ** 2 < 2 ** (L.acc_bits_for("rbf", None, 8, 17) - 1)

    def test_errors(self):
        with pytest.raises(ValueError, match=r"^rbf: centers have 3 features but x has 2$"):
            L.rbf(np.zeros((1, 2), int), np.zeros((4, 3), int))


class TestClassify:
    def test_ties_go_to_lowest_index(self):
        scores = np.array([[3, 5, 5], [1, 1, 0], [7, 7, 7], [-2, -9, -2]])
        assert tolist(L.classify(scores, "argmax")) == [1, 0, 0, 0]
        assert tolist(L.classify(scores, "argmin")) == [0, 2, 0, 1]

    def test_errors(self):
        with pytest.raises(ValueError, match=r"^classify: kind='max' is not 'argmax' or "
                                             r"'argmin'$"):
            L.classify(np.zeros((1, 2), int), "max")


class TestBuildLut:
    @pytest.mark.parametrize("function, f", [
        ("tanh", math.tanh),
        ("scaled_tanh", lambda v: 1.7159 * math.tanh(2.0 * v / 3.0)),
        ("sigmoid", lambda v: 1.0 / (1.0 + math.exp(-v))),
    ])
    @pytest.mark.parametrize("out_fmt", [{"bits": 8, "frac": 7, "signed": True},
                                         {"bits": 6, "frac": 5, "signed": False}])
    def test_against_naive(self, function, f, out_fmt):
        lo, hi = L.format_range(out_fmt)
        expected = [min(max(math.floor(f(code / 32) * 2 ** out_fmt["frac"] + 0.5), lo), hi)
                    for code in range(-128, 128)]
        table = L.build_lut(function, 8, 5, out_fmt)
        assert table.dtype == np.int64 and tolist(table) == expected

    def test_half_up_and_clamp(self):
        # sigmoid(0) = 0.5 rounds up to 1; tanh saturates to the top code, not 2^frac.
        assert tolist(L.build_lut("sigmoid", 2, 0, {"bits": 1, "frac": 0, "signed": False})) \
            == [0, 0, 1, 1]
        table = L.build_lut("tanh", 4, 0, {"bits": 8, "frac": 7, "signed": True})
        assert table[-1] == 127 and table[0] == -128 and table[8] == 0

    def test_errors(self):
        with pytest.raises(ValueError, match=r"^build_lut: function='relu' is not one of: tanh, "
                                             r"scaled_tanh, sigmoid$"):
            L.build_lut("relu", 8, 5, S8)


class TestAccBitsFor:
    def test_formulas(self):
        assert L.acc_bits_for("conv", 8, 8, 25) == 22
        assert L.acc_bits_for("conv", 8, 8, 150) == 25
        assert L.acc_bits_for("dense", 8, 8, 400) == 26
        assert L.acc_bits_for("dense", 8, 8, 1) == 17
        assert L.acc_bits_for("dense", 8, 8, 2) == 18
        assert L.acc_bits_for("subsample", 8, 8, 4) == 19
        assert L.acc_bits_for("rbf", None, 8, 84) == 24
        assert L.acc_bits_for("rbf", 8, 8, 84) == 24

    def test_bound_holds_for_every_extreme(self):
        # Exhaustive over small widths: the worst sums plus the worst bias fit acc_bits.
        for w_bits, in_bits, signed, fan_in in itertools.product(
                range(2, 5), range(1, 4), (False, True), range(1, 10)):
            acc_bits = L.acc_bits_for("dense", w_bits, in_bits, fan_in)
            w_lo, w_hi = L.format_range({"bits": w_bits, "signed": True})
            x_lo, x_hi = L.format_range({"bits": in_bits, "signed": signed})
            products = [w * x for w in (w_lo, w_hi) for x in (x_lo, x_hi)]
            b_lo, b_hi = L.format_range({"bits": acc_bits - 1, "signed": True})
            a_lo, a_hi = L.format_range({"bits": acc_bits, "signed": True})
            assert a_lo <= fan_in * min(products) + b_lo
            assert fan_in * max(products) + b_hi <= a_hi
        for in_bits, signed, fan_in in itertools.product(range(1, 5), (False, True),
                                                        range(1, 10)):
            x_lo, x_hi = L.format_range({"bits": in_bits, "signed": signed})
            worst = fan_in * (x_hi - x_lo) ** 2
            assert worst <= L.format_range({"bits": L.acc_bits_for("rbf", None, in_bits,
                                                                   fan_in), "signed": True})[1]

    def test_errors(self):
        with pytest.raises(ValueError, match=r"^acc_bits_for: kind='pool' is not one of: conv, "
                                             r"subsample, dense, rbf$"):
            L.acc_bits_for("pool", 8, 8, 4)
        with pytest.raises(ValueError, match=r"^acc_bits_for: rbf centers share the input "
                                             r"format, so w_bits must be None or in_bits=8, not "
                                             r"6$"):
            L.acc_bits_for("rbf", 6, 8, 4)
        with pytest.raises(ValueError, match=r"^acc_bits_for: fan_in must be at least 1, not 0$"):
            L.acc_bits_for("dense", 8, 8, 0)

"""Integer layer functions: the arithmetic of the integer model, one function per operation.

Every function takes and returns int64 NumPy arrays, batch first, activations NCHW (PyTorch's
layout). They implement the rules of ``golden/README.md`` exactly and know nothing about files or
formats beyond what their arguments say; :mod:`golden.model` wires them together from
``qmodel.json``.

Convolution and dense products are computed as float64 matrix products (BLAS) when that is
exact: every partial sum of ``w·x`` then has a magnitude of at most ``max|x| · max_o Σ|w[o]|``,
and float64 holds every integer below 2^53 exactly. The functions check that bound on the actual
operands (with a factor-of-two margin, so below 2^52) and fall back to exact int64 products when
it does not hold; bit growth (:func:`acc_bits_for`) keeps it for any model whose accumulators are
at most 52 bits wide. Operands too large even for int64 raise :class:`OverflowError`.
"""

import numpy as np

from core.kinds import KINDS

__all__ = [
    "pad2d", "conv2d", "dense", "requantize", "requantize_split", "apply_lut", "maxpool",
    "avgpool", "subsample", "global_avgpool", "rbf", "classify", "format_range", "build_lut",
    "lut_limits", "lut_lossless", "acc_bits_for", "LUT_FUNCTIONS", "ACC_KINDS",
]

#: Activation functions a lookup table can hold (see :func:`build_lut`).
LUT_FUNCTIONS = ("tanh", "scaled_tanh", "sigmoid")

#: Layer kinds whose accumulator width :func:`acc_bits_for` derives: those whose records hold
#: weights (products of weights and inputs) or centers (squared distances).
ACC_KINDS = tuple(name for name, k in KINDS.items()
                  if k.exported and {"weight", "centers"} & set(k.roles))

# Float64 products are used while every partial sum is below this bound (2^53 with a margin).
_FLOAT_EXACT = 2.0 ** 52
_FLOAT32_EXACT = 2.0 ** 23  # float32 holds every integer below 2^24; keep a margin of one bit
# Int64 products are used below this bound; beyond it the operands cannot be handled.
_INT_EXACT = 2.0 ** 62
# Elements of one im2col block: ~8 MiB of float64 per block.
_BLOCK_ELEMENTS = 1 << 20


def _int_array(value, where, name, ndim=None):
    array = np.asarray(value)
    if array.dtype == np.bool_ or not np.issubdtype(array.dtype, np.integer):
        raise TypeError(f"{where}: {name} must be an array of integer codes, not "
                        f"{array.dtype}; quantize it first")
    if ndim is not None and array.ndim != ndim:
        raise ValueError(f"{where}: {name} must have {ndim} dimensions, not shape "
                         f"{list(array.shape)}")
    if array.dtype == np.uint64 and array.size and int(array.max()) >= 2 ** 63:
        raise OverflowError(f"{where}: {name} holds codes of 2^63 or more; they do not fit int64")
    return array.astype(np.int64, copy=False)


def _int_param(value, where, name, minimum):
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{where}: {name} must be an integer, not {value!r}")
    if value < minimum:
        raise ValueError(f"{where}: {name} must be at least {minimum}, not {value}")
    return int(value)


def _max_abs(array):
    if array.size == 0:
        return 0
    return max(abs(int(array.max())), abs(int(array.min())))


def _product_bound(where, x, weight_rows, bias):
    """Return the largest magnitude of any partial sum of ``bias + Σ w·x``, as a float."""
    row_sums = np.abs(weight_rows.astype(np.float64)).sum(axis=1)
    bound = float(_max_abs(x)) * (float(row_sums.max()) if row_sums.size else 0.0)
    total = bound + float(_max_abs(bias))
    if total >= _INT_EXACT:
        raise OverflowError(f"{where}: sums can reach {total:.3g}, beyond 2^62; the operands "
                            f"are not codes of a model with sound bit widths")
    return bound


def _exact_dtype(bound):
    """The cheapest dtype whose arithmetic is exact for partial sums below ``bound``.

    Integers of magnitude below 2^24 (float32) or 2^53 (float64), and sums staying below those
    bounds, are represented exactly, so a float matrix product of codes is the integer product.
    """
    if bound < _FLOAT32_EXACT:
        return np.float32
    return np.float64 if bound < _FLOAT_EXACT else np.int64


def _exact_matmul(a, b, bound):
    """Return ``a @ b`` exactly as int64, in float32 or float64 when ``bound`` allows it."""
    dtype = _exact_dtype(bound)
    return np.matmul(a.astype(dtype), b.astype(dtype)).astype(np.int64)


def _check_size(where, x, size):
    size = _int_param(size, where, "size", 1)
    height, width = x.shape[-2:]
    if height % size or width % size:
        raise ValueError(f"{where}: size={size} does not divide the {height}x{width} input; "
                         f"pooling windows do not overlap and may not be partial")
    return size


def _window_reduce(x, size, ufunc):
    """Reduce each non-overlapping size×size window of ``x[N, C, H, W]`` with ``ufunc``."""
    out = x[:, :, ::size, ::size].copy()
    for u in range(size):
        for v in range(size):
            if u or v:
                ufunc(out, x[:, :, u::size, v::size], out=out)
    return out


def format_range(fmt):
    """Return the code range ``(lo, hi)`` of a format ``{"bits", "frac", "signed"}``.

    Signed ``b``-bit codes lie in ``[-2^(b-1), 2^(b-1) - 1]``, unsigned ones in ``[0, 2^b - 1]``.
    ``frac`` is not used. Both bounds are Python ints.
    """
    if not isinstance(fmt, dict) or "bits" not in fmt or "signed" not in fmt:
        raise TypeError(f"format_range: fmt must be a dict with 'bits' and 'signed', not "
                        f"{fmt!r}")
    bits = _int_param(fmt["bits"], "format_range", "fmt['bits']", 1)
    if bits > 62:
        raise ValueError(f"format_range: fmt['bits']={bits} is too wide; formats hold at most "
                         f"62 bits")
    if not isinstance(fmt["signed"], (bool, np.bool_)):
        raise TypeError(f"format_range: fmt['signed'] must be true or false, not "
                        f"{fmt['signed']!r}")
    if fmt["signed"]:
        return -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    return 0, (1 << bits) - 1


def pad2d(x, pad):
    """Add ``pad`` rows and columns of zeros (code 0, value 0) on every side of H and W.

    ``x`` is ``[..., H, W]``; the result is ``[..., H + 2·pad, W + 2·pad]``, int64.
    """
    x = _int_array(x, "pad2d", "x")
    pad = _int_param(pad, "pad2d", "pad", 0)
    if x.ndim < 2:
        raise ValueError(f"pad2d: x must have at least 2 dimensions (H, W), not shape "
                         f"{list(x.shape)}")
    if pad == 0:
        return x.copy()
    widths = [(0, 0)] * (x.ndim - 2) + [(pad, pad), (pad, pad)]
    return np.pad(x, widths, mode="constant", constant_values=0)


def conv2d(x, weight, bias):
    """Return the accumulators of a valid, stride-1 convolution.

    ``x`` is ``[N, C, H, W]``, ``weight`` ``[O, C, k, k]``, ``bias`` ``[O]``; the result is
    ``acc[N, O, H-k+1, W-k+1]`` with ``acc[n, o, i, j] = bias[o] + Σ_{c,u,v} weight[o, c, u, v] ·
    x[n, c, i+u, j+v]`` (cross-correlation, as PyTorch). Pad first with :func:`pad2d`.
    """
    where = "conv2d"
    x = _int_array(x, where, "x", 4)
    weight = _int_array(weight, where, "weight", 4)
    bias = _int_array(bias, where, "bias", 1)
    n, channels, height, width = x.shape
    out_channels, in_channels, k, k2 = weight.shape
    if k != k2 or k < 1:
        raise ValueError(f"{where}: weight must be [O, C, k, k] with a square kernel, not "
                         f"{list(weight.shape)}")
    if in_channels != channels:
        raise ValueError(f"{where}: weight has {in_channels} input channels but x has "
                         f"{channels}")
    if bias.shape != (out_channels,):
        raise ValueError(f"{where}: bias must be [{out_channels}], not {list(bias.shape)}")
    out_h, out_w = height - k + 1, width - k + 1
    if out_h < 1 or out_w < 1:
        raise ValueError(f"{where}: kernel {k} is larger than the {height}x{width} input")
    fan_in, positions = channels * k * k, out_h * out_w
    rows = weight.reshape(out_channels, fan_in)
    bound = _product_bound(where, x, rows, bias)
    dtype = _exact_dtype(bound)
    matrix = rows.astype(dtype)
    out = np.empty((n, out_channels, out_h, out_w), dtype=np.int64)
    # im2col one block of images at a time, into buffers reused across blocks (small enough to
    # stay in cache; fresh large allocations cost more than the arithmetic).
    block = max(1, min(n, _BLOCK_ELEMENTS // (fan_in * positions)))
    columns = np.empty((block, channels, k, k, out_h, out_w), dtype=dtype)
    product = np.empty((block, out_channels, positions), dtype=dtype)
    for start in range(0, n, block):
        chunk = x[start:start + block]
        m = chunk.shape[0]
        for u in range(k):
            for v in range(k):
                columns[:m, :, u, v] = chunk[:, :, u:u + out_h, v:v + out_w]
        np.matmul(matrix, columns[:m].reshape(m, fan_in, positions), out=product[:m])
        out[start:start + m] = product[:m].reshape(m, out_channels, out_h, out_w)
    out += bias[None, :, None, None]
    return out


def dense(x, weight, bias):
    """Return the accumulators of a fully connected layer.

    ``x`` is ``[N, F]``, ``weight`` ``[O, F]``, ``bias`` ``[O]``; the result is ``acc[N, O]``
    with ``acc[n, o] = bias[o] + Σ_f weight[o, f] · x[n, f]``. Flatten spatial inputs first
    (C, H, W order).
    """
    where = "dense"
    x = _int_array(x, where, "x", 2)
    weight = _int_array(weight, where, "weight", 2)
    bias = _int_array(bias, where, "bias", 1)
    out_features, features = weight.shape
    if x.shape[1] != features:
        raise ValueError(f"{where}: weight has {features} input features but x has "
                         f"{x.shape[1]}")
    if bias.shape != (out_features,):
        raise ValueError(f"{where}: bias must be [{out_features}], not {list(bias.shape)}")
    bound = _product_bound(where, x, weight, bias)
    return _exact_matmul(x, weight.T, bound) + bias[None, :]


def _requantize(acc, shift, fmt, where):
    """Round and clamp like :func:`requantize`; return ``(q, (clamped low, clamped high))``."""
    acc = _int_array(acc, where, "acc")
    lo, hi = format_range(fmt)
    if isinstance(shift, (int, np.integer)) and not isinstance(shift, (bool, np.bool_)):
        shift = np.int64(shift)
    else:
        shift = _int_array(shift, where, "shift", 1)
        if acc.ndim < 2 or shift.shape[0] != acc.shape[1]:
            raise ValueError(f"{where}: a per-channel shift needs one entry per channel (axis "
                             f"1 of acc {list(acc.shape)}), not {shift.shape[0]}")
        shift = shift.reshape((1, -1) + (1,) * (acc.ndim - 2))
    if np.any(np.abs(shift) > 62):
        raise ValueError(f"{where}: shifts must lie in -62..62, not "
                         f"{int(np.max(np.abs(shift)))}; check the fractions")
    right = np.maximum(shift, 0)
    left = np.maximum(-shift, 0)
    half = np.where(right > 0, np.left_shift(np.int64(1), np.maximum(right - 1, 0)), 0)
    value = acc + half
    value >>= right
    if np.any(left > 0):
        # A value beyond [lo >> left, hi >> left] saturates after the left shift, so clipping it
        # to one step beyond that range keeps the result and the count exact and the shift
        # within int64.
        clipped = np.clip(value, np.right_shift(lo, left) - 1, np.right_shift(hi, left) + 1)
        value = np.where(left > 0, clipped, value)
        value <<= left
    low = int(np.count_nonzero(value < lo)) if lo < 0 else 0
    high = int(np.count_nonzero(value > hi))
    np.clip(value, lo, hi, out=value)
    return value, (low, high)


def requantize(acc, shift, fmt):
    """Shift accumulators to a format's fraction, round half up, saturate; count saturations.

    ``shift`` is an int, or one int per channel applied along axis 1 of ``acc``. For a shift
    ``s > 0`` the code is ``(acc + 2^(s-1)) >> s`` (arithmetic shift, so ties round up: -0.5
    becomes 0, 0.5 becomes 1); for ``s <= 0`` it is ``acc << -s``. The code is then clamped to
    the range of ``fmt`` (:func:`format_range`).

    Return ``(q, saturations)``: the int64 codes, and how many elements were clamped (an int).
    The clamp of negative values to 0 in an unsigned format is the ReLU, not a saturation: it is
    not counted.
    """
    q, (low, high) = _requantize(acc, shift, fmt, "requantize")
    return q, low + high


def requantize_split(acc, shift, fmt, lossless):
    """Requantize like :func:`requantize`, telling lossless clamps from saturations.

    ``lossless`` is a pair of bools ``(low, high)``: whether a clamp to ``fmt``'s lowest
    (highest) code loses nothing (:func:`lut_lossless`). Return ``(q, saturations, clamps)``:
    the codes, the clamps at a lossy end and the clamps at a lossless end (ints).
    """
    q, (low, high) = _requantize(acc, shift, fmt, "requantize_split")
    low_ok, high_ok = (bool(v) for v in lossless)
    saturations = (0 if low_ok else low) + (0 if high_ok else high)
    return q, saturations, low + high - saturations


def lut_limits(function, out_fmt):
    """Return the output codes ``(at -inf, at +inf)`` a lookup-table function tends to.

    Each is ``clamp(floor(f(±inf) · 2^out_frac + 0.5))`` to ``out_fmt``'s range, the rule of
    :func:`build_lut` applied to the function's limits (tanh -1 and 1, scaled tanh ±1.7159,
    sigmoid 0 and 1).
    """
    f = _lut_function(function)
    lo, hi = format_range(out_fmt)
    out_frac = _int_param(out_fmt.get("frac"), "lut_limits", "out_fmt['frac']", -64)
    ends = f(np.array([-np.inf, np.inf]))
    scaled = np.clip(np.floor(np.ldexp(ends, out_frac) + 0.5), lo, hi)
    return int(scaled[0]), int(scaled[1])


def lut_lossless(table, function, out_fmt):
    """Return ``(low, high)``: whether clamping a lookup table's input to its lowest (highest)
    code loses nothing.

    An end is lossless when the table's entry there equals the code ``function`` tends to on
    that side (:func:`lut_limits`): ``function`` is monotone and rounding and clamping are
    monotone, so every input beyond the end would get an entry between the two, that code.
    """
    table = _int_array(table, "lut_lossless", "table", 1)
    if table.size == 0:
        raise ValueError("lut_lossless: table is empty")
    low, high = lut_limits(function, out_fmt)
    return int(table[0]) == low, int(table[-1]) == high


def apply_lut(pre, table, in_bits):
    """Look up activation codes: ``table[pre + 2^(in_bits-1)]``.

    ``pre`` holds signed ``in_bits``-bit codes (the requantized pre-activation); ``table`` has
    ``2^in_bits`` entries, the first for code ``-2^(in_bits-1)``. Return int64 codes shaped like
    ``pre``.
    """
    where = "apply_lut"
    pre = _int_array(pre, where, "pre")
    table = _int_array(table, where, "table", 1)
    in_bits = _int_param(in_bits, where, "in_bits", 1)
    if table.shape[0] != 1 << in_bits:
        raise ValueError(f"{where}: table has {table.shape[0]} entries but in_bits={in_bits} "
                         f"needs {1 << in_bits}")
    offset = 1 << (in_bits - 1)
    if pre.size and (int(pre.min()) < -offset or int(pre.max()) >= offset):
        raise ValueError(f"{where}: pre-activation codes {int(pre.min())}..{int(pre.max())} "
                         f"exceed the signed {in_bits}-bit range; requantize them first")
    return table[pre + offset]


def maxpool(x, size):
    """Return the maximum of each non-overlapping ``size``×``size`` window of ``x[N, C, H, W]``.

    ``size`` must divide H and W. The result is ``[N, C, H/size, W/size]``, in the input format.
    """
    x = _int_array(x, "maxpool", "x", 4)
    size = _check_size("maxpool", x, size)
    return _window_reduce(x, size, np.maximum)


def avgpool(x, size):
    """Return the rounded mean of each non-overlapping ``size``×``size`` window.

    The window sum is shifted right by ``log2(size²)`` with round half up, so ``size`` must be
    a power of two; it must also divide H and W. Output codes share the input format (the mean
    lies between the window's extremes, so it cannot saturate).
    """
    x = _int_array(x, "avgpool", "x", 4)
    size = _int_param(size, "avgpool", "size", 1)
    if size & (size - 1):
        raise ValueError(f"avgpool: size={size} is not a power of two; the division by size² "
                         f"must be a shift (use max pooling or subsampling)")
    size = _check_size("avgpool", x, size)
    shift = 2 * (size.bit_length() - 1)
    total = _window_reduce(x, size, np.add)
    if shift:
        total += 1 << (shift - 1)
        total >>= shift
    return total


def global_avgpool(x, mul, shift, fmt):
    """Return each channel's rounded mean over its whole map, and the saturations.

    ``x`` is ``[N, C, H, W]`` in the format ``fmt``; with ``S`` the sum of a channel's ``H·W``
    codes, the code is ``(S · mul + 2^(shift-1)) >> shift`` (round half up by an arithmetic
    shift), clamped to ``fmt``'s range (:func:`requantize` with ``shift``). ``(mul, shift)`` is
    ``core.kinds.gap_scale(H·W)``, ``shift >= 1``. Return ``(q[N, C, 1, 1], saturations)``.
    """
    where = "global_avgpool"
    x = _int_array(x, where, "x", 4)
    mul = _int_param(mul, where, "mul", 1)
    shift = _int_param(shift, where, "shift", 1)
    area = x.shape[2] * x.shape[3]
    if float(_max_abs(x)) * area * mul + 2.0 ** (shift - 1) >= _INT_EXACT:
        raise OverflowError(f"{where}: sums times mul can reach beyond 2^62")
    total = x.sum(axis=(2, 3), keepdims=True)
    total *= mul
    return requantize(total, shift, fmt)


def subsample(x, coef, bias, size):
    """Return the accumulators of LeCun's trainable subsampling.

    ``acc[n, c, i, j] = coef[c] · Σ(window) + bias[c]`` over the non-overlapping
    ``size``×``size`` windows of ``x[N, C, H, W]``; ``coef`` and ``bias`` are ``[C]``. ``size``
    must divide H and W.
    """
    where = "subsample"
    x = _int_array(x, where, "x", 4)
    coef = _int_array(coef, where, "coef", 1)
    bias = _int_array(bias, where, "bias", 1)
    size = _check_size(where, x, size)
    channels = x.shape[1]
    if coef.shape != (channels,) or bias.shape != (channels,):
        raise ValueError(f"{where}: coef and bias must be [{channels}], not "
                         f"{list(coef.shape)} and {list(bias.shape)}")
    bound = float(_max_abs(x)) * size * size * float(_max_abs(coef)) + float(_max_abs(bias))
    if bound >= _INT_EXACT:
        raise OverflowError(f"{where}: sums can reach {bound:.3g}, beyond 2^62")
    total = _window_reduce(x, size, np.add)
    total *= coef[None, :, None, None]
    total += bias[None, :, None, None]
    return total


def rbf(x, centers):
    """Return the squared Euclidean distances ``scores[N, K] = Σ_i (x[n, i] - centers[k, i])²``.

    ``x`` is ``[N, F]`` and ``centers`` ``[K, F]``, in the same format.
    """
    where = "rbf"
    x = _int_array(x, where, "x", 2)
    centers = _int_array(centers, where, "centers", 2)
    if x.shape[1] != centers.shape[1]:
        raise ValueError(f"{where}: centers have {centers.shape[1]} features but x has "
                         f"{x.shape[1]}")
    spread = float(_max_abs(x) + _max_abs(centers))
    if spread * spread * x.shape[1] >= _INT_EXACT:
        raise OverflowError(f"{where}: distances can reach beyond 2^62")
    n, k = x.shape[0], centers.shape[0]
    out = np.empty((n, k), dtype=np.int64)
    block = max(1, _BLOCK_ELEMENTS // max(1, k * x.shape[1]))
    for start in range(0, n, block):
        diff = x[start:start + block, None, :] - centers[None, :, :]
        out[start:start + block] = np.einsum("nkf,nkf->nk", diff, diff)
    return out


def classify(scores, kind):
    """Return the class of each row of ``scores[N, K]``: ``kind`` is "argmax" or "argmin".

    Ties go to the lowest index.
    """
    scores = _int_array(scores, "classify", "scores", 2)
    if kind == "argmax":
        return np.argmax(scores, axis=1).astype(np.int64)
    if kind == "argmin":
        return np.argmin(scores, axis=1).astype(np.int64)
    raise ValueError(f"classify: kind={kind!r} is not 'argmax' or 'argmin'")


def _lut_function(name):
    if name == "tanh":
        return np.tanh
    if name == "scaled_tanh":
        return lambda x: 1.7159 * np.tanh(2.0 * x / 3.0)
    if name == "sigmoid":
        def sigmoid(x):
            with np.errstate(over="ignore"):
                return 1.0 / (1.0 + np.exp(-x))
        return sigmoid
    raise ValueError(f"build_lut: function={name!r} is not one of: {', '.join(LUT_FUNCTIONS)}")


def build_lut(function, in_bits, in_frac, out_fmt):
    """Build the lookup table of an activation function.

    Entry ``i`` is the output code of the input code ``i - 2^(in_bits-1)`` (a signed
    ``in_bits``-bit code at fraction ``in_frac``): ``clamp(floor(f(code · 2^-in_frac) ·
    2^out_frac + 0.5))`` with the clamp to ``out_fmt``'s range, ``f`` computed in float64.
    ``function`` is "tanh", "scaled_tanh" (``1.7159·tanh(2x/3)``) or "sigmoid"
    (``1/(1 + e^-x)``). Return an int64 array of ``2^in_bits`` entries.
    """
    f = _lut_function(function)
    in_bits = _int_param(in_bits, "build_lut", "in_bits", 1)
    if in_bits > 24:
        raise ValueError(f"build_lut: in_bits={in_bits} makes a table of 2^{in_bits} entries; "
                         f"use at most 24")
    in_frac = _int_param(in_frac, "build_lut", "in_frac", -64)
    lo, hi = format_range(out_fmt)
    out_frac = _int_param(out_fmt.get("frac"), "build_lut", "out_fmt['frac']", -64)
    codes = np.arange(-(1 << (in_bits - 1)), 1 << (in_bits - 1), dtype=np.int64)
    values = f(np.ldexp(codes.astype(np.float64), -in_frac))
    scaled = np.floor(np.ldexp(values, out_frac) + 0.5)
    return np.clip(scaled, lo, hi).astype(np.int64)


def acc_bits_for(kind, w_bits, in_bits, fan_in):
    """Return the signed accumulator width that bit growth guarantees for a layer.

    - "conv", "dense": ``w_bits + in_bits + ceil(log2(fan_in)) + 1``, ``fan_in`` the number of
      connected inputs of one output (the largest, for a sparse connection table);
    - "subsample": the same with ``fan_in = size²`` and ``w_bits`` the coefficient width;
    - "rbf": ``2·in_bits + ceil(log2(fan_in)) + 1``; the centers share the input's format, so
      ``w_bits`` must be ``None`` or equal ``in_bits``.

    A product of a signed ``w_bits`` code and an ``in_bits`` code fits ``w_bits + in_bits``
    signed bits, a sum of ``fan_in`` of them ``ceil(log2(fan_in))`` more, and the final bit holds
    the bias (which export clamps to the ``acc_bits - 1``-bit signed range).
    """
    where = "acc_bits_for"
    if kind not in ACC_KINDS:
        raise ValueError(f"{where}: kind={kind!r} is not one of: {', '.join(ACC_KINDS)}")
    in_bits = _int_param(in_bits, where, "in_bits", 1)
    fan_in = _int_param(fan_in, where, "fan_in", 1)
    growth = (fan_in - 1).bit_length()                          # ceil(log2(fan_in))
    if "centers" in KINDS[kind].roles:          # squared distances, centers in the input format
        if w_bits is not None and w_bits != in_bits:
            raise ValueError(f"{where}: rbf centers share the input format, so w_bits must be "
                             f"None or in_bits={in_bits}, not {w_bits!r}")
        return 2 * in_bits + growth + 1
    w_bits = _int_param(w_bits, where, "w_bits", 1)
    return w_bits + in_bits + growth + 1

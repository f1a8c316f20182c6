"""The folding geometry of a MAC layer: how ``simd`` splits a window, which channel blocks each
group of ``pe`` output channels visits, and the steps and cycles that follow (NumPy only)."""

from typing import NamedTuple

import numpy as np

__all__ = ["MacGeometry", "simd_options", "simd_split", "simd_error", "group_steps",
           "connections_of", "mac_group_steps", "mac_steps", "mac_cycles"]


class MacGeometry(NamedTuple):
    """How a MAC layer looks to :class:`~hw.mac.MacStage`: a window of ``kernel`` sliding over
    ``in_shape`` (padding included) for ``out_channels``; ``dense`` names the window
    ``in_features`` in messages (a dense layer's window covers its whole input)."""
    in_shape: tuple
    kernel: tuple
    out_channels: int
    dense: bool


def simd_options(channels, kh, kw):
    """Return ``{simd: (c_block, t, r)}`` of every SIMD a window of ``kh·kw·channels`` takes.

    ``simd = c_block · t · r`` with ``c_block | channels`` (channels of one position),
    ``t | kw`` (consecutive taps of a window row) and ``r | kh`` (window rows); every divisor of
    ``kh·kw·channels`` splits so (prime by prime). When several
    splits give the same ``simd`` the one with the largest ``c_block``, then ``t``, is used
    (fewest memory banks).
    """
    options = {}
    for c in _divisors(channels):
        for t in _divisors(kw):
            for r in _divisors(kh):
                simd = c * t * r
                if simd not in options or (c, t) > options[simd][:2]:
                    options[simd] = (c, t, r)
    return dict(sorted(options.items()))


def simd_split(channels, kh, kw, simd):
    """Return the ``(c_block, t, r)`` split of ``simd`` (see :func:`simd_options`) or None."""
    return simd_options(channels, kh, kw).get(simd)


def _divisors(n):
    return [d for d in range(1, n + 1) if n % d == 0]


def simd_error(label, channels, kh, kw, simd, *, dense=False, window=None):
    """Return the message of an invalid ``simd`` for a window of ``kh·kw`` positions over
    ``channels``, or None when it is valid.

    ``window`` is the number of products summed per output: a layer's as its kind states it
    (:meth:`core.kinds.LayerKind.mac_window`, read by :attr:`hw.plan.LayerStages.window`);
    ``None`` for a bare weight ``[out, channels, kh, kw]`` (a :class:`~hw.mac.MacStage`'s). A
    window that is not ``kh·kw·channels`` raises ``ValueError``: the SIMD splits
    (:func:`simd_options`) would not cover it.
    """
    block = kh * kw * channels
    if window is None:
        window = block
    elif window != block:
        raise ValueError(f"{label}: the layer's window of {window} products is not the "
                         f"{kh}x{kw} positions x {channels} channels of its MAC geometry")
    if dense:
        what = (f"in_features={window}" if kh * kw == 1 else
                f"in_features={window} ({channels} channels x {kh}x{kw} positions)")
    else:
        what = f"the window kh·kw·C = {kh}·{kw}·{channels} = {window}"
    if window % simd:
        return f"{label}: simd={simd} does not divide {what}"
    return None                 # every divisor of kh·kw·C splits as c·t·r (prime by prime)


def group_steps(connections, out_channels, channels, pe, c_block):
    """Return, per group of ``pe`` output channels, the channel blocks its steps visit.

    A block of ``c_block`` input channels is visited when at least one output channel of
    the group is connected to one of its channels (``connections[o, c]``, None: all are).
    """
    blocks = channels // c_block
    if connections is None:
        return [list(range(blocks)) for _ in range(out_channels // pe)]
    conn = np.asarray(connections).reshape(out_channels, blocks, c_block).any(axis=2)
    return [[b for b in range(blocks) if conn[g * pe:(g + 1) * pe, b].any()]
            for g in range(out_channels // pe)]


def connections_of(record, arrays):
    """Return the ``[O, C]`` connection table of a layer, or None (full).

    When the layer names a table but ``arrays`` does not hold it, raise ``ValueError``: the
    steps, cycles and MACs of a sparse layer depend on its table, and counting it as full would
    silently report a dense layer's figures.
    """
    name = record.get("arrays", {}).get("connections")
    if name is None:
        return None
    if arrays is None or name not in arrays:
        raise ValueError(f"layer {record['name']!r} has a connection table ({name!r}) but no "
                         f"arrays were given; pass the integer model's arrays")
    return np.asarray(arrays[name], dtype=np.int64)


def mac_group_steps(in_shape, kernel, out_channels, pe, simd, connections=None):
    """MAC steps of each group of ``pe`` output channels of a :class:`~hw.mac.MacStage`
    position."""
    c, _, _ = in_shape
    kh, kw = kernel
    c_block, t, r = simd_split(c, kh, kw, simd)
    lists = group_steps(connections, out_channels, c, pe, c_block)
    return [(kh // r) * (kw // t) * len(blocks) for blocks in lists]


def mac_steps(in_shape, kernel, out_channels, pe, simd, connections=None):
    """MAC steps of one output position of a :class:`~hw.mac.MacStage` (all its groups)."""
    return sum(mac_group_steps(in_shape, kernel, out_channels, pe, simd, connections))


def mac_cycles(in_shape, kernel, out_channels, pe, simd, connections=None):
    """Cycles per image of a :class:`~hw.mac.MacStage` (see its docstring)."""
    c, h, w = in_shape
    kh, kw = kernel
    steps = mac_steps(in_shape, kernel, out_channels, pe, simd, connections)
    c_block = simd_split(c, kh, kw, simd)[0]
    return max(h * w * (c // c_block), (h - kh + 1) * (w - kw + 1) * steps)

"""Number formats and the integer rules of ``golden/`` expressed as Amaranth expressions, and
the parameter checks the stages share."""

from amaranth.hdl import Mux, Shape, Signal, signed, unsigned
from amaranth.lib import data
from amaranth.lib.memory import Memory
from amaranth.utils import ceil_log2

__all__ = ["select", "address_layout", "address_eq", "format_shape", "format_range", "saturate",
           "requantize", "shape_of_range", "lut_index", "counter_shape", "rom_depth",
           "check_int", "check_map_stage", "Activation"]


def _int_at_least(value, minimum):
    return isinstance(value, int) and not isinstance(value, bool) and value >= minimum


def check_int(label, name, value, minimum=1):
    """Return ``value``; raise ``TypeError`` naming the stage ``label`` and the parameter
    ``name`` unless it is an integer (not a bool) of at least ``minimum``."""
    if not _int_at_least(value, minimum):
        raise TypeError(f"{label}: {name} must be an integer >= {minimum}, not {value!r}")
    return value


def check_map_stage(label, in_shape, lanes):
    """Check the parameters of a stage taking a ``(channels, height, width)`` map ``lanes``
    channels per beat; return ``((channels, height, width), lanes)``.

    ``label`` must be a string (it names the layer in every message), ``in_shape`` three
    positive integers and ``lanes`` a positive divisor of ``channels`` (``None``: all of them).
    Raise ``TypeError`` for a parameter of the wrong type, ``ValueError`` for ``lanes``.
    """
    if not isinstance(label, str):
        raise TypeError(f"label must be a string, not {label!r}")
    if not isinstance(in_shape, (tuple, list)) or len(in_shape) != 3:
        raise TypeError(f"{label}: in_shape must be (channels, height, width), not "
                        f"{in_shape!r}")
    shape = tuple(check_int(label, name, value) for name, value in
                  zip(("channels", "height", "width"), in_shape, strict=True))
    channels = shape[0]
    if lanes is None:
        lanes = channels
    if not _int_at_least(lanes, 1) or channels % lanes:
        raise ValueError(f"{label}: lanes={lanes!r} must be a positive divisor of "
                         f"channels={channels}")
    return shape, lanes


def select(m, index, values, shape, name):
    """Return a signal equal to ``values[index]`` (a case per value, the last as default).

    Unlike ``Array(values)[index]``, the generated case statement covers every index value.
    """
    sig = Signal(shape, name=name)
    values = list(values)
    with m.Switch(index):
        for k, value in enumerate(values[:-1]):
            with m.Case(k):
                m.d.comb += sig.eq(value)
        with m.Default():
            m.d.comb += sig.eq(values[-1])
    return sig


def address_layout(widths):
    """Return the :class:`~amaranth.lib.data.StructLayout` of the address fields
    ``{name: bits}`` that have bits, in order.

    A field of zero bits (one channel block, one column) is left out: it would be a ``[-1:0]``
    wire in the Verilog. Assign the fields with :func:`address_eq`.
    """
    return data.StructLayout({name: bits for name, bits in widths.items() if bits})


def address_eq(address, **values):
    """Return the assignments of ``values`` to the fields of an :func:`address_layout` view,
    skipping the fields the layout left out (their only value is 0)."""
    members = address.shape().members
    return [address[name].eq(value) for name, value in values.items() if name in members]


def counter_shape(n):
    """Return the shape of a counter of ``n`` states (at least one bit, never zero-width)."""
    return range(max(n, 2))


def rom_depth(rows):
    """Return a memory depth of at least 2 for ``rows`` rows (no zero-width addresses)."""
    return max(rows, 2)


def format_shape(fmt):
    """Return the Amaranth shape of the codes of a number format ``{"bits", "frac", "signed"}``."""
    bits = fmt["bits"]
    if not isinstance(bits, int) or bits <= 0:
        raise ValueError(f"format {fmt!r}: bits must be a positive integer")
    return signed(bits) if fmt["signed"] else unsigned(bits)


def format_range(fmt):
    """Return ``(lo, hi)``, the code range of a number format."""
    bits = fmt["bits"]
    if fmt["signed"]:
        return -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    return 0, (1 << bits) - 1


def shape_of_range(lo, hi):
    """Return the narrowest shape holding every integer of ``[lo, hi]``."""
    return Shape.cast(range(lo, hi + 1))


def saturate(value, lo, hi, shape):
    """Clamp ``value`` to ``[lo, hi]`` and return it as ``shape``."""
    shape = Shape.cast(shape)
    clamped = Mux(value < lo, lo, Mux(value > hi, hi, value))
    bits = clamped[:shape.width]
    return bits.as_signed() if shape.signed else bits


def requantize(acc, shift, fmt):
    """Round half up by ``shift`` (left shift when ``shift <= 0``), then saturate to ``fmt``.

    ``acc`` must be a signed value. This is ``golden.layers.requantize`` without the count of
    saturations.
    """
    if shift > 0:
        rounded = (acc + (1 << (shift - 1))) >> shift
    else:
        rounded = acc << (-shift)
    lo, hi = format_range(fmt)
    return saturate(rounded, lo, hi, format_shape(fmt))


def lut_index(pre, in_bits):
    """Return the table index ``pre + 2^(in_bits-1)`` of a signed ``in_bits`` pre-activation."""
    return pre.as_unsigned() ^ (1 << (in_bits - 1))


def bits_for_sum(shape, terms):
    """Return the shape of a sum of ``terms`` values of ``shape`` (no overflow)."""
    shape = Shape.cast(shape)
    return Shape(shape.width + ceil_log2(terms), shape.signed)


class Activation:
    """Requantize + activation of one layer, as the integer model states it.

    Parameters
    ----------
    name : str
        Layer name, for messages.
    activation : dict
        ``{"kind": "relu" | "none" | "lut", ...}`` from ``qmodel.json``.
    out_format : dict
        Output format of the layer.
    acc_frac : list of int
        Fraction of the accumulator of each output channel.
    table : sequence of int or None
        The activation table (``kind == "lut"`` only).
    """
    def __init__(self, *, name, activation, out_format, acc_frac, table=None):
        kind = activation["kind"]
        if kind not in ("relu", "none", "lut"):
            raise ValueError(f"layer {name!r}: activation kind {kind!r} is not one of "
                             f"'relu', 'none', 'lut'")
        self.kind = kind
        self.out_format = out_format
        if kind == "lut":
            self.pre_format = {"bits": activation["in_bits"], "frac": activation["in_frac"],
                               "signed": True}
            if table is None or len(table) != 1 << activation["in_bits"]:
                raise ValueError(f"layer {name!r}: the LUT must have 2^in_bits = "
                                 f"{1 << activation['in_bits']} entries")
            lo, hi = format_range(out_format)
            if min(table) < lo or max(table) > hi:
                raise ValueError(f"layer {name!r}: LUT codes leave the output format "
                                 f"{out_format!r}")
            self.table = [int(v) for v in table]
        else:
            self.pre_format = out_format
            self.table = None
        self.shifts = [int(a) - self.pre_format["frac"] for a in acc_frac]

    def lut_memory(self):
        """Return a new ROM holding the table, or ``None`` without a table."""
        if self.table is None:
            return None
        return Memory(shape=format_shape(self.out_format), depth=len(self.table),
                      init=self.table)

    def requantize(self, m, acc, channel_shifts, select):
        """Return the requantized (pre-activation) code of ``acc``, combinationally.

        ``channel_shifts[j]`` is the shift when ``select == j`` (a lane serving several channels
        in turn). Without a table this is the output code.
        """
        pre = Signal(format_shape(self.pre_format))
        distinct = sorted(set(channel_shifts))
        if len(distinct) == 1:
            m.d.comb += pre.eq(requantize(acc, distinct[0], self.pre_format))
        else:
            m.d.comb += pre.eq(requantize(acc, channel_shifts[-1], self.pre_format))
            for j, shift in enumerate(channel_shifts[:-1]):
                if shift != channel_shifts[-1]:
                    with m.If(select == j):
                        m.d.comb += pre.eq(requantize(acc, shift, self.pre_format))
        return pre

    def lookup(self, m, pre, lut, en):
        """Return the table entry of the (registered) code ``pre``, one cycle later.

        Adds a synchronous read port to ``lut`` (from :meth:`lut_memory`) enabled by ``en``, so
        the table maps to block RAM.
        """
        port = lut.read_port()
        m.d.comb += [port.addr.eq(lut_index(pre, self.pre_format["bits"])), port.en.eq(en)]
        return port.data

"""The MAC array of a MAC stage: PE × SIMD products, adder trees, bias and accumulators."""

import numpy as np
from amaranth.hdl import Cat, Const, Module, Mux, Shape, Signal, signed
from amaranth.lib import data, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from .arith import counter_shape, rom_depth

__all__ = ["MacArray", "tree_sum", "tree_stages", "shift_add_product", "mac_array_latency",
           "signed_range", "TREE_FANIN", "PRODUCT_REGISTERS", "PRODUCT_HOOK"]

#: Terms summed in one pipeline stage of the adder tree (3 adder levels).
TREE_FANIN = 8

#: Registers from the operands to the adder tree: each multiplier's private copy of its
#: operands, the product, and the product again (neither the route into nor the one out of a
#: DSP block shares a cycle with logic).
PRODUCT_REGISTERS = ("operands", "product", "product2")

#: The name of the optional platform hook that maps a multiplier and its first two registers
#: (:data:`PRODUCT_REGISTERS` ``operands`` and ``product``) onto a hard block:
#: ``platform.registered_product(m, a, b, en, name)`` returns a value equal to ``a * b`` of the
#: operands presented two advancing cycles (``en`` high) earlier, or None where the block cannot
#: hold the product (the array then builds fabric registers). A product computed there never
#: crosses the fabric unregistered, wherever placement puts the block.
PRODUCT_HOOK = "registered_product"


def tree_sum(values):
    """Return the sum of ``values`` as a balanced adder tree."""
    values = list(values)
    while len(values) > 1:
        values = [values[i] + values[i + 1] if i + 1 < len(values) else values[i]
                  for i in range(0, len(values), 2)]
    return values[0]


def tree_stages(simd):
    """Return the registered stages of the adder tree of ``simd`` products.

    Each stage sums groups of :data:`TREE_FANIN` terms; the last (at most ``TREE_FANIN``
    terms) is summed in the accumulate cycle.
    """
    n, stages = simd, 0
    while n > TREE_FANIN:
        n = -(-n // TREE_FANIN)
        stages += 1
    return stages


def mac_array_latency(simd):
    """Return the registers of a :class:`MacArray` from its operands to its accumulators:
    :data:`PRODUCT_REGISTERS`, the adder tree's :func:`tree_stages` and the accumulator."""
    return len(PRODUCT_REGISTERS) + tree_stages(simd) + 1


def shift_add_product(a, b):
    """Return ``a * b`` built from ``b``'s bits as shifted, gated copies of ``a`` summed in a
    balanced tree (a multiplier of adders that synthesis does not map to a DSP block)."""
    a = signed_range(a)
    bits = b.shape().width
    terms = []
    for k in range(bits):
        term = Mux(b[k], a << k, 0)
        terms.append(-term if (k == bits - 1 and b.shape().signed) else term)
    width = a.shape().width + bits + 1
    return tree_sum(terms).as_signed()[:width].as_signed()


def signed_range(v):
    """Return ``v`` as a signed value of the same range (zero-extended by a bit if unsigned)."""
    return v.as_signed() if v.shape().signed else Cat(v, Const(0, 1)).as_signed()


class MacArray(wiring.Component):
    """Multiply ``pe × simd`` operand pairs per step and accumulate each lane's group.

    Lane ``p`` multiplies ``w[p][s]`` by ``x[s]`` (``op="mul"``) or squares ``x[s] - w[p][s]``
    (``op="sqdiff"``) for every ``s``, sums the ``simd`` products (a tree of
    :data:`TREE_FANIN`-term registered stages, :func:`tree_stages`) and accumulates the steps of
    a group: the group's ``first`` step starts from the lane's bias ``bias[g·pe + p]``, its
    ``last`` step completes the accumulator, which ``o`` then shows with ``o.valid`` high for
    one advancing cycle. All registers advance when ``en`` is high; :attr:`latency` advancing
    cycles separate a step on ``i`` from its accumulator on ``o``.

    Each multiplier gets a private register copy of its operands (placement may put it beside
    a far DSP block); the copies of a window element differ only in their reset values, which
    keeps synthesis from merging them back into one register. A platform with the
    :data:`PRODUCT_HOOK` gets the operand and product registers of each ``w·x`` product built
    by its hook instead (the registers of a hard multiplier block); ``sqdiff`` and ``lut_mul``
    products are always built in the fabric.

    Parameters
    ----------
    x_shape, w_shape : shape-castable
        Codes of the inputs and of the weights (RBF centers).
    acc_bits : int
        Signed accumulator width.
    pe, simd : int
    bias : array ``[groups · pe]``
        Integer biases at the accumulator scale (all zero: no bias ROM).
    op : ``"mul"`` or ``"sqdiff"``
    lut_mul : bool
        Products from :func:`shift_add_product` (adders only) instead of ``*``.

    Members
    -------
    en : ``In(1)``
    i : ``In(StructLayout({"valid", "first", "last", "g", "x": ArrayLayout(x, simd),
        "w": ArrayLayout(ArrayLayout(w, simd), pe)}))``
    o : ``Out(StructLayout({"valid", "g", "acc": ArrayLayout(signed(acc_bits), pe)}))``
    """
    def __init__(self, *, x_shape, w_shape, acc_bits, pe, simd, bias, op="mul", lut_mul=False):
        for name, value, least in (("acc_bits", acc_bits, 2), ("pe", pe, 1), ("simd", simd, 1)):
            if not isinstance(value, int) or isinstance(value, bool) or value < least:
                raise TypeError(f"{name} must be an integer >= {least}, not {value!r}")
        bias = np.asarray(bias, dtype=np.int64).reshape(-1)
        if bias.size == 0 or bias.size % pe:
            raise ValueError(f"bias must have a positive multiple of pe={pe} entries, "
                             f"not {bias.size}")
        if op not in ("mul", "sqdiff"):
            raise ValueError(f"op must be 'mul' or 'sqdiff', not {op!r}")
        self._x_shape, self._w_shape = Shape.cast(x_shape), Shape.cast(w_shape)
        self._acc_bits, self._pe, self._simd = acc_bits, pe, simd
        self._bias, self._op, self._lut_mul = bias, op, bool(lut_mul)
        groups = counter_shape(bias.size // pe)
        super().__init__({
            "en": In(1),
            "i": In(data.StructLayout({
                "valid": 1, "first": 1, "last": 1, "g": groups,
                "x": data.ArrayLayout(x_shape, simd),
                "w": data.ArrayLayout(data.ArrayLayout(w_shape, simd), pe)})),
            "o": Out(data.StructLayout({
                "valid": 1, "g": groups, "acc": data.ArrayLayout(signed(acc_bits), pe)})),
        })

    @property
    def latency(self):
        """Advancing cycles from a group's last step on ``i`` to its accumulators on ``o``."""
        return mac_array_latency(self._simd)

    def elaborate(self, platform):
        m = Module()
        pe, simd, en = self._pe, self._simd, self.en
        x_code = self._x_shape
        groups = self._bias.size // pe

        def reg_of(value, name, init=0):
            reg = Signal.like(value, name=name, init=init)
            with m.If(en):
                m.d.sync += reg.eq(value)
            return reg

        def stage(fields, name):
            return {key: reg_of(value, f"{name}_{key}") for key, value in fields.items()}

        hard = None
        if self._op == "mul" and not self._lut_mul:
            hard = getattr(platform, PRODUCT_HOOK, None)
        ctl = {key: self.i[key] for key in ("valid", "first", "last", "g")}
        terms = []
        x_range = 1 << x_code.width
        for p in range(pe):
            lane_terms = []
            for s in range(simd):
                value = None
                if hard is not None:
                    value = hard(m, self.i.w[p][s], self.i.x[s], en, f"prod{p}_{s}")
                if value is None:
                    w = reg_of(self.i.w[p][s], f"wa{p}_{s}")
                    x_init = p % x_range - (x_range // 2 if x_code.signed and
                                            p % x_range >= x_range // 2 else 0)
                    x = reg_of(self.i.x[s], f"xa{p}_{s}", x_init)
                    if self._op == "mul":
                        a, b = w, x
                    else:
                        a = b = signed_range(x) - signed_range(w)
                    product = shift_add_product(a, b) if self._lut_mul else a * b
                    value = reg_of(product, f"prod{p}_{s}")
                for name in PRODUCT_REGISTERS[2:]:
                    value = reg_of(value, f"{name}_{p}_{s}")
                lane_terms.append(value)
            terms.append(lane_terms)
        history = [ctl]
        for name in PRODUCT_REGISTERS:
            history.append(stage(history[-1], f"c_{name}"))
        for level in range(tree_stages(simd)):
            terms = [[reg_of(tree_sum(lane[k:k + TREE_FANIN]),
                             f"tree{level}_{p}_{k // TREE_FANIN}")
                      for k in range(0, len(lane), TREE_FANIN)] for p, lane in enumerate(terms)]
            history.append(stage(history[-1], f"t{level}"))
        prev, pa = history[-2], history[-1]

        # Accumulate, in the cycle the last tree terms are valid (the bias ROM is read one
        # cycle earlier, on the group in flight).
        acc_shape = signed(self._acc_bits)
        if np.any(self._bias):
            m.submodules.bias = bias_rom = Memory(
                shape=data.ArrayLayout(acc_shape, pe), depth=rom_depth(groups),
                init=[[int(self._bias[gg * pe + p]) for p in range(pe)] for gg in range(groups)])
            bias_port = bias_rom.read_port()
            m.d.comb += [bias_port.addr.eq(prev["g"]), bias_port.en.eq(en)]
            bias_of = [bias_port.data[p] for p in range(pe)]
        else:
            bias_of = [Const(0, acc_shape) for _ in range(pe)]
        for p in range(pe):
            nxt = Mux(pa["first"], bias_of[p], self.o.acc[p]) + tree_sum(terms[p])
            with m.If(en & pa["valid"]):
                m.d.sync += self.o.acc[p].eq(nxt)
        with m.If(en):
            m.d.sync += [self.o.valid.eq(pa["valid"] & pa["last"]), self.o.g.eq(pa["g"])]
        return m

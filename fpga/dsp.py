"""Hard multiplier blocks that hold a product's registers, per FPGA family.

:class:`hw.mac_array.MacArray` builds each product as operand registers → multiplier → product
register. Synthesis maps the multiplier onto a DSP block but, on ECP5, leaves both registers in
the fabric: the path from the operand registers through the block to the product register then
crosses the die twice whenever placement puts the block far from its logic (an ECP5-85F build
with 151 of 156 blocks in use lost a quarter of its clock that way). A platform object with the
:data:`hw.mac_array.PRODUCT_HOOK` method puts the registers into the block instead; synthesis and
board builds elaborate with :func:`product_platform` of their family.

The hooks change where the registers are, never what they hold: the product register shows
``a * b`` of the operands presented two advancing cycles earlier, exactly as the fabric
registers do, so the cycle model and the RTL simulation are unchanged. ``tests/test_fpga_dsp.py``
simulates the mapped array (with the block's behavioural model,
:data:`ECP5_MULT_MODEL`) against the fabric one.
"""

from pathlib import Path

from amaranth.hdl import ClockSignal, Const, Instance, Signal, signed

from hw.mac_array import PRODUCT_HOOK, signed_range

__all__ = ["Ecp5Products", "product_platform", "with_products", "ECP5_MULT_MODEL",
           "ECP5_OPERAND_BITS"]

#: Signed width of an ECP5 ``MULT18X18D`` operand.
ECP5_OPERAND_BITS = 18

#: The behavioural Verilog model of ``MULT18X18D`` in the configuration :class:`Ecp5Products`
#: instantiates (the Yosys wheel ships only its black box).
ECP5_MULT_MODEL = Path(__file__).with_name("cells") / "ecp5_mult18x18d.v"


class Ecp5Products:
    """The ECP5 product hook: each ``w·x`` product in one ``MULT18X18D`` whose A and B input
    registers hold the operands and whose output register holds the product, all on ``CLK0``
    (the ``sync`` clock) with ``CE0`` = the array's advance and no reset (the array's control
    pipeline, not these registers, says which products are valid). Operands wider than
    :data:`ECP5_OPERAND_BITS` signed bits stay in the fabric (the hook returns None)."""

    def registered_product(self, m, a, b, en, name):
        a, b = signed_range(a), signed_range(b)
        widths = (a.shape().width, b.shape().width)
        if max(widths) > ECP5_OPERAND_BITS:
            return None
        a18 = Signal(signed(ECP5_OPERAND_BITS), name=f"{name}_a")
        b18 = Signal(signed(ECP5_OPERAND_BITS), name=f"{name}_b")
        p36 = Signal(2 * ECP5_OPERAND_BITS, name=f"{name}_p")
        m.d.comb += [a18.eq(a), b18.eq(b)]
        ports = {}
        for k in range(ECP5_OPERAND_BITS):
            ports[f"i_A{k}"] = a18[k]
            ports[f"i_B{k}"] = b18[k]
            ports[f"i_C{k}"] = Const(0, 1)
        for k in range(2 * ECP5_OPERAND_BITS):
            ports[f"o_P{k}"] = p36[k]
        registers = {}
        for reg in ("INPUTA", "INPUTB", "OUTPUT"):
            registers.update({f"p_REG_{reg}_CLK": "CLK0", f"p_REG_{reg}_CE": "CE0",
                              f"p_REG_{reg}_RST": "RST0"})
        m.submodules[f"{name}_dsp"] = Instance(
            "MULT18X18D", **registers,
            p_REG_INPUTC_CLK="NONE", p_REG_PIPELINE_CLK="NONE", p_GSR="DISABLED",
            p_RESETMODE="SYNC", p_MULT_BYPASS="DISABLED", p_SOURCEB_MODE="B_SHIFT",
            p_CAS_MATCH_REG="FALSE", p_HIGHSPEED_CLK="NONE", p_CLK0_DIV="ENABLED",
            i_SIGNEDA=Const(1, 1), i_SIGNEDB=Const(1, 1), i_SOURCEA=Const(0, 1),
            i_SOURCEB=Const(0, 1), i_CLK0=ClockSignal("sync"), i_CE0=en, i_RST0=Const(0, 1),
            **ports)
        return p36[:sum(widths)].as_signed()


#: The product hook of each family that has one.
_HOOKS = {"ecp5": Ecp5Products}


def product_platform(family):
    """Return the object a build of ``family`` elaborates with: an instance of its product
    hook class, or None where Yosys already packs the registers into the block (iCE40
    ``SB_MAC16``)."""
    hook = _HOOKS.get(family)
    return hook() if hook is not None else None


def with_products(platform_class, family):
    """Return the board platform class ``platform_class`` extended with ``family``'s product
    hook (the class itself where the family has none), so a board build maps its products as
    a synthesis run does."""
    hook = _HOOKS.get(family)
    if hook is None:
        return platform_class
    return type(platform_class.__name__, (platform_class, hook), {})


assert all(hasattr(cls, PRODUCT_HOOK) for cls in _HOOKS.values())

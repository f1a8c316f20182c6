"""The target FPGAs: their resources, tool options and what each family's synthesis needs.

:data:`DEVICES` holds the parts a ``[hardware.devices.<name>]`` config table may name
(:data:`core.config.DEVICE_NAMES` lists the same keys; a test keeps them equal).
"""

from dataclasses import dataclass, field

from hw.mac import LOADED_WEIGHTS

__all__ = ["RESOURCES", "Device", "DEVICES", "FAMILIES", "NEXTPNR_NAMES", "BRAM_BITS",
           "spram_script"]

#: The resources a synthesis result counts, in report order.
RESOURCES = ("luts", "ffs", "dsps", "brams", "spram", "ios")

#: The FPGA families the flow knows.
FAMILIES = ("ice40", "ecp5")

#: nextpnr's utilisation names → our resource names, per family.
NEXTPNR_NAMES = {
    "ice40": {"ICESTORM_LC": "luts", "ICESTORM_DSP": "dsps", "ICESTORM_RAM": "brams",
              "ICESTORM_SPRAM": "spram", "SB_IO": "ios"},
    "ecp5": {"TRELLIS_COMB": "luts", "TRELLIS_FF": "ffs", "MULT18X18D": "dsps",
             "DP16KD": "brams", "TRELLIS_IO": "ios"},
}

#: Bits of one block RAM, per family (iCE40 EBR, ECP5 DP16KD).
BRAM_BITS = {"ice40": 4096, "ecp5": 18432}


@dataclass(frozen=True)
class Device:
    """A target FPGA: how to synthesize and place for it, and what it holds.

    ``capacity`` maps each of :data:`RESOURCES` to the amount available; ``budget`` names the
    resources whose capacity :meth:`with_budget` reduced.
    """
    name: str
    family: str                     # one of FAMILIES
    nextpnr_args: tuple             # device and package options
    capacity: dict                  # resource -> available
    freq_mhz: float                 # default clock constraint
    label: str = ""
    synth_args: tuple = field(default=())
    budget: tuple = field(default=())

    def limit(self, resource, available):
        """Return the capacity to judge ``resource`` against, given nextpnr's ``available``."""
        if resource in self.budget:
            return min(available, self.capacity[resource])
        return available

    def with_budget(self, **budget):
        """Return this device with some capacities replaced (e.g. a reserved share)."""
        unknown = set(budget) - set(RESOURCES)
        if unknown:
            raise ValueError(f"unknown resource(s) {sorted(unknown)}; use {', '.join(RESOURCES)}")
        return Device(self.name, self.family, self.nextpnr_args,
                      {**self.capacity, **budget}, self.freq_mhz, self.label, self.synth_args,
                      tuple(sorted(set(self.budget) | set(budget))))


def _cap(luts, ffs, dsps, brams, spram, ios):
    return {"luts": luts, "ffs": ffs, "dsps": dsps, "brams": brams, "spram": spram, "ios": ios}


#: Known devices. iCE40 ``luts`` are logic cells (one LUT4 + one FF each); ECP5 ``dsps`` are
#: MULT18X18D blocks and ``brams`` DP16KD (18 kbit); iCE40 ``brams`` are 4 kbit EBRs.
DEVICES = {
    "up5k": Device("up5k", "ice40", ("--up5k", "--package", "sg48"),
                   _cap(5280, 5280, 8, 30, 4, 39), 24.0, "Lattice iCE40 UP5K (SG48)",
                   ("-device", "u", "-dsp", "-spram")),
    "hx8k": Device("hx8k", "ice40", ("--hx8k", "--package", "ct256"),
                   _cap(7680, 7680, 0, 32, 0, 206), 48.0, "Lattice iCE40 HX8K (CT256)",
                   ("-device", "hx")),
    "hx1k": Device("hx1k", "ice40", ("--hx1k", "--package", "tq144"),
                   _cap(1280, 1280, 0, 16, 0, 95), 48.0, "Lattice iCE40 HX1K (TQ144)",
                   ("-device", "hx")),
    "ecp5-25": Device("ecp5-25", "ecp5", ("--25k", "--package", "CABGA256"),
                      _cap(24288, 24288, 28, 56, 0, 197), 75.0, "Lattice ECP5 LFE5U-25F"),
    "ecp5-45": Device("ecp5-45", "ecp5", ("--45k", "--package", "CABGA381"),
                      _cap(43848, 43848, 72, 108, 0, 203), 75.0, "Lattice ECP5 LFE5U-45F"),
    "ecp5-85": Device("ecp5-85", "ecp5", ("--85k", "--package", "CABGA381"),
                      _cap(83640, 83640, 156, 208, 0, 365), 75.0, "Lattice ECP5 LFE5U-85F"),
}


def spram_script(family):
    """Return the Yosys commands that put the loadable weight memories into iCE40 SPRAM.

    Those memories (named after :data:`hw.mac.LOADED_WEIGHTS`) have no meaningful initial
    contents, but Amaranth still emits zeros, which SPRAM cannot hold: the commands drop those
    ``$meminit`` cells and ask for ``huge`` RAM. Empty for ECP5 (they go to block RAM).
    """
    if family not in FAMILIES:
        raise ValueError(f"unknown FPGA family {family!r}; use {', '.join(FAMILIES)}")
    if family != "ice40":
        return ""
    return (f"delete t:$meminit_v2 r:MEMID=*{LOADED_WEIGHTS}* %i\n"
            f"setattr -set ram_style \"huge\" m:*{LOADED_WEIGHTS}*")

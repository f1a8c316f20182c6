"""fpga.devices: the device table, budgets, the SPRAM script."""

import pytest

from core.config import DEVICE_NAMES
from fpga.devices import DEVICES, FAMILIES, NEXTPNR_NAMES, RESOURCES, spram_script
from hw.mac import LOADED_WEIGHTS


def test_devices_are_the_configs_device_names():
    assert tuple(DEVICES) == DEVICE_NAMES
    for name, device in DEVICES.items():
        assert device.name == name and device.family in FAMILIES
        assert set(device.capacity) == set(RESOURCES)
    assert set(NEXTPNR_NAMES) == set(FAMILIES)


def test_with_budget_lowers_the_limit():
    device = DEVICES["up5k"].with_budget(luts=3000, dsps=4)
    assert device.capacity["luts"] == 3000 and device.capacity["brams"] == 30
    assert device.budget == ("dsps", "luts")
    assert device.limit("luts", 5280) == 3000 and device.limit("brams", 30) == 30
    assert DEVICES["up5k"].capacity["luts"] == 5280               # the table is unchanged


def test_with_budget_rejects_unknown_resource():
    with pytest.raises(ValueError) as exc:
        DEVICES["up5k"].with_budget(gates=3)
    assert str(exc.value) == ("unknown resource(s) ['gates']; use luts, ffs, dsps, brams, "
                              "spram, ios")


def test_spram_script():
    script = spram_script("ice40")
    assert script.splitlines() == [
        f"delete t:$meminit_v2 r:MEMID=*{LOADED_WEIGHTS}* %i",
        f'setattr -set ram_style "huge" m:*{LOADED_WEIGHTS}*']
    assert spram_script("ecp5") == ""
    with pytest.raises(ValueError) as exc:
        spram_script("gowin")
    assert str(exc.value) == "unknown FPGA family 'gowin'; use ice40, ecp5"

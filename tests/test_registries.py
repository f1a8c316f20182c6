"""Every layer kind has its entry in every subsystem's registry."""

import pytest

import fpga  # noqa: F401  (each package fills its registries on import)
import golden  # noqa: F401
import hw  # noqa: F401
import quant  # noqa: F401
import sim  # noqa: F401
from core.kinds import KINDS, exported_kinds
from core.registry import REGISTRIES

EXPECTED = {"golden op", "golden random layer", "hardware stage", "torch module",
            "qmodel exporter"}


def test_the_subsystems_have_registries():
    missing = EXPECTED - set(REGISTRIES)
    assert not missing, f"no registry for: {', '.join(sorted(missing))}"


@pytest.mark.parametrize("subsystem", sorted(EXPECTED))
def test_every_kind_has_an_entry(subsystem):
    registry = REGISTRIES[subsystem]
    assert registry.missing() == (), (
        f"{subsystem}: no entry for {', '.join(registry.missing())}")
    assert set(registry.kinds()) in (set(KINDS), set(exported_kinds()))

"""core.registry: the per-subsystem tables keyed by layer kind."""

import pytest

from core.kinds import KINDS
from core.registry import REGISTRIES, Registry


@pytest.fixture
def registry():
    made = []

    def make(name, **kwargs):
        reg = Registry(name, **kwargs)
        made.append(name)
        return reg
    yield make
    for name in made:
        REGISTRIES.pop(name, None)


def test_register_and_look_up(registry):
    reg = registry("test op")

    @reg.register("conv", "dense")
    class Entry:
        pass

    assert reg["conv"] is Entry and reg["dense"] is Entry and "pool" not in reg
    assert REGISTRIES["test op"] is reg
    assert reg.missing() == tuple(k for k in KINDS if k not in ("conv", "dense"))
    with pytest.raises(KeyError) as info:
        reg["pool"]
    assert info.value.args[0] == ("test op: no entry for layer kind 'pool'; registered: conv, "
                                  "dense")


def test_exported_only(registry):
    reg = registry("test stage", exported_only=True)
    assert "batchnorm" not in reg.kinds() and "gap" in reg.kinds()
    with pytest.raises(ValueError) as info:
        reg.register("batchnorm")
    assert str(info.value) == ("test stage: layer kind 'batchnorm' is folded away at export and "
                               "never reaches this registry")


def test_bad_registrations(registry):
    reg = registry("test twice")
    reg.register("conv")(object)
    with pytest.raises(ValueError) as info:
        reg.register("conv")
    assert str(info.value) == "test twice: layer kind 'conv' is registered twice"
    with pytest.raises(KeyError) as info:
        reg.register("lstm")
    assert info.value.args[0] == ("test twice: cannot register unknown layer kind 'lstm'; "
                                  "describe it in core/kinds.py first")
    with pytest.raises(ValueError) as info:
        Registry("test twice")
    assert str(info.value) == "a registry for 'test twice' already exists"
    with pytest.raises(TypeError) as info:
        Registry("")
    assert str(info.value) == "subsystem must be a non-empty string, not ''"

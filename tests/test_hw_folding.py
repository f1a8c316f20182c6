"""hw.folding: the folding a config or a command line asks for."""

import pytest

from core.config import ConfigError, load_config, parse_config
from core.errors import UserError
from golden import random_qmodel
from hw.cycles import cycle_model
from hw.folding import (
    FULL_TARGET_CYCLES,
    assign_multipliers,
    config_structure,
    derive_folding,
    fastest_folding,
    folding_from_config,
    load_from_config,
    parse_folding,
    resolve_folding,
)
from hw.plan import layer_shapes
from quant.train import ROOT


@pytest.fixture(scope="module")
def lenet():
    from sim.fixtures import lenet5_qmodel
    model = lenet5_qmodel()
    text = (ROOT / "configs" / "lenet5.toml").read_text()
    return model.meta, dict(model.arrays), text[:text.index("[hardware]")]


def test_folding_from_config(lenet):
    meta, arrays, network = lenet

    def config(hardware):
        return parse_config(network + hardware)
    assert folding_from_config(config('[hardware]\nfolding = "minimal"\n'), meta, arrays) == \
        [{"pe": 1, "simd": 1}] * 5
    target = config('[hardware]\nfolding = "target"\ntarget_cycles = 60000\n')
    folding = folding_from_config(target, meta, arrays)
    assert cycle_model(meta, folding, arrays)["cycles_per_image"] <= 60000
    explicit = config('[hardware]\nfolding = "explicit"\n[hardware.layers.c1]\npe = 6\n'
                      '[hardware.layers.f5]\nsimd = 2\n')
    assert folding_from_config(explicit, meta, arrays) == [
        {"pe": 6, "simd": 1}, {"pe": 1, "simd": 1}, {"pe": 1, "simd": 2},
        {"pe": 1, "simd": 1}, {"pe": 1, "simd": 1}]
    with pytest.raises(ConfigError, match="c3.pe=7 does not divide the 16 outputs of 'c3'"):
        config('[hardware]\nfolding = "explicit"\n[hardware.layers.c3]\npe = 7\n')


def test_device_section(lenet):
    # [hardware.devices.up5k]: its own target, LUT multipliers beyond the 8 DSPs, its load.
    meta, arrays, network = lenet
    config = parse_config(network + '[hardware]\nfolding = "minimal"\n'
                          '[hardware.devices.up5k]\nfolding = "target"\n'
                          'target_cycles = 48000\nload = ["f5", "f6"]\n')
    assert folding_from_config(config, meta, arrays, device="ecp5-85") == [
        {"pe": 1, "simd": 1}] * 5
    assert load_from_config(config, "ecp5-85") == ()
    up5k = folding_from_config(config, meta, arrays, device="up5k", dsps=8)
    assert up5k == [{"pe": 3, "simd": 1}, {"pe": 1, "simd": 5},
                    {"pe": 1, "simd": 1, "mul": "lut"}, {"pe": 1, "simd": 1, "mul": "lut"},
                    {"pe": 1, "simd": 1, "mul": "lut"}]
    assert load_from_config(config, "up5k") == ("f5", "f6")
    model = cycle_model(meta, up5k, arrays)
    assert (model["cycles_per_image"], model["multipliers"]) == (48000, 11)


def test_assign_multipliers():
    folding = [{"pe": 2, "simd": 2}, {"pe": 5, "simd": 1}, {"pe": 1, "simd": 1},
               {"pe": 1, "simd": 3, "mul": "dsp"}]
    assert assign_multipliers(folding, None) == folding
    # 3 reserved by the explicit 'dsp'; the largest layers first while they fit (5), the rest
    # on LUTs.
    assert assign_multipliers(folding, 8) == [
        {"pe": 2, "simd": 2, "mul": "lut"}, {"pe": 5, "simd": 1},
        {"pe": 1, "simd": 1, "mul": "lut"}, {"pe": 1, "simd": 3, "mul": "dsp"}]
    assert assign_multipliers(folding, 9) == [
        {"pe": 2, "simd": 2, "mul": "lut"}, {"pe": 5, "simd": 1}, {"pe": 1, "simd": 1},
        {"pe": 1, "simd": 3, "mul": "dsp"}]
    assert all(e.get("mul") == "lut" for e in assign_multipliers(folding[:3], 0))


def test_parse_and_resolve(lenet):
    meta, arrays, _ = lenet
    assert parse_folding("minimal", meta, arrays) == [{"pe": 1, "simd": 1}] * 5
    fast = parse_folding("target:4800", meta, arrays)
    assert cycle_model(meta, fast, arrays)["cycles_per_image"] <= 4800
    assert resolve_folding(meta, arrays, target_cycles=4800) == fast
    with pytest.raises(UserError, match="expected 'minimal', 'target:<cycles>', a JSON list"):
        parse_folding("fast please", meta, arrays)
    with pytest.raises(UserError, match="not both"):
        resolve_folding(meta, arrays, folding="minimal", target_cycles=4800)


# A 2x2 input: the classifier's 12 scores, one per beat, bound the interval whatever the folding.
TINY = [{"kind": "conv", "out_channels": 6, "kernel": 1, "name": "c1"},
        {"kind": "gap", "name": "g2"}, {"kind": "dense", "out_features": 12, "name": "out"}]


@pytest.fixture(scope="module")
def tiny():
    return random_qmodel(TINY, 1, height=2, calibration=4)


def test_derive_folding_checks_every_stage(tiny):
    meta, arrays = tiny
    assert derive_folding(meta, 13, arrays) == [{"pe": 2, "simd": 1}, {"pe": 1, "simd": 6}]
    with pytest.raises(ValueError) as info:
        derive_folding(meta, 12, arrays)
    assert str(info.value) == ("stage 'output' (classify) needs 13 cycles per image whatever "
                               "the folding; raise the target to at least 13")


def test_fastest_folding(tiny):
    meta, arrays = tiny
    # A reachable target: the cheapest folding meeting it.
    assert fastest_folding(meta, arrays, 24) == derive_folding(meta, 24, arrays)
    assert fastest_folding(meta, arrays) == derive_folding(meta, FULL_TARGET_CYCLES, arrays)
    # Beyond reach: the cheapest folding as fast as whole output channels and input positions
    # per cycle (here 13 cycles, the classifier's).
    fast = fastest_folding(meta, arrays, 5)
    assert fast == derive_folding(meta, 13, arrays)
    assert cycle_model(meta, fast, arrays)["cycles_per_image"] == 13


def _random_model_of(config):
    """A random integer model of ``config``'s network (its exported layers)."""
    spec = []
    for layer in config.exported:
        entry = {"kind": layer.kind, "name": layer.name}
        entry.update({k: v for k, v in layer.params.items()
                      if k in ("out_channels", "kernel", "padding", "mode", "size",
                               "out_features")})
        if "connections" in layer.spec.roles and not layer.full:
            entry["connections"] = [[int(c in row) for c in range(layer.in_shape[0])]
                                    for row in layer.connections]
        if layer.spec.requantizes and not layer.final:
            entry["activation"] = "relu"
        spec.append(entry)
    return random_qmodel(spec, 0, height=config.input_size, pad=config.input_pad,
                         calibration=2)


@pytest.mark.parametrize("preset", ["lenet5", "lenet5-1998", "lenet5-bn-gap"])
def test_the_config_structure_folds_like_its_integer_model(preset):
    """sim.run and hw.build check a folding on the config before any integer model exists:
    every folding and cycle figure must be the integer model's."""
    config = load_config(preset)
    structure = config_structure(config)
    meta, arrays = _random_model_of(config)
    keys = ("name", "kind", "kernel", "padding", "mode", "size", "in_features", "out_features")
    shape = lambda r: [{k: r.get(k) for k in keys}, bool(r.get("final"))]
    assert list(map(shape, structure[0]["layers"])) == list(map(shape, meta["layers"]))
    assert layer_shapes(structure[0]) == layer_shapes(meta)
    for target in (1024, 3000, 4800, 48000):
        folding = derive_folding(*structure[:1], target, structure[1])
        assert folding == derive_folding(meta, target, arrays)
        figures = cycle_model(structure[0], folding, structure[1])
        real = cycle_model(meta, folding, arrays)
        assert (figures["cycles_per_image"], figures["latency_cycles"]) == \
            (real["cycles_per_image"], real["latency_cycles"])
    with pytest.raises(ValueError) as info:
        derive_folding(structure[0], 10, structure[1])
    assert str(info.value) == ("layers[0] 'c1': no folding reaches 10 cycles per image; fully "
                               "parallel it needs 1024; raise the target")

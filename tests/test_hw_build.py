"""hw.build: the folding a config or a command line asks for."""

import pytest

from hw.build import folding_from_config, parse_folding, resolve_folding
from hw.cycles import cycle_model
from quant.config import ConfigError, parse_config
from quant.errors import UserError
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
    bad = config('[hardware]\nfolding = "explicit"\n[hardware.layers.c3]\npe = 7\n')
    with pytest.raises(ConfigError, match="pe=7 does not divide out_channels=16"):
        folding_from_config(bad, meta, arrays)


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

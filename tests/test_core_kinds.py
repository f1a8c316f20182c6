"""core.kinds: the layer-kind table (shapes, MACs, records) and its invariants."""

import math

import pytest

from core.config import parse_config
from core.kinds import (
    GAP_MUL_BITS,
    KINDS,
    LECUN_1998_C3,
    exported_kinds,
    gap_scale,
    kind_of,
    mac_kinds,
    record_shape,
)


def test_every_kind_is_described_once():
    assert list(KINDS) == ["conv", "pool", "subsample", "gap", "dense", "rbf", "batchnorm"]
    for name, kind in KINDS.items():
        assert kind.name == name
        assert kind.final in ("never", "allowed", "only")
        assert (kind.output is not None) == (kind.final != "never")
        assert "name" not in kind.keys and "kind" not in kind.keys


def test_views():
    assert mac_kinds() == ("conv", "dense", "rbf")
    assert exported_kinds() == ("conv", "pool", "subsample", "gap", "dense", "rbf")


def test_unknown_kind():
    with pytest.raises(KeyError, match="unknown layer kind 'lstm'; known: conv, pool"):
        kind_of("lstm")


@pytest.mark.parametrize("area", [2, 4, 16, 64, 1024])
def test_gap_scale_is_exact_for_powers_of_two(area):
    mul, shift = gap_scale(area)
    assert mul == 1 and 2 ** shift == area


@pytest.mark.parametrize("area", [3, 6, 9, 15, 25, 49, 100, 1000])
def test_gap_scale_is_the_nearest_reciprocal(area):
    mul, shift = gap_scale(area)
    assert mul.bit_length() == GAP_MUL_BITS
    assert abs(mul / 2 ** shift - 1 / area) <= 2 ** -(shift + 1)


CONFIG = """
[model]
name = "k"
input_size = 12

[[layers]]
name = "c1"
kind = "conv"
out_channels = 4
kernel = 3
padding = 1

[[layers]]
name = "bn"
kind = "batchnorm"
activation = "relu"

[[layers]]
name = "s2"
kind = "subsample"
size = 2
activation = "tanh"

[[layers]]
name = "p3"
kind = "pool"
mode = "avg"
size = 2

[[layers]]
name = "g"
kind = "gap"

[[layers]]
name = "f"
kind = "dense"
out_features = 8
activation = "relu"

[[layers]]
name = "out"
kind = "rbf"
out_features = 3
"""


def test_records_round_trip_through_the_kind():
    config = parse_config(CONFIG.replace('input_size = 12',
                                       'input_size = 12\noutput = "rbf"'))
    for layer in config.exported:
        kind = layer.spec
        record = {"kind": layer.kind, **kind.record(layer.params, layer.in_shape)}
        params = kind.read_record(record, layer.in_shape)
        assert kind.out_shape(params, layer.in_shape) == layer.out_shape
        assert record_shape(record, layer.in_shape) == layer.out_shape
    gap = config.layers[4]
    assert gap.spec.record(gap.params, gap.in_shape) == {
        "out_shape": [4, 1, 1], "mul": 58254, "shift": 19}    # 3×3 map: 2^19 / 9


def test_mac_counts():
    config = parse_config(CONFIG.replace('input_size = 12',
                                       'input_size = 12\noutput = "rbf"'))
    assert [layer.macs for layer in config.layers] == [4 * 9 * 144, 0, 0, 0, 0, 4 * 8, 8 * 3]
    assert [layer.fan_in for layer in config.layers] == [9, 0, 4, 0, 0, 4, 8]


def test_sparse_conv_macs_count_connected_pairs():
    kind = KINDS["conv"]
    params = {"out_channels": 16, "kernel": 5, "padding": 0, "connections": LECUN_1998_C3}
    assert kind.macs(params, (6, 14, 14)) == 60 * 25 * 100
    assert kind.fan_in(params, (6, 14, 14)) == 6 * 25
    assert kind.out_shape(params, (6, 14, 14)) == (16, 10, 10)
    assert math.prod(kind.out_shape(params, (6, 14, 14))) == 1600


def test_bits_noop_says_which_widths_a_kind_takes():
    takes = {name: tuple(key for key in ("wbits", "abits") if kind.bits_noop(key, False) is None)
             for name, kind in KINDS.items()}
    assert takes == {"conv": ("wbits", "abits"), "pool": (), "subsample": ("wbits", "abits"),
                     "gap": (), "dense": ("wbits", "abits"), "rbf": (), "batchnorm": ()}
    assert KINDS["dense"].bits_noop("wbits", True) is None
    assert KINDS["dense"].bits_noop("abits", True) == (
        "the final layer's scores keep their accumulator's width (not requantized)")

"""Folding geometry (hw/geometry.py): SIMD splits, visited channel blocks, steps and cycles."""

import numpy as np
import pytest

from hw.geometry import (
    connections_of,
    group_steps,
    mac_cycles,
    mac_group_steps,
    mac_steps,
    simd_error,
    simd_options,
    simd_split,
)


def test_simd_options_every_divisor():
    # Every divisor of kh·kw·C splits as c_block·t·r; the largest c_block, then t, wins.
    options = simd_options(6, 3, 3)
    assert sorted(options) == [d for d in range(1, 55) if 54 % d == 0]
    for simd, (c, t, r) in options.items():
        assert c * t * r == simd and 6 % c == 0 and 3 % t == 0 and 3 % r == 0
    assert options[6] == (6, 1, 1) and options[3] == (3, 1, 1) and options[9] == (3, 3, 1)
    assert simd_options(1, 3, 3) == {1: (1, 1, 1), 3: (1, 3, 1), 9: (1, 3, 3)}


def test_simd_split():
    assert simd_split(4, 4, 4, 64) == (4, 4, 4)
    assert simd_split(6, 3, 3, 18) == (6, 3, 1)
    assert simd_split(6, 3, 3, 4) is None


@pytest.mark.parametrize("args,dense,message", [
    ((6, 3, 3, 4), False, "L: simd=4 does not divide the window kh·kw·C = 3·3·6 = 54"),
    ((16, 1, 1, 5), True, "L: simd=5 does not divide in_features=16"),
    ((4, 4, 4, 5), True, "L: simd=5 does not divide in_features=64 (4 channels x 4x4 positions)"),
    ((6, 3, 3, 27), False, None),
])
def test_simd_error(args, dense, message):
    assert simd_error("L", *args, dense=dense) == message
    # The same with the window given (a layer's, from its kind).
    channels, kh, kw, _ = args
    assert simd_error("L", *args, dense=dense, window=channels * kh * kw) == message


def test_simd_error_refuses_a_window_other_than_the_geometry():
    with pytest.raises(ValueError) as info:
        simd_error("L", 6, 3, 3, 2, window=27)
    assert str(info.value) == ("L: the layer's window of 27 products is not the 3x3 positions "
                               "x 6 channels of its MAC geometry")


def test_group_steps():
    # Output channels 0, 1 use input 0 only; 2, 3 use input 3: with pe = 2 and blocks of two
    # channels, group 0 visits block 0, group 1 block 1; without a table every block.
    table = np.zeros((4, 4), dtype=np.int64)
    table[0:2, 0] = table[2:4, 3] = 1
    assert group_steps(table, 4, 4, 2, 2) == [[0], [1]]
    assert group_steps(table, 4, 4, 1, 1) == [[0], [0], [3], [3]]
    assert group_steps(None, 4, 4, 2, 2) == [[0, 1], [0, 1]]


def test_steps_and_cycles():
    # A 3x3 window over 4 channels, simd = 6 = (2 channels)·(3 taps): 3 rows · 2 blocks steps
    # per group; a sparse table halves one group's blocks.
    assert simd_split(4, 3, 3, 6) == (2, 3, 1)
    assert mac_group_steps((4, 6, 6), (3, 3), 4, 2, 6) == [6, 6]
    table = np.ones((4, 4), dtype=np.int64)
    table[2:, 2:] = 0
    assert mac_group_steps((4, 6, 6), (3, 3), 4, 2, 6, table) == [6, 3]
    assert mac_steps((4, 6, 6), (3, 3), 4, 2, 6, table) == 9
    # max(input beats, output positions · steps)
    assert mac_cycles((4, 6, 6), (3, 3), 4, 2, 6, table) == max(36 * 2, 16 * 9)
    assert mac_cycles((4, 6, 6), (3, 3), 4, 4, 36) == 36 * 1


def test_connections_of():
    record = {"name": "c3", "arrays": {"connections": "c3.connections"}}
    table = [[1, 0], [0, 1]]
    assert connections_of(record, {"c3.connections": table}).tolist() == table
    assert connections_of({"name": "c1", "arrays": {}}, None) is None
    with pytest.raises(ValueError) as info:
        connections_of(record, None)
    assert str(info.value) == ("layer 'c3' has a connection table ('c3.connections') but no "
                               "arrays were given; pass the integer model's arrays")

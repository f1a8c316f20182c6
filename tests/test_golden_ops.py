"""golden/ops.py: the op registry, and the gap op (record checks, reference, float32 stage).

The ops of the other kinds are tested through whole models: their record checks in
test_golden_model.py, their float32 stages against the int64 reference in test_golden_fast.py.
"""

import numpy as np
import pytest
from test_golden_fast import check, images_for
from test_golden_model import assert_refused, rehash

import golden
from core.kinds import KINDS, exported_kinds, gap_scale
from golden import fast as F
from golden import layers as L
from golden import ops


def gap_model(height, width, seed=0, weights="uniform", **conv):
    """A conv (3x3, no padding) to a ``height`` x ``width`` map, a gap, a final dense layer."""
    spec = [dict({"kind": "conv", "out_channels": 3, "kernel": 3}, **conv),
            {"kind": "gap"},
            {"kind": "dense", "out_features": 4}]
    return golden.random_qmodel(spec, seed, height=height + 2, width=width + 2,
                                weights=weights)


class TestRegistry:
    def test_every_exported_kind_has_an_op(self):
        assert ops.OPS.missing() == ()
        assert ops.OPS.kinds() == exported_kinds()
        for kind in exported_kinds():
            op = ops.OPS[kind]
            assert issubclass(op, ops.Op) and op.kind == kind and op.spec is KINDS[kind]
            assert (op.classify is not None) == (KINDS[kind].final != "never")

    def test_unknown_kind(self):
        meta, arrays = gap_model(2, 2)
        meta["layers"][1]["kind"] = "lstm"
        rehash(meta, arrays)
        with pytest.raises(golden.QModelError) as info:
            golden.IntegerModel(meta, arrays)
        assert str(info.value) == ("qmodel.json: layers[1] 'gap1': kind='lstm' is not one of: "
                                   "conv, pool, subsample, gap, dense, rbf; re-run `make "
                                   "quantize PRESET=random`")


class TestGapRecord:
    refused = staticmethod(assert_refused)

    @pytest.mark.parametrize("field, value", [("mul", 41944), ("shift", 19)])
    def test_mul_and_shift_are_gap_scale(self, field, value):
        meta, arrays = gap_model(5, 5)
        assert gap_scale(25) == (41943, 20)
        meta["layers"][1][field] = value
        mul, shift = meta["layers"][1]["mul"], meta["layers"][1]["shift"]
        self.refused(meta, arrays, f"layers[1] 'gap1': mul={mul}, shift={shift} but "
                                   f"core.kinds.gap_scale(25) of its 5x5 map gives mul=41943, "
                                   f"shift=20")

    def test_fields_present_and_in_range(self):
        meta, arrays = gap_model(4, 4)
        del meta["layers"][1]["mul"]
        self.refused(meta, arrays, "layers[1] 'gap1': missing 'mul'")
        meta, arrays = gap_model(4, 4)
        meta["layers"][1]["shift"] = 0
        self.refused(meta, arrays, "layers[1] 'gap1': shift=0 is out of range (1..62)")

    def test_out_format_is_in_format(self):
        meta, arrays = gap_model(4, 4)
        meta["layers"][1]["out_format"]["frac"] += 1
        self.refused(meta, arrays, "layers[1] 'gap1': out_format must equal in_format (global "
                                   "average pooling keeps the format)")

    def test_not_final(self):
        meta, arrays = gap_model(4, 4)
        meta["layers"][1]["final"] = True
        self.refused(meta, arrays, "layers[1] 'gap1': a gap layer cannot be final; end with a "
                                   "dense or rbf layer")

    def test_shapes(self):
        meta, arrays = gap_model(4, 4)
        meta["layers"][1]["out_shape"] = [3, 2, 2]
        self.refused(meta, arrays, "layers[1] 'gap1': out_shape=[3, 2, 2] but the network "
                                   "gives [3, 1, 1]")
        meta, arrays = gap_model(4, 4)
        meta["layers"][1]["arrays"] = {"weight": "conv0.weight"}
        self.refused(meta, arrays, "layers[1] 'gap1': arrays has an unknown entry 'weight'; "
                                   "expected: none")

    def test_one_position_map(self):
        meta, arrays = gap_model(2, 1)
        meta["layers"][0]["out_shape"] = meta["layers"][1]["in_shape"] = [3, 1, 1]
        meta["layers"][0]["in_shape"] = [1, 3, 3]
        meta["input"]["height"] = 3
        self.refused(meta, arrays, "layers[1] 'gap1': global average pooling of a 1x1 map does "
                                   "nothing; remove the layer")


class TestGapRun:
    @pytest.mark.parametrize("height, width", [(2, 2), (4, 4), (5, 5), (3, 5)])
    @pytest.mark.parametrize("activation", ["relu", "none"])
    def test_against_reference(self, height, width, activation):
        meta, arrays = gap_model(height, width, seed=height * width, activation=activation)
        model = check(meta, arrays, images_for(meta, 40, 1), batch_size=7)
        path = model.plan().paths["gap1"]
        if height * width & (height * width - 1):      # 16-bit mul: beyond 2^24 at 8 bits
            assert path == "int64: sums times mul reach 2^24"
        else:
            assert path == "float32"

    def test_after_pooling_and_before_rbf(self):
        spec = [{"kind": "conv", "out_channels": 4, "kernel": 3, "activation": "tanh"},
                {"kind": "pool", "mode": "max", "size": 2},
                {"kind": "gap"},
                {"kind": "dense", "out_features": 5, "activation": "none"},
                {"kind": "rbf", "out_features": 3}]
        for height in (6, 12):          # gap over 2x2, then over 5x5
            meta, arrays = golden.random_qmodel(spec, height, height=height)
            check(meta, arrays, images_for(meta, 30, 2), batch_size=8)

    def test_saturation_at_the_extremes(self):
        # 18-bit signed codes at full scale over a 3x5 map round past the range: the
        # reference and the run count one saturation per channel and image.
        meta, arrays = gap_model(3, 5, activation="none", out_bits=18, out_frac=30,
                                 per_channel=False)
        lo, hi = L.format_range(meta["layers"][1]["in_format"])
        arrays["conv0.weight"] = np.minimum(np.abs(arrays["conv0.weight"]), 127)
        arrays["conv0.weight"][1] *= -1
        arrays["conv0.weight"][2] = 0
        arrays["conv0.bias"] = np.array([1, -1, 0]) << 12
        rehash(meta, arrays)
        white = np.full((2, 5, 7), 255, np.uint8)
        model = check(meta, arrays, np.concatenate([white, images_for(meta, 10, 3)]))
        result = model.run(white, taps=True)
        assert result["taps"]["conv0"][:, 0].min() == hi
        assert result["taps"]["conv0"][:, 1].max() == lo
        assert result["taps"]["gap1"].ravel().tolist() == [hi, lo, 0, hi, lo, 0]
        assert result["saturations"]["gap1"] == 4


class TestGapBound:
    """``H·W·X·mul + 2^(shift-1) < 2^24`` decides the path, at its edge."""

    @pytest.mark.parametrize("width, path", [(4, "float32"), (8, "int64")])
    def test_power_of_two(self, width, path):
        # 20-bit codes at full scale: 16·(2^20 - 1) + 8 = 2^24 - 8 fits; 32·(2^20 - 1) + 16
        # does not.
        meta, arrays = gap_model(4, width, weights="max", per_channel=False, out_bits=20,
                                 out_frac=16)
        white = np.full((2, 6, width + 2), 255, np.uint8)
        model = check(meta, arrays, np.concatenate([white, images_for(meta, 10, 0)]))
        assert model.plan().paths["gap1"].split(":")[0] == path
        assert model.run(white, taps=True)["taps"]["gap1"].ravel().tolist() == [(1 << 20) - 1] * 6

    @pytest.mark.parametrize("bits, path", [(5, "float32"), (6, "int64")])
    def test_not_a_power_of_two(self, bits, path):
        # 3x5: 15 · 31 · 34953 + 2^18 = 16,515,289 < 2^24; 15 · 63 · 34953 + 2^18 is not.
        meta, arrays = gap_model(3, 5, out_bits=bits)
        model = check(meta, arrays, images_for(meta, 30, 0))
        assert model.plan().paths["gap1"].split(":")[0] == path

    @pytest.mark.parametrize("over", [0, 1])
    def test_the_inequality_itself(self, monkeypatch, over):
        meta, arrays = gap_model(5, 5)
        mul, shift = gap_scale(25)
        limit = 25 * 255 * mul + (1 << (shift - 1))
        monkeypatch.setattr(F, "F32_EXACT", limit + over)
        model = check(meta, arrays, images_for(meta, 20, 0))
        assert model.plan().paths["gap1"].split(":")[0] == ("float32" if over else "int64")

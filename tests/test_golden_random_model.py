"""golden/random_model.py: random valid models for tests, one generator per layer kind."""

import json
import math

import numpy as np
import pytest
from test_golden_model import SPECS, build

import golden
from core.kinds import gap_scale
from golden import layers as L


class TestRandomQModel:
    def test_reproducible(self):
        a, _ = build("lecun1998", seed=3)
        b, _ = build("lecun1998", seed=3)
        c, _ = build("lecun1998", seed=4)
        assert a == b and a["arrays"] != c["arrays"]

    def test_weights_span_extremes(self):
        meta, arrays = build("lecun1998")
        for d in meta["layers"]:
            if "weight" in d.get("arrays", {}):
                lo, hi = L.format_range(d["weight_format"])
                weight = arrays[d["arrays"]["weight"]]
                assert weight.min() == lo and weight.max() == hi, d["name"]
        meta, arrays = build("relu_max", weights="extreme")
        assert set(np.unique(arrays["conv0.weight"])) == {-128, 127}
        limit = 1 << (meta["layers"][0]["acc_bits"] - 2)
        assert set(np.abs(arrays["conv0.bias"] + 0.5)) == {limit - 0.5}

    def test_covers_shifts_and_luts(self):
        meta, _ = build("left_shifts")
        shifts = [f - d["out_format"]["frac"] for d in meta["layers"][:2] for f in d["acc_frac"]]
        assert max(shifts) < 0
        assert meta["layers"][2]["activation"] == {"kind": "lut", "function": "sigmoid",
                                                   "in_bits": 5, "in_frac": 30}
        meta, _ = build("lecun1998")
        fracs = meta["layers"][0]["weight_format"]["frac"]
        assert isinstance(fracs, list) and len(fracs) == 4
        assert "connections" in meta["layers"][2]["arrays"]

    def test_spec_errors(self):
        conv = {"kind": "conv", "out_channels": 2, "kernel": 3}
        dense = {"kind": "dense", "out_features": 3}
        cases = [
            ([], r"spec must be a non-empty list of layer dicts, not \[\]"),
            ([{"kind": "lstm"}], r"spec\[0\].kind='lstm' is not one of: conv, pool, subsample, "
                                 r"gap, dense, rbf"),
            ([dict(conv, stride=2), dense], r"spec\[0\] has an unknown key 'stride'; a conv "
                                            r"layer takes: activation, connections, kernel, "),
            ([{"kind": "conv", "kernel": 3}, dense], r"spec\[0\] \(conv\) needs 'out_channels'"),
            ([conv], r"spec\[0\] is a conv layer; the last layer must be dense or rbf"),
            ([{"kind": "gap"}], r"spec\[0\] is a gap layer; the last layer must be dense or "
                                r"rbf \(it gives the scores\)$"),
            ([conv, {"kind": "gap", "size": 2}, dense], r"spec\[1\] has an unknown key 'size'; "
                                                        r"a gap layer takes: $"),
            ([dict(conv, kernel=8), {"kind": "gap"}, dense], r"spec\[1\]: global average "
                                                             r"pooling of a 1x1 map does "
                                                             r"nothing; remove the layer$"),
            ([{"kind": "rbf", "out_features": 2}, dense], r"spec\[0\]: rbf is an output layer; "
                                                          r"it must be the last"),
            ([conv, dict(dense, activation="relu")], r"spec\[1\]: the final layer gives raw "
                                                     r"scores; drop its activation"),
        ]
        for spec, message in cases:
            with pytest.raises(ValueError, match=r"^random_qmodel: " + message):
                golden.random_qmodel(spec, 0)
        with pytest.raises(ValueError, match=r"^random_qmodel: weights='big' is not one of: "
                                             r"uniform, extreme, min, max$"):
            golden.random_qmodel([dense], 0, weights="big")

    def test_meta_is_json(self, tmp_path):
        for name in SPECS:
            meta, arrays = build(name)
            assert json.loads(json.dumps(meta)) == meta
            assert math.prod(arrays[next(iter(arrays))].shape) > 0

    @pytest.mark.parametrize("height, width", [(2, 2), (4, 4), (5, 5), (3, 5)])
    def test_gap(self, height, width):
        spec = [{"kind": "conv", "out_channels": 3, "kernel": 3},
                {"kind": "pool", "mode": "max", "size": 1},
                {"kind": "gap"},
                {"kind": "dense", "out_features": 4}]
        meta, _ = golden.random_qmodel(spec, 0, height=height + 2, width=width + 2)
        mul, shift = gap_scale(height * width)
        pool = meta["layers"][1]
        assert meta["layers"][2] == {
            "name": "gap2", "kind": "gap", "in_shape": [3, height, width],
            "out_shape": [3, 1, 1], "in_format": pool["out_format"],
            "out_format": pool["out_format"], "mul": mul, "shift": shift, "final": False,
            "arrays": {}}
        assert meta["layers"][3]["in_features"] == 3

    def test_registry_covers_exported_kinds(self):
        assert golden.RANDOM.missing() == ()
        assert set(golden.random_model.SPEC_KEYS) == set(golden.RANDOM.kinds())
        assert golden.random_model.SPEC_KEYS["gap"] == set()

    def test_a_generator_without_generate_cannot_be_made(self):
        # _Generator is abstract: a generator of a new kind that forgets `generate` fails
        # when it is made (at registration), not when a spec first uses the kind.
        class NoGenerate(golden.random_model._Generator):
            pass

        with pytest.raises(TypeError, match=r"abstract method '?generate'?"):
            NoGenerate()

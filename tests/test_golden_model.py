"""golden/model.py: verification, running, saving and loading (and the shared test models)."""

import json
import math
import os

import numpy as np
import pytest

import golden
from golden import layers as L
from golden.model import _write_npz

# Small networks covering every layer kind, activation, connection table and shift direction.
SPECS = {
    "relu_max": dict(spec=[
        {"kind": "conv", "out_channels": 3, "kernel": 3, "activation": "relu"},
        {"kind": "pool", "mode": "max", "size": 2},
        {"kind": "dense", "out_features": 5, "final": True},
    ]),
    "lecun1998": dict(height=12, pad=2, spec=[
        {"kind": "conv", "name": "c1", "out_channels": 4, "kernel": 5, "activation": "none"},
        {"kind": "subsample", "name": "s2", "activation": "scaled_tanh"},
        {"kind": "conv", "name": "c3", "out_channels": 6, "kernel": 3, "activation": "none",
         "connections": "random"},
        {"kind": "subsample", "name": "s4", "activation": "tanh"},
        {"kind": "conv", "name": "c5", "out_channels": 8, "kernel": 2,
         "activation": "scaled_tanh"},
        {"kind": "dense", "name": "f6", "out_features": 7, "activation": "scaled_tanh"},
        {"kind": "rbf", "name": "out", "out_features": 4},
    ]),
    "avg_lut": dict(height=8, pad=1, lut_bits=6, spec=[
        {"kind": "conv", "out_channels": 2, "kernel": 3, "padding": 1, "activation": "tanh"},
        {"kind": "pool", "mode": "avg", "size": 2},
        {"kind": "conv", "out_channels": 3, "kernel": 2, "activation": "sigmoid"},
        {"kind": "pool", "mode": "avg", "size": 1},
        {"kind": "dense", "out_features": 6, "activation": "none"},
        {"kind": "dense", "out_features": 3},
    ]),
    "multichannel": dict(channels=3, height=6, width=7, pad=1, per_channel=False, spec=[
        {"kind": "conv", "out_channels": 2, "kernel": 3,
         "connections": [[1, 0, 1], [0, 1, 0]]},
        {"kind": "dense", "out_features": 4, "activation": "relu"},
        {"kind": "conv", "out_channels": 5, "kernel": 1, "activation": "none"},
        {"kind": "dense", "out_features": 3},
    ]),
    "gap": dict(height=9, width=11, spec=[
        {"kind": "conv", "out_channels": 3, "kernel": 3, "activation": "none"},
        {"kind": "gap"},
        {"kind": "dense", "out_features": 4, "activation": "tanh"},
        {"kind": "dense", "out_features": 3},
    ]),
    "gap_pow2": dict(height=10, spec=[
        {"kind": "conv", "out_channels": 4, "kernel": 3},
        {"kind": "pool", "mode": "max", "size": 2},
        {"kind": "gap"},
        {"kind": "dense", "out_features": 3},
    ]),
    "left_shifts": dict(wbits=4, abits=6, spec=[
        {"kind": "conv", "out_channels": 3, "kernel": 3, "weight_frac": 0, "out_frac": 12,
         "out_bits": 16},
        {"kind": "subsample", "size": 2, "weight_frac": [0, 1, 2], "out_frac": 20,
         "out_bits": 12, "activation": "none"},
        {"kind": "dense", "out_features": 4, "activation": "sigmoid", "lut_frac": 30,
         "lut_bits": 5, "weight_frac": -1},
        {"kind": "rbf", "out_features": 3},
    ]),
}


def build(name, seed=0, **overrides):
    kwargs = dict(SPECS[name])
    kwargs.update(overrides)
    return golden.random_qmodel(kwargs.pop("spec"), seed, **kwargs)


def rehash(meta, arrays):
    meta["arrays"] = {n: {"shape": list(a.shape), "sha256": golden.array_sha256(a)}
                      for n, a in arrays.items()}


def assert_refused(meta, arrays, message):
    """Rehash the changed model; assert golden refuses it with exactly ``message``."""
    rehash(meta, arrays)
    with pytest.raises(golden.QModelError) as info:
        golden.IntegerModel(meta, arrays)
    assert str(info.value) == f"qmodel.json: {message}; re-run `make quantize PRESET=random`"


def reference(meta, arrays, images):
    """Run ``meta`` layer by layer straight from the README, with golden.layers functions."""
    inp = meta["input"]
    n = images.shape[0]
    x = L.pad2d(images.reshape(n, inp["channels"], inp["height"], inp["width"]), inp["pad"])
    taps, saturations, clamps = {}, {}, {}
    for d in meta["layers"]:
        saturations[d["name"]] = clamps[d["name"]] = 0
        if d["kind"] == "pool":
            pool = L.maxpool if d["mode"] == "max" else L.avgpool
            x = pool(x.reshape(n, *d["in_shape"]), d["size"])
        elif d["kind"] == "gap":
            x, saturations[d["name"]] = L.global_avgpool(x.reshape(n, *d["in_shape"]), d["mul"],
                                                         d["shift"], d["in_format"])
        elif d["kind"] == "rbf":
            x = L.rbf(x.reshape(n, -1), arrays[d["arrays"]["centers"]])
        else:
            w, b = arrays[d["arrays"]["weight"]], arrays[d["arrays"]["bias"]]
            if d["kind"] == "conv":
                spatial = L.pad2d(x.reshape(n, *d["in_shape"]), d["padding"])
                x = L.conv2d(spatial, w, b)
            elif d["kind"] == "subsample":
                x = L.subsample(x.reshape(n, *d["in_shape"]), w, b, d["size"])
            else:
                x = L.dense(x.reshape(n, -1), w, b)
            act = d["activation"]
            if not d["final"]:
                fmt = d["out_format"]
                if act["kind"] == "lut":
                    fmt = {"bits": act["in_bits"], "frac": act["in_frac"], "signed": True}
                shift = np.array(d["acc_frac"]) - fmt["frac"]
                if act["kind"] == "lut":
                    wide, _ = L.requantize(x, shift, {"bits": 62, "frac": 0, "signed": True})
                    x, _ = L.requantize(x, shift, fmt)
                    table = arrays[d["arrays"]["lut"]]
                    low, high = lut_ends(act["function"], d["out_format"])
                    for clamped, lossless in ((wide < x, table[0] == low),
                                              (wide > x, table[-1] == high)):
                        counts = clamps if lossless else saturations
                        counts[d["name"]] += int(clamped.sum())
                    x = L.apply_lut(x, table, act["in_bits"])
                else:
                    x, saturations[d["name"]] = L.requantize(x, shift, fmt)
        taps[d["name"]] = x
    return taps, saturations, clamps


#: The limits of each lookup-table function at -inf and +inf.
LIMITS = {"tanh": (-1.0, 1.0), "scaled_tanh": (-1.7159, 1.7159), "sigmoid": (0.0, 1.0)}


def lut_ends(function, fmt):
    """The output codes a function tends to at -inf and +inf (README: lossless clamps)."""
    lo, hi = L.format_range(fmt)
    return tuple(min(max(math.floor(v * 2.0 ** fmt["frac"] + 0.5), lo), hi)
                 for v in LIMITS[function])


def save_random(tmp_path, name="relu_max", **kwargs):
    meta, arrays = build(name, **kwargs)
    directory = tmp_path / "random"
    golden.save(meta, arrays, directory)
    return meta, arrays, directory


class TestRun:
    @pytest.mark.parametrize("name", SPECS)
    def test_against_reference(self, name):
        meta, arrays = build(name)
        model = golden.IntegerModel(meta, arrays)
        images = golden.random_images(meta, 40, seed=1)
        result = model.run(images, taps=True, batch_size=16)
        taps, saturations, clamps = reference(meta, arrays, images)
        assert list(result["taps"]) == [d["name"] for d in meta["layers"]]
        for d in meta["layers"]:
            tap = result["taps"][d["name"]]
            assert tap.dtype == np.int64
            if d["kind"] in ("dense", "rbf"):
                assert tap.shape == (40, d["out_features"])
            else:
                assert tap.shape == (40, *d["out_shape"])
            assert np.array_equal(tap, taps[d["name"]]), d["name"]
        assert result["saturations"] == saturations and result["clamps"] == clamps
        assert all(type(v) is int for v in result["saturations"].values())
        assert all(type(v) is int for v in result["clamps"].values())
        assert np.array_equal(result["scores"], taps[meta["layers"][-1]["name"]])
        assert result["scores"].shape == (40, meta["num_classes"])
        assert np.array_equal(result["classes"],
                              L.classify(result["scores"], meta["output"]["kind"]))

    @pytest.mark.parametrize("name", SPECS)
    def test_values_in_formats(self, name):
        meta, arrays = build(name)
        result = golden.IntegerModel(meta, arrays).run(golden.random_images(meta, 30, 2),
                                                       taps=True)
        for d in meta["layers"][:-1]:
            lo, hi = L.format_range(d["out_format"])
            tap = result["taps"][d["name"]]
            assert lo <= tap.min() and tap.max() <= hi, d["name"]

    def test_batch_size_changes_nothing(self):
        meta, arrays = build("lecun1998")
        model = golden.IntegerModel(meta, arrays)
        images = golden.random_images(meta, 23, seed=3)
        one = model.run(images, taps=True, batch_size=1)
        big = model.run(images, taps=True)
        assert np.array_equal(one["scores"], big["scores"])
        assert one["saturations"] == big["saturations"] and one["clamps"] == big["clamps"]
        for name in one["taps"]:
            assert np.array_equal(one["taps"][name], big["taps"][name])

    def test_saturations_happen_and_relu_is_not_one(self):
        meta, arrays = build("relu_max")
        result = golden.IntegerModel(meta, arrays).run(golden.random_images(meta, 64, 4))
        assert result["saturations"]["conv0"] > 0
        assert result["saturations"]["pool1"] == 0 and result["saturations"]["dense2"] == 0
        # Black images with negative biases: every accumulator is negative and every output
        # is 0, yet the ReLU clamp is not a saturation.
        arrays["conv0.bias"] = -np.abs(arrays["conv0.bias"]) - 1
        rehash(meta, arrays)
        black = golden.IntegerModel(meta, arrays).run(np.zeros((3, 8, 8), np.uint8), taps=True)
        assert not black["taps"]["conv0"].any() and black["saturations"]["conv0"] == 0

    def test_lenet_shapes(self):
        spec = [
            {"kind": "conv", "name": "c1", "out_channels": 6, "kernel": 5},
            {"kind": "pool", "name": "s2", "mode": "max", "size": 2},
            {"kind": "conv", "name": "c3", "out_channels": 16, "kernel": 5},
            {"kind": "pool", "name": "s4", "mode": "max", "size": 2},
            {"kind": "dense", "name": "f5", "out_features": 120},
            {"kind": "dense", "name": "f6", "out_features": 84},
            {"kind": "dense", "name": "out", "out_features": 10},
        ]
        meta, arrays = golden.random_qmodel(spec, 0, height=28, pad=2)
        model = golden.IntegerModel(meta, arrays)
        result = model.run(golden.random_images(meta, 100, 5), taps=True)
        shapes = {name: tap.shape[1:] for name, tap in result["taps"].items()}
        assert shapes == {"c1": (6, 28, 28), "s2": (6, 14, 14), "c3": (16, 10, 10),
                          "s4": (16, 5, 5), "f5": (120,), "f6": (84,), "out": (10,)}
        assert [d["acc_bits"] for d in meta["layers"] if "acc_bits" in d] == [22, 25, 26, 24, 24]
        assert model.num_classes == 10 and model.input_shape == (1, 28, 28)
        assert model.layer_names == ("c1", "s2", "c3", "s4", "f5", "f6", "out")

    def test_empty_batch(self):
        meta, arrays = build("lecun1998")
        result = golden.IntegerModel(meta, arrays).run(np.zeros((0, 12, 12), np.uint8),
                                                       taps=True)
        assert result["scores"].shape == (0, 4) and result["classes"].shape == (0,)

    def test_multichannel_images(self):
        meta, arrays = build("multichannel")
        model = golden.IntegerModel(meta, arrays)
        images = golden.random_images(meta, 4, 0)
        assert images.shape == (4, 3, 6, 7) and images.dtype == np.uint8
        assert model.run(images)["scores"].shape == (4, 3)

    def test_read_only(self):
        meta, arrays = build("relu_max")
        model = golden.IntegerModel(meta, arrays)
        arrays["conv0.weight"][...] = 0
        assert model.arrays["conv0.weight"].any()
        with pytest.raises(ValueError):
            model.arrays["conv0.weight"][0, 0, 0, 0] = 1
        model.meta["layers"].clear()
        assert len(model.meta["layers"]) == 3


class TestImages:
    def setup_method(self):
        self.model = golden.IntegerModel(*build("relu_max"))

    def test_wrong_shape(self):
        with pytest.raises(golden.QModelError) as info:
            self.model.run(np.zeros((28, 28), np.uint8))
        assert str(info.value) == ("images: expected shape [N, 8, 8] (the model's input), got "
                                   "[28, 28]; pass a batch of 8x8 images (for one image, "
                                   "images[None])")
        with pytest.raises(golden.QModelError, match=r"^images: expected shape \[N, 8, 8\] "
                                                     r"\(the model's input\), got \[2, 8, 9\]"):
            self.model.run(np.zeros((2, 8, 9), np.uint8))

    def test_accepts_channel_axis(self):
        images = golden.random_images(self.model.meta, 3, 0)
        assert np.array_equal(self.model.run(images)["scores"],
                              self.model.run(images[:, None])["scores"])

    def test_wrong_dtype_or_range(self):
        with pytest.raises(golden.QModelError) as info:
            self.model.run(np.zeros((1, 8, 8), np.float32))
        assert str(info.value) == ("images: expected integer pixel codes (uint8), got float32; "
                                   "convert pixels to codes, e.g. uint8 0..255")
        with pytest.raises(golden.QModelError) as info:
            self.model.run(np.full((1, 8, 8), 256, np.int16))
        assert str(info.value) == ("images: pixel codes 256..256 exceed the input format's "
                                   "range 0..255")

    def test_batch_size(self):
        with pytest.raises(ValueError, match=r"^batch_size must be a positive integer, not 0$"):
            self.model.run(np.zeros((1, 8, 8), np.uint8), batch_size=0)


class TestCheckAccumulators:
    SPECS = [
        [{"kind": "conv", "out_channels": 3, "kernel": 5},
         {"kind": "pool", "mode": "max", "size": 2},
         {"kind": "conv", "out_channels": 4, "kernel": 3, "connections": "random"},
         {"kind": "dense", "out_features": 3}],
        [{"kind": "conv", "out_channels": 2, "kernel": 3, "activation": "none"},
         {"kind": "subsample", "activation": "none"},
         {"kind": "dense", "out_features": 5, "activation": "none"},
         {"kind": "rbf", "out_features": 3}],
    ]

    @pytest.mark.parametrize("weights", ["min", "max", "extreme"])
    @pytest.mark.parametrize("spec", range(len(SPECS)))
    def test_extreme_models_and_images(self, weights, spec):
        meta, arrays = golden.random_qmodel(self.SPECS[spec], 1, height=12, weights=weights)
        model = golden.IntegerModel(meta, arrays)
        for images in (np.full((2, 12, 12), 255, np.uint8), np.zeros((1, 12, 12), np.uint8),
                       golden.random_images(meta, 8, 0)):
            seen = model.check_accumulators(images)
            assert list(seen) == [d["name"] for d in meta["layers"] if "acc_bits" in d]
            for d in meta["layers"]:
                if "acc_bits" in d:
                    lo, hi = seen[d["name"]]
                    assert -(1 << (d["acc_bits"] - 1)) <= lo <= hi < 1 << (d["acc_bits"] - 1)
        if weights == "min":
            # Full-scale pixels against all-minimum weights and bias need the top bit.
            first = meta["layers"][0]
            lo, _ = model.check_accumulators(np.full((1, 12, 12), 255, np.uint8))[first["name"]]
            assert lo < -(1 << (first["acc_bits"] - 2))

    def test_reports_overflow(self):
        meta, arrays = build("relu_max")
        model = golden.IntegerModel(meta, arrays)
        model._layers[0].acc_bits = 4
        with pytest.raises(golden.QModelError, match=r"^layer 'conv0': accumulator -?\d+ does "
                                                     r"not fit acc_bits=4 \(signed range -8..7\); "
                                                     r"the bit-growth bound is broken"):
            model.check_accumulators(golden.random_images(meta, 2, 0))


class TestSaveLoad:
    def test_round_trip(self, tmp_path):
        meta, arrays, directory = save_random(tmp_path, "lecun1998")
        assert sorted(os.listdir(directory)) == ["qmodel.json", "qmodel.npz"]
        text = (directory / "qmodel.json").read_text()
        stored = json.loads(text)
        assert text == json.dumps(stored, sort_keys=True, indent=1) + "\n"
        assert stored["arrays"] == meta["arrays"]
        model = golden.load(directory)
        images = golden.random_images(meta, 10, 0)
        expected = golden.IntegerModel(meta, arrays).run(images, taps=True)
        got = model.run(images, taps=True)
        assert np.array_equal(got["scores"], expected["scores"])
        assert model.preset == "random" and model.output_kind == "argmin"

    def test_deterministic_bytes_and_numpy_meta(self, tmp_path):
        meta, arrays = build("relu_max")
        golden.save(meta, arrays, tmp_path / "a")
        meta = dict(meta, num_classes=np.int64(meta["num_classes"]))
        del meta["arrays"]
        golden.save(meta, {k: v.astype(np.int32) for k, v in arrays.items()}, tmp_path / "b")
        for name in ("qmodel.json", "qmodel.npz"):
            assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()

    def test_refuses_invalid_model_before_writing(self, tmp_path):
        meta, arrays = build("relu_max")
        meta["layers"][0]["acc_bits"] += 1
        with pytest.raises(golden.QModelError, match=r"acc_bits=22 but bit growth gives 21"):
            golden.save(meta, arrays, tmp_path / "out")
        assert not (tmp_path / "out").exists()
        with pytest.raises(TypeError, match=r"^save: array 'x' must hold integer codes, not "
                                            r"float64; quantize it before export$"):
            golden.save(meta, {"x": np.zeros(2)}, tmp_path / "out")

    def test_missing_files(self, tmp_path):
        with pytest.raises(golden.QModelError) as info:
            golden.load(tmp_path / "lenet5")
        assert str(info.value) == (f"{tmp_path}/lenet5/qmodel.json: no such file; re-run "
                                   f"`make quantize PRESET=lenet5 OUT={tmp_path}/lenet5`")
        _, _, directory = save_random(tmp_path)
        (directory / "qmodel.npz").unlink()
        with pytest.raises(golden.QModelError) as info:
            golden.load(directory)
        assert str(info.value) == (f"{directory}/qmodel.npz: no such file; re-run "
                                   f"`make quantize CONFIG=<the config it was made from> "
                                   f"OUT={directory}`")

    def test_malformed_json(self, tmp_path):
        _, _, directory = save_random(tmp_path)
        (directory / "qmodel.json").write_text('{"format_version": 1,')
        with pytest.raises(golden.QModelError) as info:
            golden.load(directory)
        assert str(info.value) == (f"{directory}/qmodel.json: not valid JSON (Expecting "
                                   f"property name enclosed in double quotes at line 1 column "
                                   f"22); re-run `make quantize CONFIG=<the config it was made "
                                   f"from> OUT={directory}`")

    def test_hash_mismatch(self, tmp_path):
        _, arrays, directory = save_random(tmp_path)
        arrays = dict(arrays)
        arrays["conv0.weight"] = arrays["conv0.weight"].copy()
        arrays["conv0.weight"][0, 0, 0, 0] ^= 1
        with open(directory / "qmodel.npz", "wb") as file:
            _write_npz(file, arrays)
        with pytest.raises(golden.QModelError) as info:
            golden.load(directory)
        assert str(info.value) == (
            f"{directory}/qmodel.npz: array 'conv0.weight' does not match its SHA-256 in "
            f"{directory}/qmodel.json (the files come from different exports or were "
            f"modified); re-run `make quantize CONFIG=<the config it was made from> "
            f"OUT={directory}`")

    def test_missing_array(self, tmp_path):
        _, arrays, directory = save_random(tmp_path)
        with open(directory / "qmodel.npz", "wb") as file:
            _write_npz(file, {k: v for k, v in arrays.items() if k != "dense2.bias"})
        with pytest.raises(golden.QModelError) as info:
            golden.load(directory)
        assert str(info.value) == (f"{directory}/qmodel.npz: array 'dense2.bias' listed in "
                                   f"{directory}/qmodel.json is missing; re-run `make quantize "
                                   f"CONFIG=<the config it was made from> OUT={directory}`")

    def test_wrong_shape_and_dtype(self, tmp_path):
        meta, arrays, directory = save_random(tmp_path)
        meta["arrays"]["dense2.bias"]["shape"] = [1, 5]
        (directory / "qmodel.json").write_text(json.dumps(meta))
        with pytest.raises(golden.QModelError) as info:
            golden.load(directory)
        assert str(info.value) == (f"{directory}/qmodel.npz: array 'dense2.bias' has shape [5] "
                                   f"but {directory}/qmodel.json says [1, 5]; re-run `make "
                                   f"quantize CONFIG=<the config it was made from> "
                                   f"OUT={directory}`")
        meta["arrays"]["dense2.bias"]["shape"] = [5]
        (directory / "qmodel.json").write_text(json.dumps(meta))
        np.savez(directory / "qmodel.npz", **{k: v.astype(np.int32) for k, v in arrays.items()})
        with pytest.raises(golden.QModelError, match=r"array 'conv0.bias' is int32, not int64"):
            golden.load(directory)

    def test_not_an_archive(self, tmp_path):
        _, _, directory = save_random(tmp_path)
        (directory / "qmodel.npz").write_bytes(b"not a zip")
        with pytest.raises(golden.QModelError, match=r"qmodel.npz: not a readable .npz archive "
                                                     r"of integer arrays \(.*\); re-run"):
            golden.load(directory)


class TestVerification:
    """Every rule of the README that a model can break is refused with a one-line message."""

    refused = staticmethod(assert_refused)

    def test_acc_bits(self):
        meta, arrays = build("relu_max")
        meta["layers"][0]["acc_bits"] = 23
        self.refused(meta, arrays, "layers[0] 'conv0': acc_bits=23 but bit growth gives 21 "
                                   "(w_bits 8 + in_bits 8 + ceil(log2(fan_in 9)) + 1)")

    def test_connections(self):
        meta, arrays = build("multichannel")
        arrays["conv0.weight"][1, 0, 0, 0] = 3
        self.refused(meta, arrays, "layers[0] 'conv0': weight[1, 0] is nonzero but "
                                   "connections[1, 0] = 0; unconnected pairs must have all-zero "
                                   "weights")

    def test_sparse_fan_in(self):
        meta, _ = build("multichannel")
        # 2 of 3 channels connected at most: fan_in 2 · 3 · 3 = 18.
        assert meta["layers"][0]["acc_bits"] == L.acc_bits_for("conv", 8, 8, 18)

    def test_format_chain(self):
        meta, arrays = build("relu_max")
        meta["layers"][1]["in_format"]["frac"] += 1
        frac = meta["layers"][0]["out_format"]["frac"]
        self.refused(meta, arrays, f"layers[1] 'pool1': in_format (unsigned 8-bit frac "
                                   f"{frac + 1}) differs from the format of its input (unsigned "
                                   f"8-bit frac {frac})")

    def test_relu_needs_unsigned(self):
        meta, arrays = build("relu_max")
        meta["layers"][0]["out_format"]["signed"] = True
        self.refused(meta, arrays, "layers[0] 'conv0': activation relu needs an unsigned "
                                   "out_format (the clamp at 0 is the ReLU)")

    def test_codes_in_range(self):
        meta, arrays = build("relu_max")
        arrays["conv0.weight"][0, 0, 0, 0] = 200
        self.refused(meta, arrays, "layers[0] 'conv0': arrays.weight holds codes -128..200 "
                                   "outside its format's range -128..127")

    def test_bias_in_product_sum_range(self):
        meta, arrays = build("relu_max")
        arrays["conv0.bias"][0] = 1 << 19
        self.refused(meta, arrays, "layers[0] 'conv0': arrays.bias holds codes "
                                   f"{arrays['conv0.bias'].min()}..{1 << 19} outside its "
                                   "format's range -524288..524287")

    def test_final_scale(self):
        meta, arrays = build("relu_max")
        meta["layers"][2]["weight_format"]["frac"] = [7, 7, 7, 7, 6]
        meta["layers"][2]["acc_frac"] = [7 + f for f in (7, 7, 7, 7, 6)]
        fracs = [f + meta["layers"][2]["in_format"]["frac"] for f in (7, 7, 7, 7, 6)]
        meta["layers"][2]["acc_frac"] = fracs
        self.refused(meta, arrays, f"layers[2] 'dense2': acc_frac={fracs} differs across "
                                   f"outputs; the scores must share one scale, so quantize the "
                                   f"final layer's weights per tensor")

    def test_acc_frac(self):
        meta, arrays = build("relu_max")
        meta["layers"][0]["acc_frac"][0] += 1
        expected = [f - (1 if i == 0 else 0) for i, f in enumerate(meta["layers"][0]["acc_frac"])]
        self.refused(meta, arrays, f"layers[0] 'conv0': acc_frac={meta['layers'][0]['acc_frac']} "
                                   f"but weight frac + in_format frac gives {expected}")

    def test_output(self):
        meta, arrays = build("relu_max")
        meta["output"]["kind"] = "argmin"
        self.refused(meta, arrays, "output: kind='argmin' but a final dense layer is classified "
                                   "by 'argmax'")
        meta, arrays = build("relu_max")
        meta["output"]["score_bits"] = 30
        bits = meta["layers"][-1]["acc_bits"]
        self.refused(meta, arrays, f"output: score_bits=30 is out of range ({bits}..{bits})")
        meta, arrays = build("relu_max")
        meta["output"]["score_signed"] = False
        self.refused(meta, arrays, "output: score_signed must be true (dense scores are signed "
                                   "accumulators)")
        meta, arrays = build("lecun1998")
        meta["output"]["score_signed"] = False
        golden.IntegerModel(meta, arrays)

    def test_structure(self):
        meta, arrays = build("relu_max")
        meta["format_version"] = 2
        self.refused(meta, arrays, "format_version=2, but this golden model reads version 1")
        meta, arrays = build("relu_max")
        del meta["layers"][1]["size"]
        self.refused(meta, arrays, "layers[1] 'pool1': missing 'size'")
        meta, arrays = build("relu_max")
        meta["layers"][2]["final"] = False
        meta["layers"][2]["activation"] = {"kind": "none"}
        meta["layers"][2]["out_format"] = {"bits": 8, "frac": 0, "signed": True}
        self.refused(meta, arrays, "layers[2] 'dense2': the last layer gives the scores; set "
                                   "final: true (a dense or rbf layer)")
        meta, arrays = build("relu_max")
        meta["layers"][0]["arrays"]["lut"] = "conv0.weight"
        self.refused(meta, arrays, "layers[0] 'conv0': arrays.lut is given but activation is "
                                   "'relu'")

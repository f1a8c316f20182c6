"""golden/fast.py: IntegerModel.run's float32 path against the int64 reference (golden.layers).

Every mode of the fast path is run against ``reference`` (the README's rules, layer by layer, on
int64), with and without taps; the bound checks are tested at their edge, where a model one
unit over must fall back to int64 and the float32 shortcut, forced, would be wrong.
"""

import threading

import numpy as np
import pytest
from test_golden_model import SPECS, build, reference, rehash

import golden
from golden import blas, ops
from golden import fast as F
from golden import layers as L

LENET = [
    {"kind": "conv", "name": "c1", "out_channels": 6, "kernel": 5},
    {"kind": "pool", "name": "s2", "mode": "max", "size": 2},
    {"kind": "conv", "name": "c3", "out_channels": 16, "kernel": 5},
    {"kind": "pool", "name": "s4", "mode": "max", "size": 2},
    {"kind": "dense", "name": "f5", "out_features": 120},
    {"kind": "dense", "name": "f6", "out_features": 84},
    {"kind": "dense", "name": "out", "out_features": 10},
]
LENET_TANH = [
    {"kind": "conv", "name": "c1", "out_channels": 6, "kernel": 5, "padding": 2,
     "activation": "tanh"},
    {"kind": "pool", "name": "s2", "mode": "avg", "size": 2},
    {"kind": "conv", "name": "c3", "out_channels": 16, "kernel": 5, "activation": "tanh"},
    {"kind": "pool", "name": "s4", "mode": "avg", "size": 2},
    {"kind": "dense", "name": "f5", "out_features": 120, "activation": "tanh"},
    {"kind": "dense", "name": "f6", "out_features": 84, "activation": "tanh"},
    {"kind": "dense", "name": "out", "out_features": 10},
]
LENET_1998 = [
    {"kind": "conv", "name": "c1", "out_channels": 6, "kernel": 5, "activation": "scaled_tanh"},
    {"kind": "subsample", "name": "s2", "activation": "scaled_tanh"},
    {"kind": "conv", "name": "c3", "out_channels": 16, "kernel": 5, "activation": "scaled_tanh",
     "connections": "random"},
    {"kind": "subsample", "name": "s4", "activation": "scaled_tanh"},
    {"kind": "conv", "name": "c5", "out_channels": 120, "kernel": 5,
     "activation": "scaled_tanh"},
    {"kind": "dense", "name": "f6", "out_features": 84, "activation": "scaled_tanh"},
    {"kind": "rbf", "name": "out", "out_features": 10},
]
# The presets' shapes: 28x28 images (padded to 32 by the input or by C1), 10-bit LUT inputs.
LENETS = {
    "lenet5": dict(spec=LENET, height=28, pad=2),
    "lenet5-tanh": dict(spec=LENET_TANH, height=28, lut_bits=10),
    "lenet5-1998": dict(spec=LENET_1998, height=28, pad=2, lut_bits=10),
}


def images_for(meta, n, seed):
    """Random images plus all-black and all-white ones (the extremes of every sum)."""
    images = golden.random_images(meta, n, seed)
    images[0] = 0
    images[1] = L.format_range(meta["input"]["format"])[1]
    return images


def check(meta, arrays, images, batch_size=16):
    """Run with and without taps; assert both equal the reference; return the model."""
    model = golden.IntegerModel(meta, arrays)
    taps, saturations, clamps = reference(meta, arrays, images)
    last = meta["layers"][-1]["name"]
    for with_taps in (False, True):
        result = model.run(images, taps=with_taps, batch_size=batch_size)
        assert np.array_equal(result["scores"], taps[last])
        assert result["scores"].dtype == np.int64
        assert result["saturations"] == saturations and result["clamps"] == clamps
        assert np.array_equal(result["classes"], L.classify(taps[last], meta["output"]["kind"]))
        if with_taps:
            for name, tap in taps.items():
                assert result["taps"][name].dtype == np.int64, name
                assert np.array_equal(result["taps"][name], tap), name
    return model


def stage(model, name, taps=False):
    return next(s for s in model.plan(taps=taps).stages if s.name == name)


class TestAgainstReference:
    @pytest.mark.parametrize("name", LENETS)
    @pytest.mark.parametrize("weights", ["uniform", "extreme"])
    def test_lenet_shapes(self, name, weights):
        kwargs = dict(LENETS[name])
        meta, arrays = golden.random_qmodel(kwargs.pop("spec"), 3, weights=weights, **kwargs)
        model = check(meta, arrays, images_for(meta, 150, 4), batch_size=64)
        paths = model.plan().paths
        if weights == "extreme":
            return              # extreme biases pass 2^24: some layers run on int64
        assert all(path.startswith("float32") for path in paths.values()), paths
        if name == "lenet5":
            # ReLU then max pooling: the activation runs on the pooled values.
            assert paths["c1"] == paths["c3"] == "float32 (activation after max pooling)"
            assert model.plan(taps=True).paths["c1"] == "float32"

    @pytest.mark.parametrize("name", SPECS)
    @pytest.mark.parametrize("seed", range(3))
    def test_small_specs(self, name, seed):
        meta, arrays = build(name, seed)
        check(meta, arrays, images_for(meta, 37, seed), batch_size=5)

    def test_signed_activation_before_max_pooling(self):
        # activation "none" (signed): saturations below lo are counted on every value, not only
        # on the pooled maxima.
        spec = [{"kind": "conv", "out_channels": 3, "kernel": 3, "activation": "none",
                 "out_bits": 4},
                {"kind": "pool", "mode": "max", "size": 3},
                {"kind": "dense", "out_features": 3}]
        meta, arrays = golden.random_qmodel(spec, 5, height=11)
        model = check(meta, arrays, images_for(meta, 40, 1))
        assert model.plan().paths["conv0"] == "float32 (activation after max pooling)"
        assert stage(model, "conv0").layout.phase == 3
        counts = model.run(images_for(meta, 40, 1))["saturations"]
        assert counts["conv0"] > 0

    def test_rotated_table_when_the_extension_is_too_large(self, monkeypatch):
        monkeypatch.setattr(F, "EXT_LIMIT", 4)
        meta, arrays = build("lecun1998")
        model = check(meta, arrays, images_for(meta, 30, 2))
        act = stage(model, "s2").act
        assert act.ext is None and act.k == 0 and act.lut is not None

    def test_extended_table(self):
        meta, arrays = build("lecun1998")
        model = golden.IntegerModel(meta, arrays)
        for name in ("s2", "c5", "f6"):
            act = stage(model, name).act
            assert act.ext is not None and act.k > 0
            assert act.ext.size <= F.EXT_LIMIT

    def test_non_monotone_table_is_not_moved_after_pooling(self, monkeypatch):
        spec = [{"kind": "conv", "out_channels": 2, "kernel": 3, "activation": "tanh"},
                {"kind": "pool", "mode": "max", "size": 2},
                {"kind": "dense", "out_features": 3}]
        meta, arrays = golden.random_qmodel(spec, 2, height=10)
        table = arrays["conv0.lut"]
        arrays["conv0.lut"] = np.random.default_rng(0).permutation(table)
        rehash(meta, arrays)
        images = images_for(meta, 50, 3)
        model = check(meta, arrays, images)
        assert model.plan().paths["conv0"] == "float32"
        # The check above would catch it: pooling before this table gives other numbers.
        original = F.Requant.__init__

        def monotone(self, *args):
            original(self, *args)
            self.monotone = True

        monkeypatch.setattr(F.Requant, "__init__", monotone)
        wrong = golden.IntegerModel(meta, arrays)
        assert wrong.plan().paths["conv0"] == "float32 (activation after max pooling)"
        taps, *_ = reference(meta, arrays, images)
        assert not np.array_equal(wrong.run(images)["scores"], taps["dense2"])

    def test_wide_models_mix_paths(self):
        spec = [{"kind": "conv", "out_channels": 3, "kernel": 3, "weight_bits": 16},
                {"kind": "pool", "mode": "max", "size": 2},
                {"kind": "conv", "out_channels": 2, "kernel": 3, "activation": "tanh",
                 "lut_bits": 12},
                {"kind": "pool", "mode": "avg", "size": 2},
                {"kind": "dense", "out_features": 5, "activation": "none", "weight_bits": 16,
                 "out_bits": 16},
                {"kind": "dense", "out_features": 4}]
        for abits in (8, 16):
            meta, arrays = golden.random_qmodel(spec, 0, abits=abits, height=14)
            model = check(meta, arrays, images_for(meta, 40, abits))
            paths = model.plan().paths
            assert paths["conv0"].startswith("int64: output ")
            assert paths["dense4"].startswith("int64: output ")
            assert paths["pool1"] == paths["pool3"] == paths["dense5"] == "float32"
            assert paths["conv2"].startswith("int64" if abits == 16 else "float32")

    def test_input_format_beyond_float32(self):
        meta, arrays = build("relu_max")
        wide = {"bits": 26, "frac": 8, "signed": False}
        meta["input"]["format"] = dict(wide)
        first = meta["layers"][0]
        first["in_format"] = dict(wide)
        first["acc_bits"] += 26 - 8
        images = golden.random_images(meta, 20, 0)
        images[0] = (1 << 26) - 1
        model = check(meta, arrays, images)
        assert model.plan().paths["conv0"] == "int64: input codes reach beyond 2^24"

    def test_empty_and_uneven_batches(self):
        meta, arrays = build("lecun1998")
        model = golden.IntegerModel(meta, arrays)
        images = images_for(meta, 23, 0)
        full = model.run(images, taps=True, batch_size=23)
        for batch_size in (1, 4, 7, 22, 100):
            part = model.run(images, taps=True, batch_size=batch_size)
            assert np.array_equal(part["scores"], full["scores"])
            assert part["saturations"] == full["saturations"]
            for name, tap in full["taps"].items():
                assert np.array_equal(part["taps"][name], tap), (batch_size, name)
        empty = model.run(images[:0], taps=True)
        assert empty["scores"].shape == (0, 4)
        assert all(tap.shape[0] == 0 for tap in empty["taps"].values())

    def test_concurrent_runs(self):
        meta, arrays = build("avg_lut")
        model = golden.IntegerModel(meta, arrays)
        images = images_for(meta, 64, 9)
        expected = model.run(images)["scores"]
        results = []

        def work():
            results.append(model.run(images, batch_size=3)["scores"])

        threads = [threading.Thread(target=work) for _ in range(3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert len(results) == 3 and all(np.array_equal(r, expected) for r in results)


def edge_model(kind, weight_sum, bias, shift=1):
    """8x8 images into one 16-bit layer computing ``(±255 · weight_sum + bias)`` on white images.

    ``kind`` "dense": a final dense layer (scores = accumulators); "conv": an 8x8 conv with
    ReLU into a 24-bit format (requantized by ``shift``), then a final dense layer.
    """
    if kind == "dense":
        spec = [{"kind": "dense", "out_features": 2}]
    else:
        spec = [{"kind": "conv", "out_channels": 2, "kernel": 8, "activation": "relu",
                 "weight_frac": 0, "out_frac": 8 - shift, "out_bits": 24},
                {"kind": "dense", "out_features": 2}]
    meta, arrays = golden.random_qmodel(spec, 0, wbits=16, height=8)
    name = meta["layers"][0]["name"]
    row = np.full(64, weight_sum // 64, dtype=np.int64)
    row[: weight_sum % 64] += 1
    weight = np.stack([row, -row]).reshape(arrays[f"{name}.weight"].shape)
    arrays[f"{name}.weight"] = weight
    arrays[f"{name}.bias"] = np.array([bias, bias], dtype=np.int64)
    rehash(meta, arrays)
    return meta, arrays


def white(n=3):
    return np.full((n, 8, 8), 255, dtype=np.uint8)


class TestBoundEdge:
    S = 65793                   # 255 · 65793 = 2^24 - 1

    @pytest.mark.parametrize("bias, path", [(0, "float32"), (-1, "int64"), (1, "int64"),
                                            (2, "int64")])
    def test_final_scores(self, bias, path):
        meta, arrays = edge_model("dense", self.S, bias)
        images = np.concatenate([white(), golden.random_images(meta, 5, 0)])
        model = check(meta, arrays, images)
        assert model.plan().paths["dense0"].split(":")[0] == path
        assert model.run(white(1))["scores"].tolist() == [[255 * self.S + bias,
                                                           -255 * self.S + bias]]

    @pytest.mark.parametrize("bias, path", [(-1, "float32"), (-2, "int64"), (0, "int64"),
                                            (3, "int64")])
    def test_requantized(self, bias, path):
        # |bias + 1 (the rounding half of shift 1)| + 255·S: 2^24 - 1 fits, 2^24 does not.
        meta, arrays = edge_model("conv", self.S, bias)
        model = check(meta, arrays, np.concatenate([white(), golden.random_images(meta, 5, 0)]))
        assert model.plan().paths["conv0"].split(":")[0] == path
        tap = model.run(white(1), taps=True)["taps"]["conv0"]
        assert tap.ravel().tolist() == [(255 * self.S + bias + 1) >> 1, 0]

    @pytest.mark.parametrize("kind, bias, name", [("dense", 2, "dense0"), ("conv", 3, "conv0")])
    def test_float32_beyond_the_bound_would_be_wrong(self, monkeypatch, kind, bias, name):
        # One unit over: 2^24 + 1 (or (2^24 + 3)/2) is not a float32. The checks above pass
        # because the model falls back to int64; forced to float32 it gives other numbers.
        meta, arrays = edge_model(kind, self.S, bias)
        taps, *_ = reference(meta, arrays, white(1))
        monkeypatch.setattr(F, "F32_EXACT", 1 << 26)
        forced = golden.IntegerModel(meta, arrays)
        assert forced.plan().paths[name] == "float32"
        got = forced.run(white(1), taps=True)["taps"][name]
        assert not np.array_equal(got, taps[name])

    def test_extended_table_offset_counts_in_the_bound(self):
        # The extension offset K·2^s joins the constant: near the bound, the layer keeps its
        # exact float32 path with the rotated table (K = 0) instead.
        spec = [{"kind": "dense", "out_features": 2, "activation": "tanh", "weight_frac": 0,
                 "lut_frac": 0, "lut_bits": 12},
                {"kind": "dense", "out_features": 2}]
        meta, arrays = golden.random_qmodel(spec, 0, wbits=16, height=8)
        row = np.full(64, 1000, dtype=np.int64)
        arrays["dense0.weight"] = np.stack([row, -row])
        arrays["dense0.bias"] = np.zeros(2, dtype=np.int64)
        rehash(meta, arrays)
        images = np.concatenate([white(), golden.random_images(meta, 30, 0)])
        model = check(meta, arrays, images)
        act = stage(model, "dense0").act
        assert act.ext is None and act.k == 0       # K = 255·64000 would pass 2^24
        assert model.plan().paths["dense0"] == "float32"

    @pytest.mark.parametrize("over", [0, 1])
    def test_pooling_and_rbf_bounds(self, monkeypatch, over):
        # The inequalities themselves, at their edge: a lowered limit makes them reachable with
        # 8-bit codes (float32 stays exact either way, so only the path changes).
        spec = [{"kind": "conv", "out_channels": 2, "kernel": 3},
                {"kind": "pool", "mode": "avg", "size": 2},
                {"kind": "dense", "out_features": 6},
                {"kind": "rbf", "out_features": 3}]
        meta, arrays = golden.random_qmodel(spec, 1, height=10)
        x = 255                                              # 8-bit unsigned codes
        avg = 4 * x + 2                                      # window sum + rounding half
        centers = arrays["rbf3.centers"]
        rbf = centers.shape[1] * (x + int(np.abs(centers).max())) ** 2
        images = images_for(meta, 20, 0)
        for name, limit in (("pool1", avg), ("rbf3", rbf)):
            monkeypatch.setattr(F, "F32_EXACT", limit + over)
            model = check(meta, arrays, images)
            assert model.plan().paths[name].split(":")[0] == ("float32" if over else "int64")

    def test_every_float32_layer_satisfies_its_bound(self):
        """An independent restatement of the bound for every layer of many random models."""
        for seed, (name, wbits) in enumerate([(n, w) for n in SPECS for w in (8, 12, 14)]):
            meta, arrays = build(name, seed, wbits=wbits)
            model = golden.IntegerModel(meta, arrays)
            for s in model.plan().stages:
                act = getattr(s, "act", None)
                if not s.fast or act is None:
                    continue
                layer = s.layer
                lo, hi = L.format_range(layer.in_format)
                x = max(-lo, hi)
                w = layer.weight.reshape(layer.weight.shape[0], -1)
                if layer.kind == "subsample":
                    w = np.repeat(w, layer.size ** 2, axis=1)
                for o in range(w.shape[0]):
                    shift = int(layer.shift[o])
                    half = 1 << (shift - 1) if shift > 0 else 0
                    k = act.k << shift if shift >= 0 else 0
                    total = sum(abs(int(v)) for v in w[o]) * x + abs(int(layer.bias[o]) + half + k)
                    assert total < 1 << 24, (name, wbits, layer.name, o)


class TestLayout:
    @pytest.mark.parametrize("shape, phase, block", [((3, 4, 6), 2, 6), ((2, 6, 6), 3, 3),
                                                     ((5, 2, 8), 2, 4), ((4, 3, 5), 1, 1)])
    def test_round_trip(self, shape, phase, block):
        layout = F.Spatial(*shape, phase=phase, block=block)
        ref = np.random.default_rng(0).integers(-100, 100, size=(3, *shape))
        x = layout.from_reference(ref, 3)
        assert x.dtype == np.float32
        assert np.array_equal(layout.to_reference(x, 3), ref)
        c, h, w = shape
        # Memory order: rows, blocks of `block` columns, phases, then channels.
        view = x.reshape(3, h, w // block, phase, block // phase, c)
        for j in range(w):
            part = view[:, :, j // block, j % block % phase, j % block // phase, :]
            assert np.array_equal(part, ref[:, :, :, j].transpose(0, 2, 1))
        assert np.array_equal(np.sort(layout.order()), np.arange(c * h * w))

    @pytest.mark.parametrize("width, out_channels, phase, block", [
        (28, 6, 2, 14), (28, 6, 1, 14), (10, 16, 2, 10), (10, 16, 1, 5), (1, 120, 1, 1),
        (6, 4, 3, 6), (8, 200, 2, 2)])
    def test_block_width(self, width, out_channels, phase, block):
        assert ops.ConvStage._block(width, out_channels, phase) == block


class TestBlas:
    def test_run_restores(self):
        found = blas.controls()
        before = found[0]() if found else None
        meta, arrays = build("relu_max")
        golden.IntegerModel(meta, arrays).run(golden.random_images(meta, 20, 0), batch_size=2)
        assert (found[0]() if found else None) == before

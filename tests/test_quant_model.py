import pytest
import torch
from torch import nn

from core.config import load_config
from core.paths import SHIPPED_DIR
from quant.model import CheckpointError, build_model, load_checkpoint, save_checkpoint

PRESETS = ["lenet5", "lenet5-tanh", "lenet5-1998", "lenet5-bn-gap"]


@pytest.mark.parametrize("preset", PRESETS)
def test_shapes_follow_config(preset):
    config = load_config(preset)
    model = build_model(config)
    taps = {}
    images = torch.randint(0, 256, (3, config.input_size, config.input_size), dtype=torch.uint8)
    scores = model(images, taps=taps)
    assert scores.shape == (3, 10)
    for layer in config.layers:
        assert tuple(taps[layer.name].shape[1:]) in (layer.out_shape, (layer.out_features,))


def test_shipped_checkpoint_keeps_its_state_dict_keys():
    config = load_config("lenet5")
    model = load_checkpoint(config, SHIPPED_DIR / "lenet5.pt")
    assert list(model.state_dict()) == [
        "layers.0.conv.weight", "layers.0.conv.bias", "layers.2.conv.weight",
        "layers.2.conv.bias", "layers.4.fc.weight", "layers.4.fc.bias", "layers.5.fc.weight",
        "layers.5.fc.bias", "layers.6.fc.weight", "layers.6.fc.bias"]


def test_1998_keeps_its_state_dict_keys():
    keys = list(build_model(load_config("lenet5-1998")).state_dict())
    assert keys[2:4] == ["layers.1.coef", "layers.1.bias"]
    assert keys[-1] == "layers.6.centers"


def test_batchnorm_is_2d_after_a_conv_and_1d_after_a_dense():
    model = build_model(load_config("lenet5-bn-gap"))
    norms = [(type(m.bn), m.bn.num_features, m.bn.eps) for m in model.layers if hasattr(m, "bn")]
    assert norms == [(nn.BatchNorm2d, 6, 1e-5), (nn.BatchNorm2d, 16, 1e-5),
                     (nn.BatchNorm2d, 120, 1e-5), (nn.BatchNorm1d, 84, 1e-5)]


def test_gap_is_the_mean_of_each_map():
    config = load_config("lenet5-bn-gap")
    gap = build_model(config).layers[8]
    x = torch.arange(2 * 3 * 5 * 5, dtype=torch.float32).view(2, 3, 5, 5)
    assert torch.equal(gap(x), x.mean(dim=(2, 3)).view(2, 3, 1, 1))


def test_sparse_c3_uses_only_connected_pairs():
    config = load_config("lenet5-1998")
    c3 = build_model(config).layers[2]
    weight = c3.weight()
    nonzero_pairs = (weight.abs().sum(dim=(2, 3)) > 0).sum().item()
    assert nonzero_pairs == 60
    loss = c3(torch.randn(1, 6, 14, 14)).sum()
    loss.backward()
    grad_pairs = (c3.conv.weight.grad.abs().sum(dim=(2, 3)) > 0).sum().item()
    assert grad_pairs == 60


def test_rbf_scores_are_negative_distances():
    config = load_config("lenet5-1998")
    rbf = build_model(config).layers[-1]
    x = rbf.centers[3:4].clone()
    scores = rbf(x)
    assert scores[0, 3] == 0 and scores.argmax().item() == 3


def test_seeded_init_is_reproducible():
    config = load_config("lenet5")
    a, b = build_model(config), build_model(config)
    for pa, pb in zip(a.parameters(), b.parameters(), strict=True):
        assert torch.equal(pa, pb)


def test_checkpoint_roundtrip_and_errors(tmp_path):
    config = load_config("lenet5")
    model = build_model(config)
    path = tmp_path / "m.pt"
    save_checkpoint(model, config, path)
    loaded = load_checkpoint(config, path)
    assert torch.equal(loaded.layers[0].conv.weight, model.layers[0].conv.weight)
    with pytest.raises(CheckpointError, match="trained for preset 'lenet5', not 'lenet5-tanh'"):
        load_checkpoint(load_config("lenet5-tanh"), path)
    (tmp_path / "bad.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(config, tmp_path / "bad.pt")
    assert str(info.value) == (f"{tmp_path / 'bad.pt'} is corrupt (truncated, or not a PyTorch "
                               f"checkpoint); delete it and run `make checkpoint PRESET=lenet5` "
                               f"to restore the shipped checkpoint")
    with pytest.raises(CheckpointError, match="no checkpoint at"):
        load_checkpoint(config, tmp_path / "none.pt")


def test_checkpoint_refuses_pickled_code(tmp_path):
    import pickle

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))
    path = tmp_path / "evil.pt"
    torch.save({"state_dict": {}, "x": Evil()}, path, pickle_protocol=pickle.HIGHEST_PROTOCOL)
    with pytest.raises(CheckpointError, match=r"evil.pt is corrupt \(truncated, or not a PyTorch"):
        load_checkpoint(load_config("lenet5"), path)

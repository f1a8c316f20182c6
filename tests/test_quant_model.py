import pytest
import torch

from core.config import load_config
from quant.model import CheckpointError, build_model, load_checkpoint, save_checkpoint

PRESETS = ["lenet5", "lenet5-tanh", "lenet5-1998"]


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
    with pytest.raises(CheckpointError, match="is not a readable checkpoint.*make train"):
        load_checkpoint(config, tmp_path / "bad.pt")
    with pytest.raises(CheckpointError, match="no checkpoint at"):
        load_checkpoint(config, tmp_path / "none.pt")


def test_checkpoint_refuses_pickled_code(tmp_path):
    import pickle

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))
    path = tmp_path / "evil.pt"
    torch.save({"state_dict": {}, "x": Evil()}, path, pickle_protocol=pickle.HIGHEST_PROTOCOL)
    with pytest.raises(CheckpointError, match="is not a readable checkpoint"):
        load_checkpoint(load_config("lenet5"), path)

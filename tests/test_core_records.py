import json

import pytest

from core.config import load_config
from core.errors import UserError
from core.provenance import sha256_file, sha256_json
from core.records import (
    KNOWN_DATA,
    checkpoint_record,
    checkpoint_recorded,
    make_command,
    qmodel_changes,
    qmodel_record,
    quantize_options,
    require_current_qmodel,
    train_options,
)


@pytest.fixture
def config():
    return load_config("lenet5")


def test_options_keep_only_what_was_given():
    assert train_options() == {} and train_options(epochs=2) == {"epochs": 2}
    assert quantize_options() == {} and quantize_options(qat=False, per_channel=None) == {}
    assert quantize_options(4, None, True, True) == {"wbits": 4, "qat": True,
                                                     "per_channel": True}


def test_checkpoint_record(config):
    assert checkpoint_record(config, "d" * 64, {"limit": 5}) == {
        "config": config.weights_sha256, "data": "d" * 64, "options": sha256_json({"limit": 5})}
    assert checkpoint_recorded(config, {"provenance": {"config": "x"}}) == {"config": "x"}
    assert checkpoint_recorded(config, {"weights_sha256": config.weights_sha256}) == \
        checkpoint_record(config, KNOWN_DATA["mnist"])


def test_qmodel_changes_name_the_inputs(config, tmp_path):
    (tmp_path / "model.pt").write_bytes(b"weights")
    assert qmodel_changes(config, tmp_path, "d") == ["config", "options", "checkpoint", "data",
                                                     "generator"]
    record = qmodel_record(config, tmp_path / "model.pt", "d", {"wbits": 4})
    assert record["checkpoint"] == sha256_file(tmp_path / "model.pt")
    (tmp_path / "qmodel.json").write_text(json.dumps({"provenance": record}))
    (tmp_path / "qmodel.npz").write_bytes(b"")
    assert qmodel_changes(config, tmp_path, "d", {"wbits": 4}) == []
    (tmp_path / "model.pt").write_bytes(b"other weights")
    assert qmodel_changes(config, tmp_path, "e", {"wbits": 4}) == ["checkpoint", "data"]
    with pytest.raises(UserError) as info:
        require_current_qmodel(config, tmp_path, "e", {"wbits": 4})
    assert str(info.value) == (f"{tmp_path / 'qmodel.json'} was not made from these inputs "
                               f"(inputs changed: checkpoint, data); rebuild it with `make "
                               f"quantize PRESET=lenet5`")


def test_make_command(config, tmp_path):
    assert make_command("train", config) == "make train PRESET=lenet5"
    other = tmp_path / "x.toml"
    other.write_text(config.path.read_text())
    assert make_command("train", load_config(other)) == f"make train CONFIG={other}"

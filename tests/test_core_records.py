import io
import json
import os
import pickle
import subprocess
import sys
import zipfile

import pytest

from core.config import load_config
from core.errors import UserError
from core.paths import BUILD_DIR, ROOT, SHIPPED_DIR
from core.provenance import sha256_file, sha256_json
from core.records import (
    KNOWN_DATA,
    checkpoint_changes,
    checkpoint_record,
    checkpoint_recorded,
    make_command,
    qmodel_changes,
    qmodel_record,
    quantize_options,
    read_checkpoint_payload,
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
                               f"quantize PRESET=lenet5 OUT={tmp_path} WBITS=4`")


def test_make_command(config, tmp_path):
    assert make_command("train", config) == "make train PRESET=lenet5"
    other = tmp_path / "x.toml"
    other.write_text(config.path.read_text())
    assert make_command("train", load_config(other)) == f"make train CONFIG={other}"


def test_make_command_names_the_folder_and_the_options(config, tmp_path, monkeypatch):
    """A hint must work for the input it was given: the folder, the options, any path."""
    assert make_command("quantize", config, out=BUILD_DIR / "lenet5") == \
        "make quantize PRESET=lenet5"
    assert make_command("quantize", config, out=tmp_path / "q", options={
        "wbits": 4, "abits": 6, "qat": True}) == \
        f"make quantize PRESET=lenet5 OUT={tmp_path / 'q'} WBITS=4 ABITS=6 QAT=1"
    spaced = tmp_path / "my configs" / "it's.toml"
    spaced.parent.mkdir()
    spaced.write_text(config.path.read_text())
    assert make_command("train", load_config(spaced)) == \
        f"make train 'CONFIG={spaced.parent}/it'\"'\"'s.toml'"
    monkeypatch.chdir(tmp_path)                            # make runs in the checkout
    relative = load_config("my configs/it's.toml")
    assert make_command("checkpoint", relative, out="out") == \
        f"make checkpoint 'CONFIG={spaced.parent}/it'\"'\"'s.toml' OUT={tmp_path / 'out'}"
    monkeypatch.chdir(ROOT)
    assert make_command("train", load_config("configs/lenet5.toml")) == "make train PRESET=lenet5"


def _checkpoint_bytes(payload_text=None):
    """The shipped checkpoint, its pickled payload optionally replaced."""
    data = (SHIPPED_DIR / "lenet5.pt").read_bytes()
    if payload_text is None:
        return data
    source, target = zipfile.ZipFile(io.BytesIO(data)), io.BytesIO()
    with zipfile.ZipFile(target, "w") as archive:
        for info in source.infolist():
            body = source.read(info)
            if info.filename.endswith("/data.pkl"):
                body = payload_text
            archive.writestr(info, body)
    return target.getvalue()


def test_checkpoint_changes_reads_the_record_without_torch(config, tmp_path):
    mnist = KNOWN_DATA["mnist"]
    assert checkpoint_changes(config, tmp_path, mnist) is None           # no checkpoint
    (tmp_path / "model.pt").write_bytes(_checkpoint_bytes())
    payload = read_checkpoint_payload(tmp_path / "model.pt")
    assert payload["preset"] == "lenet5" and payload["weights_sha256"] == config.weights_sha256
    assert set(payload["state_dict"]) >= {"layers.0.conv.weight", "layers.0.conv.bias"}
    assert checkpoint_changes(config, tmp_path, mnist) == []
    assert checkpoint_changes(config, tmp_path, "d" * 64) == ["data"]
    assert checkpoint_changes(config, tmp_path, mnist, {"epochs": 1}) == ["options"]
    assert checkpoint_changes(load_config("lenet5-tanh"), tmp_path, mnist) is None
    data = _checkpoint_bytes()
    (tmp_path / "model.pt").write_bytes(data[:len(data) // 2])            # truncated
    assert checkpoint_changes(config, tmp_path, mnist) is None
    evil = pickle.dumps(os.system)                                        # not a checkpoint
    (tmp_path / "model.pt").write_bytes(_checkpoint_bytes(evil))
    assert read_checkpoint_payload(tmp_path / "model.pt") is None


def test_checkpoint_changes_never_imports_torch(tmp_path):
    (tmp_path / "model.pt").write_bytes(_checkpoint_bytes())
    code = ("import sys\nfrom core.config import load_config\n"
            "from core.records import KNOWN_DATA, checkpoint_changes\n"
            f"print(checkpoint_changes(load_config('lenet5'), {str(tmp_path)!r}, "
            "KNOWN_DATA['mnist']), 'torch' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                            text=True)
    assert result.stdout == "[] False\n", result.stderr

import dataclasses
import io
import json
import subprocess
import sys

import pytest
import torch

from core.config import load_config
from core.data import load_dataset
from core.errors import UserError
from core.records import checkpoint_changes, checkpoint_record, import_record
from quant.model import build_model, load_checkpoint, save_checkpoint
from quant.train import ensure_checkpoint, main, train, what_changed

ROOT = __import__("pathlib").Path(__file__).resolve().parent.parent


def run(*args):
    return subprocess.run([sys.executable, "-m", "quant.train", *args], cwd=ROOT,
                          capture_output=True, text=True)


@pytest.mark.train
def test_tiny_training_is_reproducible(tmp_path):
    outs = []
    for name in ("a", "b"):
        result = run("--config", "lenet5", "--out", str(tmp_path / name), "--epochs", "1",
                     "--limit", "512")
        assert result.returncode == 0, result.stderr
        report = json.loads((tmp_path / name / "reports" / "train.json").read_text())
        assert {"preset", "test_accuracy", "val_accuracy", "epochs", "seconds"} <= set(report)
        assert report["test_images"] == 10_000
        assert (tmp_path / name / "reports" / "train_curves.png").stat().st_size > 1000
        outs.append(report)
    assert outs[0]["test_accuracy"] == outs[1]["test_accuracy"]
    assert outs[0]["history"] == outs[1]["history"]


def test_bad_config_cli_is_one_line_and_overwrites_nothing(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text(load_config("lenet5").path.read_text().replace("kernel = 5", "kernel = 99", 1))
    out = tmp_path / "out"
    (out / "reports").mkdir(parents=True)
    sentinel = b"keep me"
    (out / "model.pt").write_bytes(sentinel)
    (out / "reports" / "train.json").write_bytes(sentinel)
    result = run("--config", str(bad), "--out", str(out))
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0, result.stderr
    assert "Traceback" not in result.stderr
    assert "layers[0].kernel=99 is out of range" in result.stderr
    assert (out / "model.pt").read_bytes() == sentinel
    assert (out / "reports" / "train.json").read_bytes() == sentinel


def test_corrupt_checkpoint_eval_is_one_line(tmp_path):
    (tmp_path / "model.pt").write_bytes(b"\x00garbage")
    result = run("--config", "lenet5", "--out", str(tmp_path), "--eval-only")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr == (f"error: {tmp_path / 'model.pt'} is corrupt (truncated, or not a "
                             f"PyTorch checkpoint); delete it and run `make checkpoint "
                             f"PRESET=lenet5 OUT={tmp_path}` to restore the shipped "
                             f"checkpoint\n")
    assert result.stderr.strip().count("\n") == 0


def test_missing_data_dir_is_one_line(tmp_path):
    result = run("--config", "lenet5", "--out", str(tmp_path), "--data-dir",
                 str(tmp_path / "nope"))
    assert result.returncode == 2 and "DATA_DIR=" in result.stderr
    assert result.stderr.strip().count("\n") == 0


def test_shipped_checkpoint_accuracy(tmp_path):
    result = run("--config", "lenet5", "--out", str(tmp_path), "--ensure")
    assert result.returncode == 0, result.stderr
    assert "using the shipped checkpoint" in result.stdout
    result = run("--config", "lenet5", "--out", str(tmp_path), "--eval-only")
    assert result.returncode == 0, result.stderr
    report = json.loads((tmp_path / "reports" / "train.json").read_text())
    assert report["test_accuracy"] >= 0.990


def test_openmp_waiters_sleep():
    """Spinning OpenMP waiters made training 25x slower on a busy 2-core machine."""
    code = "import os, quant.train, torch; print(os.environ['OMP_WAIT_POLICY'])"
    env = {k: v for k, v in __import__("os").environ.items() if k != "OMP_WAIT_POLICY"}
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                            text=True, env=env)
    assert result.stdout.strip() == "PASSIVE", result.stderr


def test_rbf_loss_sees_unsaturated_logits(monkeypatch):
    """Raw negative distances (spread of hundreds) saturated the softmax: training stalled at
    91% for lenet5-1998. The loss must see scores scaled by train.logit_scale."""
    import torch.nn.functional as F

    import quant.train as qt
    seen = []
    real = F.cross_entropy

    def spy(logits, labels):
        seen.append(logits.detach())
        return real(logits, labels)
    monkeypatch.setattr(qt.F, "cross_entropy", spy)
    config = load_config("lenet5-1998")
    qt.train(config, load_dataset("mnist"), epochs=1, limit=1024, log=lambda *a: None)
    last = seen[-1]
    spread = (last.max(dim=1).values - last.min(dim=1).values).median().item()
    assert 0.05 < spread < 2, spread  # unscaled distances: > 5 after the same 1,024 images


def _payload_with(provenance):
    payload = torch.load(ROOT / "checkpoints" / "lenet5.pt", map_location="cpu", weights_only=True)
    payload["provenance"] = provenance
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    return buffer.getvalue()


#: The default preset as a user copies it outside configs/, under another name.
P_EDIT = (ROOT / "configs" / "lenet5.toml").read_text().replace('name = "lenet5"',
                                                                 'name = "p-edit"')


def _main(capsys, *args):
    """Run ``python -m quant.train`` in this process (torch is imported once); return
    ``(exit status, stdout, stderr)``."""
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.train
def test_ensure_retrains_a_network_that_changed_and_says_what_changed(tmp_path, capsys):
    """A changed layer size stopped --ensure with "does not fit the network"; a checkpoint
    that fits is never retrained."""
    config, out = tmp_path / "p_edit.toml", tmp_path / "out"
    edited = P_EDIT.replace("out_features = 120", "out_features = 100")
    ensure = ("--config", config, "--out", out, "--ensure", "--epochs", 1, "--limit", 256)
    config.write_text(edited)
    out.mkdir()
    payload = torch.load(ROOT / "checkpoints" / "lenet5.pt", weights_only=True)
    expected = checkpoint_record(load_config(config), load_dataset("mnist").sha256,
                                 {"epochs": 1, "limit": 256})
    payload.update(preset="p-edit", provenance=expected)
    torch.save(payload, out / "model.pt")                 # the record fits, the weights do not
    assert not ensure_checkpoint(load_config(config), out, expected, {})
    assert capsys.readouterr().err == (f"retraining {out / 'model.pt'}: its weights do not fit "
                                       f"the network of p_edit.toml\n")
    (out / "model.pt").unlink()
    config.write_text(P_EDIT)
    code, _, err = _main(capsys, *ensure)
    assert (code, err) == (0, "")
    config.write_text(edited)
    code, _, err = _main(capsys, *ensure)
    assert (code, err) == (0, f"retraining {out / 'model.pt'}: f5: out_features 120 → 100\n")
    assert load_checkpoint(load_config(config), out / "model.pt")     # fits the new network
    trained = (out / "model.pt").read_bytes()
    assert _main(capsys, *ensure) == (0, "", "")
    assert (out / "model.pt").read_bytes() == trained


@pytest.mark.train
def test_the_shipped_checkpoint_serves_only_its_own_network(tmp_path, capsys):
    """A user config named lenet5 took the shipped checkpoint whatever its layers."""
    config, out = tmp_path / "mine.toml", tmp_path / "out"
    lenet5 = (ROOT / "configs" / "lenet5.toml").read_text()
    config.write_text(lenet5)
    assert _main(capsys, "--config", config, "--out", out, "--ensure") == (
        0, "lenet5: using the shipped checkpoint checkpoints/lenet5.pt\n", "")
    config.write_text(lenet5.replace("out_features = 120", "out_features = 100"))
    code, _, err = _main(capsys, "--config", config, "--out", out, "--ensure", "--epochs", 1,
                         "--limit", 256)
    assert (code, err) == (0, f"retraining {out / 'model.pt'}: f5: out_features 120 → 100, "
                              f"options none → --epochs 1 --limit 256\n")
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    expected = checkpoint_record(load_config(config), load_dataset("mnist").sha256)
    assert not ensure_checkpoint(load_config(config), fresh, expected, {
        "config": load_config(config).weights_description, "dataset": "mnist", "options": {}})
    assert capsys.readouterr().err == (
        f"training {fresh / 'model.pt'}: not the shipped checkpoints/lenet5.pt, which was "
        f"trained from other inputs (f5: out_features 120 → 100)\n")
    assert not (fresh / "model.pt").exists()


def test_what_changed_names_each_input():
    config = load_config("lenet5")
    new = {"config": config.weights_description, "dataset": "mnist", "options": {}}
    old = {"config": load_config("lenet5-tanh").weights_description, "dataset": "idx",
           "options": {"epochs": 2}}
    assert what_changed(["config", "data", "options"], old, new) == (
        "model.name 'lenet5-tanh' → 'lenet5', model.input_pad 0 → 2, c1: activation 'tanh' → "
        "'relu', c1: padding 2 → 0, s2: mode 'avg' → 'max', c3: activation 'tanh' → 'relu', "
        "s4: mode 'avg' → 'max', f5: activation 'tanh' → 'relu', f6: activation 'tanh' → "
        "'relu', data set idx → mnist, options --epochs 2 → none")
    assert what_changed(["config", "data"], {}, new) == "inputs changed: config, data"


def test_ensure_keeps_a_current_checkpoint_and_says_why_it_replaces_one(tmp_path):
    """A checkpoint is kept only when its recorded inputs match; replacing one names them."""
    config = load_config("lenet5")
    current = checkpoint_record(config, load_dataset("mnist").sha256)
    kept = _payload_with(current)
    (tmp_path / "model.pt").write_bytes(kept)
    result = run("--config", "lenet5", "--out", str(tmp_path), "--ensure")
    assert (result.returncode, result.stdout, result.stderr) == (0, "", "")
    assert (tmp_path / "model.pt").read_bytes() == kept
    (tmp_path / "model.pt").write_bytes(_payload_with(dict(current, options="0" * 64)))
    result = run("--config", "lenet5", "--out", str(tmp_path), "--ensure")
    assert result.returncode == 0, result.stderr
    assert result.stderr == (f"replacing {tmp_path / 'model.pt'} with the shipped "
                             f"checkpoints/lenet5.pt: inputs changed: options\n")
    assert result.stdout == "lenet5: using the shipped checkpoint checkpoints/lenet5.pt\n"
    shipped = (ROOT / "checkpoints" / "lenet5.pt").read_bytes()
    assert (tmp_path / "model.pt").read_bytes() == shipped


def test_checkpoint_record_of_the_shipped_checkpoint():
    """The shipped checkpoint has no record: it reads as trained on MNIST with no overrides."""
    config = load_config("lenet5")
    model = load_checkpoint(config, ROOT / "checkpoints" / "lenet5.pt")
    assert model.checkpoint_provenance == checkpoint_record(config, load_dataset("mnist").sha256)


def test_train_rejects_non_positive_epochs_in_the_api():
    with pytest.raises(UserError, match=r"^train: epochs=0 and limit=None must be positive$"):
        train(load_config("lenet5"), None, epochs=0)


def test_an_imported_checkpoint_is_current_for_its_network_whatever_the_data(tmp_path):
    config = load_config("lenet5-keras-relu")
    record = import_record(config, "a" * 64, "onnx", {"scale": 255.0})
    save_checkpoint(build_model(config), config, tmp_path / "model.pt", record)
    assert checkpoint_changes(config, tmp_path, "d" * 64, {"epochs": 1}) == []
    edited = dataclasses.replace(config, raw={**config.raw, "train": {"epochs": 1}})
    assert checkpoint_changes(edited, tmp_path, "d" * 64) == ["config"]

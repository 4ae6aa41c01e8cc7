"""Tests for the embedded 8x8 digits dataset."""

from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
import pytest
import torch

from pyro_dvae.data import load_digits
from pyro_dvae.data.digits import DIGITS_NPZ, DIGITS_SPLIT, read_digits_npz


@pytest.fixture(scope="module")
def digits():
    return load_digits()


@pytest.fixture(scope="module")
def raw():
    return read_digits_npz()


def test_npz_is_packaged_and_well_formed(raw):
    assert DIGITS_NPZ.is_file() and DIGITS_NPZ.parent.name == "data"
    images, labels = raw
    assert images.shape == (1797, 64) and images.dtype == np.uint8
    assert labels.shape == (1797,) and labels.dtype == np.uint8
    assert images.min() == 0 and images.max() == 16
    assert np.array_equal(np.unique(labels), np.arange(10))


def test_npz_matches_scikit_learn(raw):
    sk = pytest.importorskip("sklearn.datasets")
    bunch = sk.load_digits()
    assert np.array_equal(raw[0], bunch.data.astype(np.uint8))
    assert np.array_equal(raw[1], bunch.target)


def test_shapes_and_types(digits):
    assert digits.name == "digits"
    assert DIGITS_SPLIT == (1397, 200, 200)
    assert digits.train.shape == (1397, 64)
    assert digits.valid.shape == (200, 64)
    assert digits.test.shape == (200, 64)
    assert digits.image_shape == (8, 8)
    for split in ("train", "valid", "test"):
        x, y = getattr(digits, split), getattr(digits, f"{split}_labels")
        assert x.dtype == torch.float32
        assert y.dtype == torch.int64 and y.shape == (x.shape[0],)
        assert int(y.min()) >= 0 and int(y.max()) <= 9
    assert "BSD-3" in digits.description and "UCI" in digits.description


def test_values_are_binary(digits):
    for x in (digits.train, digits.valid, digits.test):
        assert bool(((x == 0) | (x == 1)).all())


def test_deterministic(digits):
    again = load_digits()
    for field in ("train", "valid", "test", "train_labels", "valid_labels", "test_labels"):
        assert torch.equal(getattr(again, field), getattr(digits, field))


def test_matches_documented_procedure(digits, raw):
    images, labels = raw
    rng = np.random.default_rng(0)
    binary = (rng.random(images.shape) < images / 16).astype(np.float32)
    perm = rng.permutation(len(images))
    all_x = torch.cat([digits.train, digits.valid, digits.test])
    all_y = torch.cat([digits.train_labels, digits.valid_labels, digits.test_labels])
    assert torch.equal(all_x, torch.from_numpy(binary[perm]))
    assert torch.equal(all_y, torch.from_numpy(labels[perm].astype(np.int64)))


def test_splits_are_a_permutation_of_all_labels(digits, raw):
    all_y = torch.cat([digits.train_labels, digits.valid_labels, digits.test_labels]).numpy()
    assert np.array_equal(np.bincount(all_y, minlength=10), np.bincount(raw[1], minlength=10))
    # the split is shuffled: the test split is not just the last 200 original images
    assert not np.array_equal(digits.test_labels.numpy(), raw[1][-200:])


def test_binarization_follows_intensities(digits, raw):
    images, _ = raw
    p = images / 16.0
    all_x = torch.cat([digits.train, digits.valid, digits.test]).numpy()
    # the permutation hides the row order; per-pixel means are permutation invariant
    pixel_means, pixel_p = all_x.mean(0), p.mean(0)
    assert np.corrcoef(pixel_means, pixel_p)[0, 1] > 0.99
    # binomial std of a mean of 1797 Bernoullis is <= 0.0118; allow 5 sigma
    assert np.abs(pixel_means - pixel_p).max() < 0.06
    # pixels with intensity 0 are always off, with intensity 16 always on (any permutation)
    assert all_x.sum() == pytest.approx(p.sum(), rel=0.01)
    assert all_x.sum() >= (images == 16).sum()
    assert all_x.sum() <= (images > 0).sum()


def test_product_does_not_import_scikit_learn():
    """scikit-learn is only needed by scripts/make_digits_npz.py, never by the package."""
    package = Path(__file__).resolve().parents[2] / "pyro_dvae"
    for source in package.rglob("*.py"):
        for node in ast.walk(ast.parse(source.read_text(), filename=str(source))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            else:
                continue
            assert not any(n.split(".")[0] == "sklearn" for n in names), source

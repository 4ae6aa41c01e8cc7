"""The embedded default dataset: 8x8 handwritten digits, stochastically binarized.

Origin and licence: the images are the test set of the UCI Machine Learning Repository's
"Optical Recognition of Handwritten Digits" data (Alpaydin & Kaynak, 1998), as shipped by
scikit-learn (``sklearn.datasets.load_digits``, BSD-3-Clause). They were extracted once into
``digits.npz`` next to this module (uint8 ``images`` of shape ``(1797, 64)`` with intensities
0..16 and uint8 ``labels``) by ``scripts/make_digits_npz.py``, so this package never needs
scikit-learn.

The binarization is part of the dataset, not of a run: it is drawn once with
``np.random.default_rng(0)`` (pixel ~ Bernoulli(intensity / 16)), and the same generator then
draws a permutation that splits the 1797 images into 1397 train / 200 valid / 200 test.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ..errors import DVAEInputError
from .dataset import BinaryDataset

__all__ = ["DIGITS_NPZ", "DIGITS_SPLIT", "load_digits", "read_digits_npz"]

DIGITS_NPZ = Path(__file__).with_name("digits.npz")
DIGITS_SPLIT = (1397, 200, 200)  # train / valid / test sizes
_MAX_INTENSITY = 16
_SEED = 0


def read_digits_npz(path: str | Path = DIGITS_NPZ) -> tuple[np.ndarray, np.ndarray]:
    """Return the raw ``(images, labels)``: uint8 ``(1797, 64)`` intensities 0..16, uint8 labels.

    Example:
        >>> images, labels = read_digits_npz()
        >>> images.shape, int(images.max()), sorted(set(labels.tolist())) == list(range(10))
        ((1797, 64), 16, True)
    """
    path = Path(path)
    if not path.is_file():
        raise DVAEInputError(
            f"embedded digits file '{path}' is missing; reinstall pyro-dvae or regenerate it with "
            "scripts/make_digits_npz.py"
        )
    with np.load(path) as f:
        images, labels = f["images"], f["labels"]
    return images, labels


def load_digits() -> BinaryDataset:
    """Load the embedded 8x8 digits, binarized and split 1397 / 200 / 200 (fully fixed).

    Example:
        >>> ds = load_digits()
        >>> ds.train.shape, ds.valid.shape, ds.test.shape, ds.image_shape
        (torch.Size([1397, 64]), torch.Size([200, 64]), torch.Size([200, 64]), (8, 8))
    """
    images, labels = read_digits_npz()
    rng = np.random.default_rng(_SEED)
    binary = rng.random(images.shape) < images / _MAX_INTENSITY
    perm = rng.permutation(len(images))
    x = torch.from_numpy(binary[perm].astype(np.float32))
    y = torch.from_numpy(labels[perm].astype(np.int64))
    a, b = DIGITS_SPLIT[0], DIGITS_SPLIT[0] + DIGITS_SPLIT[1]
    return BinaryDataset(
        name="digits",
        train=x[:a].clone(),
        valid=x[a:b].clone(),
        test=x[b:].clone(),
        train_labels=y[:a].clone(),
        valid_labels=y[a:b].clone(),
        test_labels=y[b:].clone(),
        image_shape=(8, 8),
        description=(
            "8x8 handwritten digits (UCI Optical Recognition of Handwritten Digits, via "
            "scikit-learn, BSD-3), fixed stochastic binarization, 1397/200/200 split"
        ),
    )

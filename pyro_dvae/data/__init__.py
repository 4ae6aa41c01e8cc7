"""Binary datasets: embedded 8x8 digits, MNIST from IDX files, and exact synthetic data.

Example:
    >>> from pyro_dvae.data import load_dataset
    >>> ds = load_dataset("digits")
    >>> ds.name, ds.data_dim, ds.num_train
    ('digits', 64, 1397)
"""

from __future__ import annotations

from pathlib import Path

from ..errors import DVAEInputError
from .augment import random_translate
from .dataset import BinaryDataset, validate_data
from .digits import load_digits
from .mnist import load_mnist, read_idx
from .synthetic import SyntheticModel, make_synthetic

__all__ = [
    "DATASET_NAMES",
    "BinaryDataset",
    "SyntheticModel",
    "load_dataset",
    "load_digits",
    "load_mnist",
    "make_synthetic",
    "random_translate",
    "read_idx",
    "validate_data",
]

DATASET_NAMES = ("digits", "mnist", "synthetic")


def load_dataset(
    name: str, data_dir: str | Path | None = None, binarize: bool = True
) -> BinaryDataset:
    """Load a dataset by name: ``"digits"`` (embedded), ``"mnist"`` (needs ``data_dir``) or
    ``"synthetic"`` (default :func:`make_synthetic`). ``data_dir`` is ignored except for MNIST;
    ``binarize=False`` keeps MNIST's grey levels in ``[0, 1]`` (the other datasets are binary).

    Example:
        >>> load_dataset("synthetic").true_model is not None
        True
        >>> load_dataset("cifar")
        Traceback (most recent call last):
        ...
        pyro_dvae.errors.DVAEInputError: unknown dataset 'cifar'; choose one of digits, mnist, \
synthetic
    """
    key = str(name).strip().lower()
    if not binarize and key != "mnist":
        raise DVAEInputError(
            f"binarize=False keeps MNIST's grey levels, but dataset {name!r} is binary; pass "
            "binarize=True or use mnist"
        )
    if key == "digits":
        return load_digits()
    if key == "synthetic":
        return make_synthetic()
    if key == "mnist":
        if data_dir is None or str(data_dir).strip() == "":
            raise DVAEInputError(
                "--dataset mnist needs --data-dir DIR holding the IDX files "
                "(train-images-idx3-ubyte[.gz], train-labels-idx1-ubyte[.gz], "
                "t10k-images-idx3-ubyte[.gz], t10k-labels-idx1-ubyte[.gz])"
            )
        return load_mnist(data_dir, binarize=binarize)
    raise DVAEInputError(f"unknown dataset {name!r}; choose one of {', '.join(DATASET_NAMES)}")

"""The :class:`BinaryDataset` container and :func:`validate_data`, the input check for data."""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import TYPE_CHECKING

import torch

from ..errors import DVAEInputError

if TYPE_CHECKING:
    from .synthetic import SyntheticModel

__all__ = ["BinaryDataset", "validate_data"]

_SPLITS = ("train", "valid", "test")


@dataclass
class BinaryDataset:
    """Binary data split into train / valid / test, with optional labels.

    ``train``, ``valid`` and ``test`` are ``(n, D)`` float32 tensors with values in ``{0., 1.}``.
    Labels, when present, are int64 tensors with one entry per row. ``image_shape`` is the
    ``(height, width)`` of a datum when it is an image (``(8, 8)`` digits, ``(28, 28)`` MNIST),
    ``None`` otherwise. ``true_model`` is the generating model when it is known exactly (the
    synthetic dataset, see :func:`pyro_dvae.data.make_synthetic`), else ``None``.

    Example:
        >>> x = torch.tensor([[0.0, 1.0], [1.0, 1.0]])
        >>> ds = BinaryDataset("toy", train=x, valid=x[:1], test=x[1:])
        >>> ds.data_dim, ds.num_train
        (2, 2)
    """

    name: str
    train: torch.Tensor
    valid: torch.Tensor
    test: torch.Tensor
    train_labels: torch.Tensor | None = None
    valid_labels: torch.Tensor | None = None
    test_labels: torch.Tensor | None = None
    image_shape: tuple[int, int] | None = None
    description: str = ""
    true_model: SyntheticModel | None = None

    def __post_init__(self) -> None:
        widths = set()
        for split in _SPLITS:
            x = getattr(self, split)
            if not isinstance(x, torch.Tensor) or x.dim() != 2:
                shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
                raise DVAEInputError(
                    f"dataset {self.name!r}: {split} must be a 2-D tensor (num_data, "
                    f"num_features), got {shape}; flatten each datum, e.g. x.reshape(len(x), -1)"
                )
            widths.add(x.shape[1])
            labels = getattr(self, f"{split}_labels")
            if labels is not None and (labels.dim() != 1 or labels.shape[0] != x.shape[0]):
                raise DVAEInputError(
                    f"dataset {self.name!r}: {split}_labels has shape {tuple(labels.shape)} but "
                    f"{split} has {x.shape[0]} rows; pass one label per row or None"
                )
        if len(widths) != 1:
            raise DVAEInputError(
                f"dataset {self.name!r}: train/valid/test have different numbers of features "
                f"{sorted(widths)}; all splits must have the same width"
            )
        if self.image_shape is not None:
            h, w = self.image_shape
            if h * w != self.data_dim:
                raise DVAEInputError(
                    f"dataset {self.name!r}: image_shape {tuple(self.image_shape)} has {h * w} "
                    f"pixels but data have {self.data_dim} features; fix image_shape or use None"
                )

    @property
    def data_dim(self) -> int:
        """Number of features ``D`` per datum."""
        return int(self.train.shape[1])

    @property
    def num_train(self) -> int:
        """Number of training rows."""
        return int(self.train.shape[0])

    @property
    def num_valid(self) -> int:
        """Number of validation rows."""
        return int(self.valid.shape[0])

    @property
    def num_test(self) -> int:
        """Number of test rows."""
        return int(self.test.shape[0])

    @property
    def true_test_log_likelihood(self) -> float | None:
        """Exact mean test ``log p(x)`` in nats/datum under ``true_model``; ``None`` if unknown.

        Example:
            >>> from pyro_dvae.data import make_synthetic
            >>> ds = make_synthetic(num_train=10, num_valid=5, num_test=5)
            >>> ds.true_test_log_likelihood < 0
            True
        """
        if self.true_model is None:
            return None
        return float(self.true_model.log_likelihood(self.test).mean())

    def to(self, device: torch.device | str) -> BinaryDataset:
        """Return a copy whose tensors (and ``true_model``) live on ``device``.

        Example:
            >>> x = torch.zeros(3, 2)
            >>> BinaryDataset("toy", x, x, x).to("cpu").train.device.type
            'cpu'
        """
        moved = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, torch.Tensor) or (f.name == "true_model" and value is not None):
                moved[f.name] = value.to(device)
        return replace(self, **moved)


def validate_data(
    x: torch.Tensor,
    *,
    likelihood: str = "bernoulli",
    data_dim: int | None = None,
    name: str = "data",
) -> None:
    """Raise :class:`~pyro_dvae.errors.DVAEInputError` unless ``x`` is usable data.

    Checks that ``x`` is a non-empty 2-D real tensor, that it has ``data_dim`` columns (when
    given), that all values are finite and, for ``likelihood="bernoulli"``, that every value is
    0 or 1. Other likelihood names skip the binary check.

    Example:
        >>> validate_data(torch.tensor([[0.0, 1.0]]), data_dim=2)
        >>> validate_data(torch.tensor([[0.0, 0.5]]))
        Traceback (most recent call last):
        ...
        pyro_dvae.errors.DVAEInputError: data has 1 value(s) that are not 0 or 1 (e.g. 0.5) but \
the Bernoulli likelihood needs binary data; binarize it, e.g. (x > 0.5).float()
    """
    if not isinstance(x, torch.Tensor):
        raise DVAEInputError(
            f"{name} must be a torch.Tensor, got {type(x).__name__}; "
            "convert it with torch.as_tensor(x, dtype=torch.float32)"
        )
    if x.dim() != 2:
        raise DVAEInputError(
            f"{name} must be a 2-D tensor (num_data, num_features), got shape {tuple(x.shape)}; "
            "flatten each datum, e.g. x.reshape(len(x), -1)"
        )
    if x.is_complex():
        raise DVAEInputError(f"{name} has complex dtype {x.dtype}; pass real-valued data")
    if x.shape[0] == 0:
        raise DVAEInputError(f"{name} is empty (0 rows); pass at least one datum")
    if data_dim is not None and x.shape[1] != data_dim:
        raise DVAEInputError(
            f"model expects {data_dim} features per datum, {name} has {x.shape[1]}; "
            f"use data with {data_dim} features or build the model with data_dim={x.shape[1]}"
        )
    if x.is_floating_point():
        finite = torch.isfinite(x)
        if not bool(finite.all()):
            n_nan = int(torch.isnan(x).sum())
            n_inf = int(torch.isinf(x).sum())
            raise DVAEInputError(
                f"{name} contains {n_nan} NaN and {n_inf} infinite value(s); "
                "remove or impute them before training"
            )
    if likelihood == "bernoulli":
        bad = (x != 0) & (x != 1)
        n_bad = int(bad.sum())
        if n_bad:
            example = x[bad][0].item()
            raise DVAEInputError(
                f"{name} has {n_bad} value(s) that are not 0 or 1 (e.g. {example:g}) but the "
                "Bernoulli likelihood needs binary data; binarize it, e.g. (x > 0.5).float()"
            )

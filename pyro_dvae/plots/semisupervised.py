"""Figures of a semi-supervised run: test accuracy per epoch, the confusion matrix, and samples
of each class with the style varied."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from matplotlib.figure import Figure

from ._common import save
from .images import montage

__all__ = ["plot_accuracy_curve", "plot_class_samples", "plot_confusion_matrix"]


def plot_accuracy_curve(
    history: Sequence[dict[str, float]], path: str | os.PathLike | None = None
) -> Figure:
    """Test accuracy against epoch, from the rows of a run's ``history``.

    Example:
        >>> fig = plot_accuracy_curve([{"epoch": 1, "test_accuracy": 0.5},
        ...                            {"epoch": 2, "test_accuracy": 0.7}])
        >>> fig.axes[0].get_ylabel()
        'test accuracy (%)'
    """
    fig = Figure(figsize=(5, 3.2))
    ax = fig.subplots()
    epochs = [h["epoch"] for h in history]
    accuracy = [100 * h["test_accuracy"] for h in history]
    ax.plot(epochs, accuracy, marker="o" if len(epochs) < 30 else None)
    ax.set_xlabel("epoch")
    ax.set_ylabel("test accuracy (%)")
    ax.grid(alpha=0.3)
    return save(fig, path)


def plot_confusion_matrix(matrix: Any, path: str | os.PathLike | None = None) -> Figure:
    """Row-normalized confusion matrix (rows: true class, columns: predicted), counts inside.

    Example:
        >>> plot_confusion_matrix([[3, 1], [0, 4]]).axes[0].get_xlabel()
        'predicted class'
    """
    counts = np.asarray(matrix, dtype=float)
    rates = counts / np.maximum(counts.sum(1, keepdims=True), 1)
    k = len(counts)
    fig = Figure(figsize=(0.45 * k + 2, 0.45 * k + 1.5))
    ax = fig.subplots()
    image = ax.imshow(rates, vmin=0, vmax=1, cmap="Blues")
    for i in range(k):
        for j in range(k):
            if counts[i, j]:
                color = "white" if rates[i, j] > 0.6 else "black"
                ax.text(j, i, f"{int(counts[i, j])}", ha="center", va="center", fontsize=7,
                        color=color)  # fmt: skip
    ax.set_xticks(range(k))
    ax.set_yticks(range(k))
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    fig.colorbar(image, ax=ax, fraction=0.046, label="fraction of the true class")
    return save(fig, path)


def plot_class_samples(
    model: Any,
    image_shape: tuple[int, int],
    per_class: int = 8,
    seed: int = 0,
    path: str | os.PathLike | None = None,
) -> Figure:
    """One row per class, one column per style: pixel means of p(x | y, z) with the same
    z ~ N(0, I) down each column, so a column shows one style written as every class.

    ``model`` is a :class:`~pyro_dvae.models.SemiSupervisedVAE` (``decoder_logits(y, z)``).
    """
    g = torch.Generator().manual_seed(seed)
    k = model.classes
    z = torch.randn(per_class, model.z_dim, generator=g)
    y = torch.eye(k)
    with torch.no_grad():
        logits = model.decoder_logits(y[:, None].expand(k, per_class, k), z.expand(k, -1, -1))
    images = torch.sigmoid(logits).reshape(k * per_class, *image_shape).numpy()
    grid = montage(images, image_shape, ncols=per_class)
    fig = Figure(figsize=(per_class * 0.6 + 0.6, k * 0.6 + 0.4))
    ax = fig.subplots()
    ax.imshow(grid, cmap="gray", vmin=0, vmax=1)
    ax.set_yticks([(i + 0.5) * (image_shape[0] + 1) for i in range(k)])
    ax.set_yticklabels([str(i) for i in range(k)])
    ax.set_xticks([])
    ax.set_ylabel("class y")
    ax.set_xlabel("style z ~ N(0, I), shared down each column")
    return save(fig, path)

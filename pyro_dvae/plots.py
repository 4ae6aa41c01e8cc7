"""Matplotlib figures for training runs: loss curves, reconstructions and prior samples.

Every function returns a :class:`matplotlib.figure.Figure` and, when ``path`` is given, also
saves it as a PNG. The non-interactive ``Agg`` backend is used, so no display is needed.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

__all__ = ["plot_prior_samples", "plot_reconstructions", "plot_training_curve"]


def _to_numpy(x: Any) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    return np.asarray(x, dtype=np.float64)


def _limits(*arrays: np.ndarray) -> dict[str, float | None]:
    """Fix the colour scale to [0, 1] for probabilities, else let matplotlib choose."""
    inside = all(a.size == 0 or (a.min() >= 0.0 and a.max() <= 1.0) for a in arrays)
    return {"vmin": 0.0, "vmax": 1.0} if inside else {"vmin": None, "vmax": None}


def _save(fig: Figure, path: str | os.PathLike | None) -> Figure:
    if path is not None:
        fig.savefig(path, dpi=100, bbox_inches="tight")
    return fig


def _smooth(values: np.ndarray, window: int) -> np.ndarray:
    if window <= 1 or values.size < window:
        return values
    kernel = np.ones(window) / window
    return np.convolve(values, kernel, mode="valid")


def plot_training_curve(
    history: Mapping[str, Sequence[float]], path: str | os.PathLike | None = None
) -> Figure:
    """Plot the training loss per step and the validation negative ELBO per epoch.

    ``history`` holds ``"loss"`` (per-datum training loss in nats, one per step) and optionally
    ``"valid_step"`` / ``"valid_nelbo"`` (per-epoch validation -ELBO in nats) and ``"tau"``
    (the relaxation temperature per step, drawn on a second axis).

    Example:
        >>> fig = plot_training_curve({"loss": [90.0, 80.0, 75.0], "tau": [1.0, 0.9, 0.8]})
        >>> fig.axes[0].get_ylabel()
        'loss (nats / datum)'
    """
    loss = _to_numpy(history.get("loss", []))
    fig, ax = plt.subplots(figsize=(7, 4))
    steps = np.arange(1, loss.size + 1)
    if loss.size:
        ax.plot(steps, loss, color="tab:blue", alpha=0.3, lw=0.8, label="train loss (per step)")
        window = max(1, loss.size // 50)
        if window > 1:
            smooth = _smooth(loss, window)
            ax.plot(steps[window - 1 :], smooth, color="tab:blue", lw=1.5, label="train (avg)")
    valid = _to_numpy(history.get("valid_nelbo", []))
    if valid.size:
        valid_steps = _to_numpy(history.get("valid_step", np.arange(1, valid.size + 1)))
        ax.plot(valid_steps, valid, "o-", color="tab:orange", label="valid -ELBO (per epoch)")
    finite = np.concatenate([loss[np.isfinite(loss)], valid[np.isfinite(valid)]])
    if finite.size > 4:  # clip the first few huge losses so the curve stays readable
        lo, hi = np.percentile(finite, [0, 98])
        pad = 0.05 * (hi - lo + 1e-9)
        ax.set_ylim(lo - pad, hi + pad)
    ax.set_xlabel("training step")
    ax.set_ylabel("loss (nats / datum)")
    ax.set_title("Training curve: negative ELBO")
    ax.grid(True, alpha=0.3)
    tau = _to_numpy(history.get("tau", []))
    handles, labels = ax.get_legend_handles_labels()
    if tau.size and np.ptp(tau) > 0:
        ax2 = ax.twinx()
        ax2.plot(np.arange(1, tau.size + 1), tau, color="tab:green", lw=1, ls="--")
        ax2.set_ylabel("temperature τ", color="tab:green")
        handles += ax2.get_lines()
        labels += ["temperature τ"]
    if handles:
        ax.legend(handles, labels, loc="upper right", fontsize="small")
    fig.tight_layout()
    return _save(fig, path)


def _image_grid(axes_row: Sequence[Any], images: np.ndarray, image_shape) -> None:
    limits = _limits(images)
    for ax, img in zip(axes_row, images):
        ax.imshow(img.reshape(image_shape), cmap="gray", **limits)
        ax.set_xticks([])
        ax.set_yticks([])


def plot_reconstructions(
    x: Any,
    x_rec: Any,
    image_shape: tuple[int, int] | None,
    path: str | os.PathLike | None = None,
    max_items: int = 10,
) -> Figure:
    """Show data (top) above their reconstructions (bottom).

    ``x`` and ``x_rec`` have shape ``(n, D)``; with ``image_shape`` ``None`` both are drawn as
    heatmap rows (one row per datum).

    Example:
        >>> import numpy as np
        >>> x = np.random.rand(4, 64)
        >>> fig = plot_reconstructions(x, x, (8, 8))
        >>> len(fig.axes)
        8
    """
    x = _to_numpy(x)[:max_items]
    x_rec = _to_numpy(x_rec)[:max_items]
    n = x.shape[0]
    if image_shape is None:
        fig, axes = plt.subplots(1, 2, figsize=(9, 1 + 0.35 * n), squeeze=False)
        for ax, data, title in zip(axes[0], (x, x_rec), ("data", "reconstruction")):
            im = ax.imshow(data, aspect="auto", cmap="viridis", **_limits(x, x_rec))
            ax.set_title(title)
            ax.set_xlabel("dimension")
            ax.set_ylabel("datum")
        fig.colorbar(im, ax=axes[0].tolist(), label="value / probability")
        fig.suptitle("Data vs reconstructions (mean of p(x|z), z = mode of q(z|x))")
        return _save(fig, path)
    fig, axes = plt.subplots(2, n, figsize=(1.2 * n, 2.8), squeeze=False)
    _image_grid(axes[0], x, image_shape)
    _image_grid(axes[1], x_rec, image_shape)
    axes[0][0].set_ylabel("data")
    axes[1][0].set_ylabel("recon.")
    fig.suptitle("Test data (top) and reconstructions (bottom)")
    fig.tight_layout()
    return _save(fig, path)


def plot_prior_samples(
    samples: Any,
    image_shape: tuple[int, int] | None,
    path: str | os.PathLike | None = None,
    ncols: int = 8,
) -> Figure:
    """Show decoded prior samples (means of p(x|z), z ~ p(z)) as an image grid or heatmap rows.

    Example:
        >>> import numpy as np
        >>> fig = plot_prior_samples(np.random.rand(5, 12), None)
        >>> fig.axes[0].get_xlabel()
        'dimension'
    """
    samples = _to_numpy(samples)
    n = samples.shape[0]
    if image_shape is None:
        fig, ax = plt.subplots(figsize=(8, 1 + 0.35 * n))
        im = ax.imshow(samples, aspect="auto", cmap="viridis", **_limits(samples))
        ax.set_xlabel("dimension")
        ax.set_ylabel("sample")
        fig.colorbar(im, ax=ax, label="mean of p(x|z)")
        ax.set_title("Samples from the prior (decoded means)")
        return _save(fig, path)
    ncols = max(1, min(ncols, n))
    nrows = max(1, -(-n // ncols))
    fig, axes = plt.subplots(nrows, ncols, figsize=(1.2 * ncols, 1.2 * nrows + 0.5), squeeze=False)
    flat = axes.ravel()
    _image_grid(flat, samples, image_shape)
    for ax in flat[n:]:
        ax.axis("off")
    fig.suptitle("Samples from the prior (decoded means)")
    fig.tight_layout()
    return _save(fig, path)

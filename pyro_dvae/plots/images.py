"""Image figures: data vs reconstructions, prior samples, latent traversals."""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from ._common import Figure, plt, save, to_numpy, unit_limits

__all__ = [
    "montage",
    "plot_latent_traversals",
    "plot_prior_samples",
    "plot_reconstructions",
]


def montage(images: np.ndarray, image_shape: tuple[int, int], ncols: int, pad: int = 1):
    """Tile ``(n, D)`` images into one 2-D array, ``ncols`` per row, NaN between tiles.

    One ``imshow`` of the result draws a whole grid (much faster than one axes per image).

    Example:
        >>> montage(np.zeros((3, 4)), (2, 2), ncols=2).shape
        (5, 5)
    """
    h, w = image_shape
    n = images.shape[0]
    ncols = max(1, min(ncols, n))
    nrows = -(-n // ncols)
    out = np.full((nrows * (h + pad) - pad, ncols * (w + pad) - pad), np.nan)
    for i, img in enumerate(images):
        r, c = divmod(i, ncols)
        out[r * (h + pad) : r * (h + pad) + h, c * (w + pad) : c * (w + pad) + w] = img.reshape(
            image_shape
        )
    return out


def _show_montage(ax: Any, grid: np.ndarray, limits: dict) -> None:
    cmap = plt.get_cmap("gray").with_extremes(bad="white")
    ax.imshow(np.ma.masked_invalid(grid), cmap=cmap, interpolation="nearest", **limits)
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
        >>> [t.get_text() for t in fig.axes[0].get_yticklabels()]
        ['data', 'recon.']
    """
    x = to_numpy(x)[:max_items]
    x_rec = to_numpy(x_rec)[:max_items]
    n = x.shape[0]
    if image_shape is None:
        fig, axes = plt.subplots(
            1, 2, figsize=(9, 1.4 + 0.35 * n), squeeze=False, constrained_layout=True
        )
        for ax, data, title in zip(axes[0], (x, x_rec), ("data", "reconstruction")):
            im = ax.imshow(data, aspect="auto", cmap="viridis", **unit_limits(x, x_rec))
            ax.set_title(title)
            ax.set_xlabel("dimension")
            ax.set_ylabel("datum")
        fig.colorbar(im, ax=axes[0].tolist(), label="value / probability")
        fig.suptitle("Data vs reconstructions (mean of p(x|z), z = mode of q(z|x))")
        return save(fig, path)
    fig, ax = plt.subplots(figsize=(1.0 + 1.0 * n, 2.8), constrained_layout=True)
    _show_montage(ax, montage(np.concatenate([x, x_rec]), image_shape, n), unit_limits(x, x_rec))
    h = image_shape[0]
    ax.set_yticks([(h - 1) / 2, h + 1 + (h - 1) / 2], ["data", "recon."])
    ax.set_title("Test data (top) and reconstructions (bottom)")
    return save(fig, path)


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
    samples = to_numpy(samples)
    n = samples.shape[0]
    if image_shape is None:
        fig, ax = plt.subplots(figsize=(8, 1 + 0.35 * n))
        im = ax.imshow(samples, aspect="auto", cmap="viridis", **unit_limits(samples))
        ax.set_xlabel("dimension")
        ax.set_ylabel("sample")
        fig.colorbar(im, ax=ax, label="mean of p(x|z)")
        ax.set_title("Samples from the prior (decoded means)")
        return save(fig, path)
    ncols = max(1, min(ncols, n))
    nrows = max(1, -(-n // ncols))
    fig, ax = plt.subplots(figsize=(1.0 * ncols + 0.4, 1.0 * nrows + 0.6), constrained_layout=True)
    _show_montage(ax, montage(samples, image_shape, ncols), unit_limits(samples))
    ax.set_title("Samples from the prior (decoded means)")
    return save(fig, path)


def latent_traversals(model: Any, x: Any, max_groups: int = 8) -> tuple[np.ndarray, np.ndarray]:
    """Decoded means when one latent group of the base code takes each of its values.

    The base code is the mode of q(z | x) for the first row of ``x``. Returns ``images`` of
    shape ``(groups, K, D)`` (``K = 2`` for Bernoulli units) and the base category of each group.

    Example:
        >>> import torch
        >>> from pyro_dvae.models import DiscreteVAE
        >>> images, base = latent_traversals(DiscreteVAE(4, "3x5", encoder_hidden=(8,)),
        ...                                  torch.zeros(1, 4))
        >>> images.shape, base.shape
        ((3, 5, 4), (3,))
    """
    import torch

    x = torch.as_tensor(x, dtype=torch.float32)
    x = x.reshape(1, -1) if x.dim() == 1 else x[:1]
    spec = model.latent
    groups = min(spec.groups, max_groups)
    with torch.no_grad():
        code = model.posterior_mode(x)[0]
        codes = code.expand((groups, spec.categories) + tuple(code.shape)).clone()
        for g in range(groups):
            for k in range(spec.categories):
                if spec.kind == "categorical":
                    codes[g, k, g] = torch.nn.functional.one_hot(
                        torch.tensor(k), spec.categories
                    ).to(code.dtype)
                else:
                    codes[g, k, g] = float(k)
        images = model.mean(codes)
        base = code.argmax(-1) if spec.kind == "categorical" else code.long()
    return to_numpy(images), to_numpy(base[:groups]).astype(int)


def plot_latent_traversals(
    model: Any,
    x: Any,
    image_shape: tuple[int, int] | None,
    path: str | os.PathLike | None = None,
    max_groups: int = 8,
) -> Figure:
    """Vary one latent group over its values (columns) at a time (rows), from the posterior
    mode of ``x[0]``; the base value of each group is framed in red.

    ``model`` is a :class:`~pyro_dvae.models.DiscreteVAE`. With ``image_shape`` ``None`` each
    group is drawn as a heatmap (rows = values, columns = data dimensions).

    Example:
        >>> import torch
        >>> from pyro_dvae.models import DiscreteVAE
        >>> fig = plot_latent_traversals(DiscreteVAE(4, "2x3", encoder_hidden=(8,)),
        ...                              torch.zeros(4), (2, 2))
        >>> fig.axes[0].get_title()
        'input'
    """
    images, base = latent_traversals(model, x, max_groups)
    x0 = to_numpy(x).reshape(-1, images.shape[-1])[0]
    groups, values = images.shape[:2]
    title = f"Latent traversals: each row varies one group over its {values} values"
    if image_shape is None:
        row = max(0.45, 0.22 * values)
        fig, axes = plt.subplots(groups, 1, figsize=(8, 1.0 + (row + 0.1) * groups), squeeze=False)
        axes = axes[:, 0]
        for g, ax in enumerate(axes):
            im = ax.imshow(images[g], aspect="auto", cmap="viridis", **unit_limits(images))
            ax.set_ylabel(f"group {g}", rotation=0, ha="right", va="center", fontsize="small")
            ax.set_yticks(range(values))
            ax.tick_params(axis="y", labelsize="x-small")
            ax.get_yticklabels()[base[g]].set_color("tab:red")
            if g < groups - 1:
                ax.set_xticks([])
        axes[-1].set_xlabel("data dimension")
        fig.colorbar(im, ax=axes.tolist(), label="mean of p(x|z)")
        fig.suptitle(f"{title}\n(rows within a group: values; the input's mode in red)")
        return save(fig, path)
    cell = 1.0 if values <= 10 else 0.7
    fig, axes = plt.subplots(
        groups, values + 1, figsize=(cell * (values + 1) + 0.6, cell * groups + 0.9), squeeze=False
    )
    limits = unit_limits(images)
    for g in range(groups):
        for k in range(values):
            ax = axes[g][k + 1]
            ax.imshow(images[g, k].reshape(image_shape), cmap="gray", **limits)
            ax.set_xticks([])
            ax.set_yticks([])
            if k == base[g]:
                for spine in ax.spines.values():
                    spine.set_color("tab:red")
                    spine.set_linewidth(2.5)
            if g == 0:
                ax.set_title(f"k={k}", fontsize="small")
        axes[g][1].set_ylabel(f"group {g}", fontsize="small")
        axes[g][0].axis("off")
    axes[0][0].imshow(x0.reshape(image_shape), cmap="gray", **unit_limits(x0))
    axes[0][0].set_title("input", fontsize="small")
    note = "(red frame: value at the posterior mode of the input)"
    fig.suptitle(f"{title}\n{note}", fontsize="medium")
    fig.tight_layout()
    return save(fig, path)

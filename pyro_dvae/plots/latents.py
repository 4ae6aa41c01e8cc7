"""Figures of the posterior over discrete codes: code usage, posterior entropy, code vs label.

Each takes the per-observation probabilities of q(z | x): ``(n, N, K)`` for categorical groups
or ``(n, N)`` for Bernoulli units (see :func:`pyro_dvae.analysis.latent_stats.posterior_probs`
and :func:`~pyro_dvae.analysis.latent_stats.probs_from_inference_data`).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from ..analysis.latent_stats import (
    as_categorical,
    code_label_joint,
    code_usage,
    mutual_information,
    posterior_entropy,
)
from ._common import Figure, plt, save

__all__ = ["plot_code_usage", "plot_code_vs_label", "plot_posterior_entropy"]


def _perplexity(p: np.ndarray) -> np.ndarray:
    return np.exp(-np.sum(np.where(p > 0, p * np.log(np.clip(p, 1e-300, None)), 0.0), axis=-1))


def plot_code_usage(probs: Any, path: str | os.PathLike | None = None) -> Figure:
    """Heatmap of the aggregate posterior ``mean_n q(z_g = k | x_n)`` (groups x categories).

    Each row label gives the group's perplexity ``exp H`` of that row: the effective number of
    categories in use (``K`` when all are used equally, 1 when the group is collapsed).

    Example:
        >>> fig = plot_code_usage(np.full((5, 3, 4), 0.25))
        >>> fig.axes[0].get_xlabel()
        'category k'
    """
    usage = code_usage(probs)
    groups, cats = usage.shape
    ppl = _perplexity(usage)
    fig, ax = plt.subplots(figsize=(1.2 + 0.45 * cats + 1.6, 1.2 + 0.38 * groups))
    im = ax.imshow(usage, cmap="viridis", vmin=0.0, vmax=max(float(usage.max()), 1e-9))
    ax.set_xticks(range(cats))
    ax.set_yticks(range(groups))
    ax.set_yticklabels([f"group {g} (used {p:.1f} of {cats})" for g, p in enumerate(ppl)])
    if cats > 16:
        ax.set_xticks(range(0, cats, max(1, cats // 10)))
    ax.set_xlabel("category k")
    ax.set_title(f"Latent code usage over {as_categorical(probs).shape[0]} observations")
    fig.colorbar(im, ax=ax, label="mean q(z_g = k | x)", shrink=0.9)
    fig.tight_layout()
    return save(fig, path)


def plot_posterior_entropy(probs: Any, path: str | os.PathLike | None = None) -> Figure:
    """Histogram of the entropy of q(z | x) per observation, and its mean per group (nats).

    Low entropy: the encoder commits to one code for that datum; the dashed lines mark the
    maximum (a uniform posterior).

    Example:
        >>> fig = plot_posterior_entropy(np.full((5, 3, 4), 0.25))
        >>> fig.axes[0].get_xlabel()
        'H[q(z | x)] per observation (nats)'
    """
    p = as_categorical(probs)
    per_group = posterior_entropy(p)  # (n, N)
    total = per_group.sum(-1)
    groups, cats = p.shape[1:]
    fig, (ax, bx) = plt.subplots(
        1, 2, figsize=(11, 4), gridspec_kw={"width_ratios": [3, 2]}, constrained_layout=True
    )
    top = groups * np.log(cats)
    ax.hist(total, bins=min(40, max(5, total.size // 5)), range=(0, top), color="tab:blue")
    ax.axvline(top, color="k", ls="--", lw=1, label=f"uniform: {top:.2f}")
    ax.axvline(total.mean(), color="tab:red", lw=1.5, label=f"mean: {total.mean():.2f}")
    ax.set_xlabel("H[q(z | x)] per observation (nats)")
    ax.set_ylabel("observations")
    ax.set_title("Posterior entropy per observation")
    ax.legend(fontsize="small")
    bx.bar(np.arange(groups), per_group.mean(0), color="tab:blue")
    bx.axhline(np.log(cats), color="k", ls="--", lw=1, label=f"uniform: log {cats}")
    bx.set_ylim(0, 1.25 * np.log(cats))
    bx.set_xlabel("latent group")
    bx.set_ylabel("mean H[q(z_g | x)] (nats)")
    bx.set_title("Mean posterior entropy per group")
    bx.set_xticks(np.arange(0, groups, max(1, -(-groups // 12))))
    bx.legend(loc="upper right", fontsize="small")
    return save(fig, path)


def plot_code_vs_label(
    probs: Any,
    labels: Any,
    path: str | os.PathLike | None = None,
    max_groups: int = 4,
    label_names: Sequence[str] | None = None,
) -> Figure:
    """Confusion-style matrices of p(category | label) for the groups most informative about
    the label, each titled with the mutual information I(label; z_g) in nats.

    Counts are soft: each observation adds q(z_g = k | x) to row ``label``. The groups are
    ranked by mutual information; the suptitle gives the best one against H(label).

    Example:
        >>> p = np.eye(3)[None].repeat(6, 0)[:, :1, :]  # one group, always category 0
        >>> fig = plot_code_vs_label(p, [0, 1, 2, 0, 1, 2])
        >>> fig.axes[0].get_title()
        'group 0\\nI = 0.000 nats'
    """
    joint = code_label_joint(probs, labels)  # (N, L, K)
    mi = np.array([mutual_information(j) for j in joint])
    order = np.argsort(-mi, kind="stable")[:max_groups]
    num_labels, cats = joint.shape[1:]
    names = list(label_names) if label_names is not None else [str(i) for i in range(num_labels)]
    marginal = joint[0].sum(1)
    h_label = float(-np.sum(marginal[marginal > 0] * np.log(marginal[marginal > 0])))
    cols = len(order)
    fig, axes = plt.subplots(
        1,
        cols,
        # at least 5 inches wide: the two-line suptitle fits however few groups are shown
        figsize=(max(cols * max(0.3 * cats + 0.9, 2.2) + 1.4, 5.0), 0.3 * num_labels + 2.4),
        squeeze=False,
        constrained_layout=True,
    )
    for ax, g in zip(axes[0], order):
        rows = joint[g].sum(1, keepdims=True)
        cond = np.divide(joint[g], rows, out=np.zeros_like(joint[g]), where=rows > 0)
        im = ax.imshow(cond, cmap="Blues", vmin=0.0, vmax=1.0)
        ax.set_title(f"group {g}\nI = {mi[g]:.3f} nats", fontsize="medium")
        ax.set_xlabel("category k")
        ax.set_xticks(range(cats))
        ax.set_yticks(range(num_labels))
        ax.set_yticklabels(names)
    axes[0][0].set_ylabel("true label")
    fig.colorbar(im, ax=axes[0].tolist(), label="p(category | label)", shrink=0.9)
    best = int(order[0])
    fig.suptitle(
        f"Latent code vs label: best group {best}\nI(label; z_{best}) = {mi[best]:.3f} of "
        f"H(label) = {h_label:.3f} nats"
    )
    return save(fig, path)

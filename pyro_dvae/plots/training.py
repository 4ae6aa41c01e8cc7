"""Training curves: loss and temperature, ELBO / log-likelihood, estimator learning curves."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

import numpy as np

from ._common import Figure, clip_ylim, plt, save, smooth, to_numpy

__all__ = ["plot_elbo_curves", "plot_learning_curves", "plot_training_curve"]


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
    loss = to_numpy(history.get("loss", []))
    fig, ax = plt.subplots(figsize=(7, 4))
    steps = np.arange(1, loss.size + 1)
    if loss.size:
        ax.plot(steps, loss, color="tab:blue", alpha=0.3, lw=0.8, label="train loss (per step)")
        window = max(1, loss.size // 50)
        if window > 1:
            avg = smooth(loss, window)
            ax.plot(steps[window - 1 :], avg, color="tab:blue", lw=1.5, label="train (avg)")
    valid = to_numpy(history.get("valid_nelbo", []))
    if valid.size:
        valid_steps = to_numpy(history.get("valid_step", np.arange(1, valid.size + 1)))
        ms = 6 if valid.size <= 20 else 3
        label = "valid -ELBO (per epoch)"
        ax.plot(valid_steps, valid, "o-", ms=ms, color="tab:orange", label=label)
    clip_ylim(ax, loss, valid)  # clip the first few huge losses so the curve stays readable
    ax.set_xlabel("training step")
    ax.set_ylabel("loss (nats / datum)")
    ax.set_title("Training curve: negative ELBO")
    ax.grid(True, alpha=0.3)
    tau = to_numpy(history.get("tau", []))
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
    return save(fig, path)


_REFERENCE_LINES = (  # RunMetrics key of a negated quantity -> (label, colour, line style)
    ("test_nelbo", "test ELBO", "tab:orange", ":"),
    ("test_nll_iwae", "test log p(x), IWAE", "tab:purple", "--"),
    ("test_nll_exact", "test log p(x), exact", "tab:red", "-"),
    ("true_test_nll", "test log p(x), true model", "black", "-."),
)


def plot_elbo_curves(
    history: Mapping[str, Sequence[float]],
    metrics: Mapping[str, float | None] | None = None,
    path: str | os.PathLike | None = None,
) -> Figure:
    """Plot the ELBO (nats/datum, higher is better) during training, with the final test bounds.

    The training ELBO is ``-history["loss"]`` (per step, with a moving average), the validation
    ELBO ``-history["valid_nelbo"]`` per epoch; ``metrics`` (a run's
    :class:`~pyro_dvae.training.RunMetrics`, or any part of it) adds horizontal
    lines for the test ELBO, the IWAE and the exact test log-likelihood, when present.

    Example:
        >>> fig = plot_elbo_curves({"loss": [90.0, 80.0]}, {"test_nll_exact": 78.0})
        >>> fig.axes[0].get_ylabel()
        'ELBO / log-likelihood (nats / datum)'
    """
    elbo = -to_numpy(history.get("loss", []))
    fig, ax = plt.subplots(figsize=(7, 4))
    steps = np.arange(1, elbo.size + 1)
    if elbo.size:
        ax.plot(steps, elbo, color="tab:blue", alpha=0.25, lw=0.8, label="train ELBO (per step)")
        window = max(1, elbo.size // 50)
        if window > 1:
            avg = smooth(elbo, window)
            ax.plot(steps[window - 1 :], avg, color="tab:blue", lw=1.5, label="train ELBO (avg)")
    valid = -to_numpy(history.get("valid_nelbo", []))
    if valid.size:
        valid_steps = to_numpy(history.get("valid_step", np.arange(1, valid.size + 1)))
        ax.plot(valid_steps, valid, "o-", color="tab:green", ms=3, label="valid ELBO (per epoch)")
    lines = []
    for key, label, color, style in _REFERENCE_LINES:
        value = (metrics or {}).get(key)
        if isinstance(value, int | float) and np.isfinite(value):
            ax.axhline(-value, color=color, ls=style, lw=1.2, label=f"{label}: {-value:.2f}")
            lines.append(-float(value))
    clip_ylim(ax, elbo, valid, np.asarray(lines), low=2, high=100)
    ax.set_xlabel("training step")
    ax.set_ylabel("ELBO / log-likelihood (nats / datum)")
    ax.set_title("ELBO during training and final test log-likelihood")
    ax.grid(True, alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(loc="lower right", fontsize="small")
    fig.tight_layout()
    return save(fig, path)


def plot_learning_curves(
    curves: Mapping[str, Mapping[str, Sequence[float]]],
    path: str | os.PathLike | None = None,
    title: str = "Learning curves by estimator",
) -> Figure:
    """Compare estimators: training loss (moving average) and validation -ELBO against step.

    ``curves`` maps a label (e.g. an estimator name) to a training history with ``"loss"``
    (per step, nats/datum) and optionally ``"valid_step"`` / ``"valid_nelbo"`` (per epoch).
    Lower is better in both panels.

    Example:
        >>> curves = {"exact": {"loss": [3.0, 2.0]}, "nvil": {"loss": [4.0, 3.0]}}
        >>> fig = plot_learning_curves(curves)
        >>> [line.get_label() for line in fig.axes[0].get_lines()]
        ['exact', 'nvil']
    """
    has_valid = any(len(h.get("valid_nelbo") or []) for h in curves.values())
    ncols = 2 if has_valid else 1
    fig, axes = plt.subplots(1, ncols, figsize=(6.5 * ncols, 4.2), squeeze=False)
    train_ax = axes[0][0]
    colors = plt.get_cmap("tab10")
    train_all, valid_all = [], []
    for i, (label, hist) in enumerate(curves.items()):
        color = colors(i % 10)
        loss = to_numpy(hist.get("loss", []))
        if loss.size:
            window = max(1, loss.size // 50)
            avg = smooth(loss, window)
            train_ax.plot(np.arange(window, loss.size + 1), avg, color=color, lw=1.4, label=label)
            train_all.append(avg)
        valid = to_numpy(hist.get("valid_nelbo", []))
        if has_valid and valid.size:
            steps = to_numpy(hist.get("valid_step", np.arange(1, valid.size + 1)))
            axes[0][1].plot(steps, valid, "o-", ms=3, color=color, lw=1.2, label=label)
            valid_all.append(valid)
    clip_ylim(train_ax, *train_all)
    train_ax.set_title("training loss (moving average)")
    train_ax.set_ylabel("-ELBO (nats / datum)")
    if has_valid:
        clip_ylim(axes[0][1], *valid_all)
        axes[0][1].set_title("validation -ELBO (per epoch)")
        axes[0][1].set_ylabel("-ELBO (nats / datum)")
    for ax in axes[0]:
        ax.set_xlabel("training step")
        ax.grid(True, alpha=0.3)
    if curves:
        train_ax.legend(loc="upper right", fontsize="small")
    fig.suptitle(title)
    fig.tight_layout()
    return save(fig, path)

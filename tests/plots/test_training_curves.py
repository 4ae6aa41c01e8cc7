"""Training-curve figures (pyro_dvae.plots.training)."""

from __future__ import annotations

import numpy as np
import pytest
from _plot_checks import is_png as _is_png
from matplotlib.figure import Figure

from pyro_dvae.plots import (
    plot_elbo_curves,
    plot_learning_curves,
    plot_training_curve,
)


def test_training_curve(tmp_path):
    history = {
        "loss": list(np.linspace(120, 40, 200)),
        "tau": list(np.linspace(1.0, 0.5, 200)),
        "valid_step": [100, 200],
        "valid_nelbo": [60.0, 45.0],
    }
    fig = plot_training_curve(history, tmp_path / "curve.png")
    assert isinstance(fig, Figure)
    ax = fig.axes[0]
    assert "nats" in ax.get_ylabel()
    assert ax.get_xlabel() == "training step"
    assert ax.get_title()
    assert len(fig.axes) == 2  # temperature on a twin axis
    assert _is_png(tmp_path / "curve.png")


def test_training_curve_minimal():
    fig = plot_training_curve({"loss": [3.0]})
    assert len(fig.axes) == 1
    fig = plot_training_curve({"loss": []})
    assert isinstance(fig, Figure)


@pytest.mark.slow  # seconds of training or sampling: make test-fast skips it
def test_elbo_curves(tmp_path, trained):
    run = trained[0]
    fig = plot_elbo_curves(run.history, run.metrics, tmp_path / "elbo.png")
    ax = fig.axes[0]
    assert "nats" in ax.get_ylabel() and ax.get_title()
    labels = ax.get_legend_handles_labels()[1]
    assert any(label.startswith("test log p(x), exact") for label in labels)
    assert _is_png(tmp_path / "elbo.png")


def test_learning_curves(tmp_path, trained):
    history = trained[0].history
    worse = {**history, "loss": [v + 1 for v in history["loss"]]}
    fig = plot_learning_curves({"gumbel-softmax": history, "nvil": worse}, tmp_path / "lc.png")
    assert len(fig.axes) == 2  # training loss and validation -ELBO
    assert [line.get_label() for line in fig.axes[0].get_lines()] == ["gumbel-softmax", "nvil"]
    assert _is_png(tmp_path / "lc.png")

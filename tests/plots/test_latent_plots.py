"""Latent-code figures (pyro_dvae.plots.latents)."""

from __future__ import annotations

import pytest
from _plot_checks import is_png as _is_png

from pyro_dvae.plots import (
    plot_code_usage,
    plot_code_vs_label,
    plot_posterior_entropy,
)


@pytest.mark.slow  # seconds of training or sampling: make test-fast skips it
def test_code_usage_and_entropy(tmp_path, trained):
    probs = trained[3]
    fig = plot_code_usage(probs, tmp_path / "usage.png")
    assert fig.axes[0].get_xlabel() == "category k"
    assert "used" in fig.axes[0].get_yticklabels()[0].get_text()
    assert _is_png(tmp_path / "usage.png")
    fig = plot_posterior_entropy(probs, tmp_path / "entropy.png")
    assert "nats" in fig.axes[0].get_xlabel() and "nats" in fig.axes[1].get_ylabel()
    assert _is_png(tmp_path / "entropy.png")


def test_code_vs_label_reports_mutual_information(tmp_path, trained):
    _, _, y, probs = trained
    fig = plot_code_vs_label(probs, y, tmp_path / "label.png")
    assert "I(label; z_" in fig.get_suptitle() and "nats" in fig.get_suptitle()
    assert all("I = " in ax.get_title() for ax in fig.axes[:2])
    assert _is_png(tmp_path / "label.png")


@pytest.mark.parametrize("groups", [1, 2, 4])
def test_code_vs_label_suptitle_fits_the_figure(groups):
    """With one or two groups the figure used to be narrower than its suptitle (clipped)."""
    import numpy as np

    rng = np.random.default_rng(0)
    probs = rng.dirichlet(np.ones(3), size=(40, groups))
    fig = plot_code_vs_label(probs, rng.integers(0, 2, 40))
    fig.canvas.draw()
    box = fig._suptitle.get_window_extent()
    assert box.x0 >= 0 and box.x1 <= fig.bbox.width and box.y1 <= fig.bbox.height

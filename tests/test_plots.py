from __future__ import annotations

import numpy as np
import pytest
import torch
from matplotlib.figure import Figure

from pyro_dvae.plots import plot_prior_samples, plot_reconstructions, plot_training_curve


def _is_png(path) -> bool:
    return path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


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


@pytest.mark.parametrize("shape", [(8, 8), None])
def test_reconstructions(tmp_path, shape):
    x = (torch.rand(6, 64) > 0.5).float()
    fig = plot_reconstructions(x, torch.rand(6, 64), shape, tmp_path / "rec.png")
    assert isinstance(fig, Figure)
    assert fig.get_suptitle()
    assert _is_png(tmp_path / "rec.png")


def test_reconstructions_limits_items():
    fig = plot_reconstructions(np.zeros((30, 4)), np.zeros((30, 4)), (2, 2), max_items=5)
    assert len(fig.axes) == 10


@pytest.mark.parametrize("shape,n", [((8, 8), 20), ((8, 8), 3), (None, 7)])
def test_prior_samples(tmp_path, shape, n):
    fig = plot_prior_samples(torch.rand(n, 64), shape, tmp_path / "prior.png")
    assert isinstance(fig, Figure)
    assert _is_png(tmp_path / "prior.png")
    if shape is None:
        assert fig.axes[0].get_ylabel() == "sample"


def test_unbounded_values_use_automatic_colour_scale():
    fig = plot_prior_samples(np.linspace(-3, 3, 64).reshape(1, 64), (8, 8))
    assert fig.axes[0].images[0].get_clim() == (-3.0, 3.0)
    fig = plot_prior_samples(np.full((1, 64), 0.5), (8, 8))
    assert fig.axes[0].images[0].get_clim() == (0.0, 1.0)

"""Image figures (pyro_dvae.plots.images): reconstructions, prior samples, traversals."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from _plot_checks import is_png as _is_png
from matplotlib.figure import Figure

from pyro_dvae.models import DiscreteVAE
from pyro_dvae.plots import (
    plot_latent_traversals,
    plot_prior_samples,
    plot_reconstructions,
)


@pytest.mark.parametrize("shape", [(8, 8), None])
def test_reconstructions(tmp_path, shape):
    x = (torch.rand(6, 64) > 0.5).float()
    fig = plot_reconstructions(x, torch.rand(6, 64), shape, tmp_path / "rec.png")
    assert isinstance(fig, Figure)
    assert fig.get_suptitle() or fig.axes[0].get_title()
    assert _is_png(tmp_path / "rec.png")


def test_reconstructions_limits_items():
    fig = plot_reconstructions(np.zeros((30, 4)), np.ones((30, 4)), (2, 2), max_items=5)
    grid = fig.axes[0].get_images()[0].get_array()
    assert grid.shape == (2 * 2 + 1, 5 * 2 + 4)  # two rows of 5 tiles of 2x2, 1-pixel gaps
    assert grid[:2].max() == 0 and grid[3:].min() == 1  # masked gaps are ignored


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


@pytest.mark.slow  # seconds of training or sampling: make test-fast skips it
@pytest.mark.parametrize("shape", [(8, 8), None])
def test_latent_traversals(tmp_path, trained, shape):
    run, x = trained[0], trained[1]
    fig = plot_latent_traversals(run.model, x[0], shape, tmp_path / "trav.png")
    assert fig.get_suptitle().startswith("Latent traversals")
    if shape is not None:
        assert len(fig.axes) == 2 * (4 + 1)  # 2 groups x (input column + 4 categories)
    assert _is_png(tmp_path / "trav.png")


def test_latent_traversals_bernoulli(tmp_path):
    vae = DiscreteVAE(16, "3b", encoder_hidden=(8,))
    fig = plot_latent_traversals(vae, torch.zeros(16), (4, 4), tmp_path / "t.png")
    assert len(fig.axes) == 3 * (2 + 1)
    assert _is_png(tmp_path / "t.png")

from __future__ import annotations

import numpy as np
import pytest
import torch
from matplotlib.figure import Figure

from pyro_dvae.analysis import load_run, posterior_probs
from pyro_dvae.errors import DVAEInputError
from pyro_dvae.models import DiscreteVAE
from pyro_dvae.plots import (
    plot_code_usage,
    plot_code_vs_label,
    plot_comparison_dir,
    plot_elbo_curves,
    plot_latent_traversals,
    plot_learning_curves,
    plot_posterior_entropy,
    plot_prior_samples,
    plot_reconstructions,
    plot_run,
    plot_training_curve,
)
from pyro_dvae.training import TrainConfig, train


def _is_png(path) -> bool:
    return path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 1000


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    import matplotlib.pyplot as plt

    plt.close("all")


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A tiny model trained on the digits (2x4 latents, 15 steps), single-threaded."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("run")
    cfg = TrainConfig(latent="2x4", encoder_hidden=(16,), max_steps=15, iwae_samples=10)
    train(cfg, out_dir=out, progress=False)
    yield out
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def trained(run_dir):
    run = load_run(run_dir)
    data = run.load_data()
    x, y = data.test[:40], data.test_labels[:40]
    return run, x, y, posterior_probs(run.model, x)


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


def test_plot_run_writes_every_figure_and_never_overwrites(tmp_path, run_dir):
    out = tmp_path / "figs"
    paths = plot_run(run_dir, out, max_observations=30)
    assert set(paths) == {
        "training_curve.png",
        "elbo_curves.png",
        "reconstructions.png",
        "prior_samples.png",
        "latent_traversals.png",
        "code_usage.png",
        "posterior_entropy.png",
        "code_vs_label.png",
    }
    assert all(_is_png(p) for p in paths.values())
    before = (out / "code_usage.png").read_bytes()
    with pytest.raises(DVAEInputError, match="already exists.*--force"):
        plot_run(run_dir, out)
    assert (out / "code_usage.png").read_bytes() == before


def test_plot_comparison_dir(tmp_path, run_dir):
    import shutil

    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        shutil.copy(run_dir / "metrics.json", tmp_path / name / "metrics.json")
    paths = plot_comparison_dir(tmp_path)
    assert _is_png(paths["learning_curves.png"])
    with pytest.raises(DVAEInputError, match="no checkpoint.pt"):
        plot_comparison_dir(tmp_path / "a")

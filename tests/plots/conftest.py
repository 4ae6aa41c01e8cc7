"""Fixtures of the figure tests: a tiny trained run, and no figure left open."""

from __future__ import annotations

import pytest
import torch

from pyro_dvae.analysis import load_run, posterior_probs
from pyro_dvae.training import TrainConfig, train


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

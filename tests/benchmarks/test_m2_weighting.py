"""Options of the M2 benchmark. ``--labelled-weight`` scales the labelled ELBO,
not Kingma et al.'s classification term (alpha stays per labelled example)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pyro
import pytest
import torch
from pyro.infer import Trace_ELBO

PATH = Path(__file__).resolve().parents[2] / "benchmarks" / "m2_semisupervised.py"


@pytest.fixture(scope="module")
def m2_module():
    spec = importlib.util.spec_from_file_location("m2_semisupervised", PATH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _loss(m2, x, y, weight: float, seed: int = 3) -> float:
    pyro.set_rng_seed(seed)  # same z draw in every call
    with torch.no_grad():
        return Trace_ELBO().loss(m2.model, m2.guide, x, y, scale=weight)


@pytest.mark.parametrize("weight", [1.0, 0.25, 0.002])
def test_labelled_weight_scales_the_elbo_and_keeps_alpha(m2_module, weight):
    torch.manual_seed(0)
    m2 = m2_module.SemiSupervisedVAE(data_dim=12, classes=3, z_dim=2, hidden=8, alpha=0.0)
    x = torch.bernoulli(torch.full((5, 12), 0.4))
    y = torch.nn.functional.one_hot(torch.tensor([0, 1, 2, 1, 0]), 3).float()
    elbo_only = _loss(m2, x, y, 1.0)  # alpha = 0: the labelled -ELBO alone
    m2.alpha = 7.0
    with torch.no_grad():
        classify = -7.0 * float(m2.q_y(x).log_prob(y).sum())
    assert _loss(m2, x, y, weight) == pytest.approx(weight * elbo_only + classify, rel=1e-5)


def test_labelled_weight_must_be_positive(m2_module):
    with pytest.raises(SystemExit):
        m2_module.parse_args(["--labelled-weight", "0"])


def test_dynamic_binarization_needs_mnist(m2_module, tmp_path):
    with pytest.raises(SystemExit):
        m2_module.parse_args(["--smoke", "--dynamic-binarization"])
    with pytest.raises(SystemExit, match="no train-images-idx3-ubyte"):
        m2_module.grey_train_images(str(tmp_path), 10)


def test_label_shift_translates_each_image_within_the_bound(m2_module):
    images = torch.zeros(200, 28, 28)
    images[:, 10:15, 12:14] = torch.arange(1.0, 201.0)[:, None, None]  # a block away from the edge
    x = images.reshape(200, -1)
    g = torch.Generator().manual_seed(0)
    shifted = m2_module.random_translate(x, 2, generator=g).reshape(200, 28, 28)  # the package's
    offsets = set()
    for before, after in zip(images, shifted):
        r, c = (after.nonzero().min(0).values - before.nonzero().min(0).values).tolist()
        assert abs(r) <= 2 and abs(c) <= 2
        assert torch.equal(after, torch.roll(before, (r, c), (0, 1)))  # the same image, moved
        offsets.add((r, c))
    assert len(offsets) == 25  # every offset in [-2, 2]^2 is drawn
    assert torch.equal(m2_module.random_translate(x, 0, generator=g), x)


def test_label_shift_needs_mnist(m2_module):
    with pytest.raises(SystemExit):
        m2_module.parse_args(["--smoke", "--label-shift", "2"])

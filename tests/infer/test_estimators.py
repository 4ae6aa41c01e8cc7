import math

import pytest
import torch

from pyro_dvae import DiscreteVAE
from pyro_dvae.errors import DVAEInputError
from pyro_dvae.infer import (
    ESTIMATORS,
    EXACT_ESTIMATORS,
    RELAXED_ESTIMATORS,
    TorchOptimSVI,
    build_elbo,
    exact_log_likelihood,
)


def test_estimator_groups_are_subsets():
    assert set(RELAXED_ESTIMATORS) <= set(ESTIMATORS)
    assert set(EXACT_ESTIMATORS) <= set(ESTIMATORS)
    assert not set(RELAXED_ESTIMATORS) & set(EXACT_ESTIMATORS)


@pytest.mark.slow  # seconds of training or sampling: make test-fast skips it
@pytest.mark.parametrize("estimator", ESTIMATORS)
@pytest.mark.parametrize("latent", ["2x3", "3b"])
def test_every_estimator_trains_the_same_model(estimator, latent):
    """Each named estimator runs on the unchanged DiscreteVAE model/guide and improves log p(x)."""
    torch.manual_seed(0)
    x = torch.bernoulli(torch.rand(1, 12).expand(64, 12))
    vae = DiscreteVAE(12, latent, encoder_hidden=(16,))
    elbo = build_elbo(estimator, temperature=0.5, kl="analytic", max_plate_nesting=1)
    svi = TorchOptimSVI(vae.model, vae.guide, lambda ps: torch.optim.Adam(ps, lr=0.05), elbo)
    before = float(exact_log_likelihood(vae.model, x).mean())
    for _ in range(30):
        loss = svi.step(x)
        assert math.isfinite(loss)
    after = float(exact_log_likelihood(vae.model, x).mean())
    assert after > before + 0.5, (before, after)
    assert all(torch.isfinite(p).all() for p in vae.parameters())


def test_unknown_estimator_names_the_choices():
    with pytest.raises(DVAEInputError, match="choose one of gumbel-softmax"):
        build_elbo("reinforce")


def test_options_reach_the_elbo():
    assert build_elbo("gumbel-rao", gumbel_rao_samples=7).num_samples == 7
    assert build_elbo("vimco", num_particles=1).num_particles == 2
    assert build_elbo("nvil").baseline == "neural"
    assert build_elbo("score-function-baseline").baseline == "decaying_average"
    assert build_elbo("gumbel-softmax", temperature=0.3).temperature == 0.3
    assert build_elbo("disarm").categorical == "stick-breaking"
    assert build_elbo("disarm", disarm_categorical="loo").categorical == "loo"
    with pytest.raises(DVAEInputError, match="categorical must be one of"):
        build_elbo("disarm", disarm_categorical="tree")

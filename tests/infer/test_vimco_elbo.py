"""Tests for VIMCOELBO: its loss is the K-sample importance-weighted bound, and its gradient is
unbiased for that bound (checked against brute-force enumeration over all K-tuples)."""

from __future__ import annotations

import math

import pyro
import pyro.distributions as dist
import pytest
import torch
from _models import mixture_guide, mixture_model

from pyro_dvae.diagnostics import gradient_estimates
from pyro_dvae.errors import DVAEInputError
from pyro_dvae.infer.vimco_elbo import VIMCOELBO, vimco_learning_signals

K = 3
DATA = torch.tensor([-1.0, 0.5, 2.0]).repeat(200)
NAMES = ["prior_logits", "locs", "enc_w", "enc_b"]
NUM_CALLS = 30
# two-sided per-coordinate threshold: P(|t_29| > 4.5) ~ 1e-4, so over 12 coordinates an unbiased
# estimator fails with probability < 0.2% (Bonferroni)
Z_THRESHOLD = 4.5


model, guide = mixture_model, mixture_guide


def log_weight_table(x):
    """log p(x_n, z=c) - log q(z=c | x_n) and log q(z=c | x_n) for every class c: [N, 3]."""
    prior, locs = pyro.param("prior_logits"), pyro.param("locs")
    w, b = pyro.param("enc_w"), pyro.param("enc_b")
    log_q = (x.unsqueeze(-1) * w + b).log_softmax(-1)
    log_joint = prior.log_softmax(-1) + dist.Normal(locs, 1.0).log_prob(x.unsqueeze(-1))
    return log_joint - log_q, log_q


def brute_force_bound(x, k):
    """sum_n E_{z_1..z_k ~ q}[log (1/k) sum_i w_i], summing over all 3^k tuples exactly."""
    log_w, log_q = log_weight_table(x)
    tuples = torch.cartesian_prod(*[torch.arange(3)] * k)  # [3^k, k]
    lw = log_w[:, tuples]  # [N, 3^k, k]
    prob = log_q[:, tuples].sum(-1).exp()  # [N, 3^k]
    return (prob * (lw.logsumexp(-1) - math.log(k))).sum()


def test_loss_is_the_importance_weighted_bound_of_the_drawn_particles():
    drawn = {}

    def recording_guide(x):
        with pyro.poutine.trace() as tr:
            guide(x)
        drawn["z"] = tr.trace.nodes["z"]["value"]

    x = DATA[:6]
    elbo = VIMCOELBO(num_particles=4)
    loss = elbo.loss(model, recording_guide, x)
    z = drawn["z"]
    assert z.shape == (4, 6, 3)
    log_w = log_weight_table(x)[0].detach()
    lw = (z * log_w).sum(-1)  # [K, N]
    expected = -(lw.logsumexp(0) - math.log(4)).sum()
    assert loss == pytest.approx(float(expected), rel=1e-5)
    surrogate = elbo.differentiable_loss(model, recording_guide, x)
    lw = (drawn["z"] * log_w).sum(-1)
    expected = -(lw.logsumexp(0) - math.log(4)).sum()
    assert float(surrogate.detach()) == pytest.approx(float(expected), rel=1e-5)


def test_learning_signals_match_a_direct_loop():
    log_w = torch.randn(5, 7)
    got = vimco_learning_signals(log_w)
    for k in range(5):
        others = torch.cat([log_w[:k], log_w[k + 1 :]])
        replaced = torch.cat([others, others.mean(0, keepdim=True)])
        assert torch.allclose(got[k], log_w.logsumexp(0) - replaced.logsumexp(0), atol=1e-6)


def test_gradient_is_unbiased_for_the_k_sample_bound():
    model(DATA), guide(DATA)  # create the params
    params = [pyro.param(n).unconstrained() for n in NAMES]
    exact = torch.autograd.grad(-brute_force_bound(DATA, K), params)
    exact = torch.cat([g.reshape(-1) for g in exact])
    groups = dict.fromkeys(NAMES, "all")
    est = gradient_estimates(
        VIMCOELBO(num_particles=K), model, guide, DATA, NUM_CALLS, params=NAMES, groups=groups
    )["all"]
    z = (est.mean(0) - exact) / (est.std(0) / NUM_CALLS**0.5)
    assert z.abs().max() < Z_THRESHOLD, z
    # the bound's gradient is not the ELBO's (K = 1): the test can tell them apart
    elbo_grad = torch.autograd.grad(-brute_force_bound(DATA, 1), params)
    elbo_grad = torch.cat([g.reshape(-1) for g in elbo_grad])
    z_elbo = (est.mean(0) - elbo_grad) / (est.std(0) / NUM_CALLS**0.5)
    assert z_elbo.abs().max() > 2 * Z_THRESHOLD


def test_bad_inputs_and_global_latents():
    with pytest.raises(DVAEInputError, match="num_particles >= 2"):
        VIMCOELBO(num_particles=1)

    def global_model(x):
        g = pyro.sample("g", dist.Bernoulli(0.5))
        with pyro.plate("data", len(x)):
            pyro.sample("x", dist.Normal(g, 1.0), obs=x)

    def global_guide(x):
        pyro.sample("g", dist.Bernoulli(0.5))

    # a latent outside every plate: the whole data set is one datum of the bound
    log_w, score = VIMCOELBO(2).log_weights(global_model, global_guide, torch.zeros(3))
    assert log_w.shape == score.shape == (2, 1)

"""Tests for the Gumbel-Rao distributions and ELBO (Paulus et al. 2021, arXiv:2010.04838)."""

from __future__ import annotations

import math

import pyro
import pyro.distributions as dist
import pytest
import torch
import torch.nn.functional as F

from pyro_dvae import DiscreteVAE
from pyro_dvae.distributions import StraightThroughOneHotCategorical
from pyro_dvae.distributions.gumbel_rao import (
    GumbelRaoBernoulli,
    GumbelRaoOneHotCategorical,
    conditional_gumbel,
    conditional_logistic,
    gumbel_rao_straight_through,
)
from pyro_dvae.infer.enumerated_elbo import EnumeratedELBO
from pyro_dvae.infer.gumbel_rao_elbo import GumbelRaoELBO
from pyro_dvae.infer.relax import Relaxation, RelaxMessenger, discrete_counterpart

EULER = 0.5772156649015329
CHI2_999_DF4 = 18.467  # chi-square 0.999 quantile, 4 degrees of freedom


def test_forward_is_exactly_one_hot_and_categorical():
    logits = torch.tensor([1.0, 0.0, -1.0, 2.0, 0.5])
    d = GumbelRaoOneHotCategorical(0.5, logits=logits, num_samples=3).expand([20000])
    z = d.rsample()
    assert ((z == 0) | (z == 1)).all() and (z.sum(-1) == 1).all()
    counts = z.sum(0)
    expected = 20000 * logits.softmax(-1)
    assert ((counts - expected) ** 2 / expected).sum() < CHI2_999_DF4
    d1 = GumbelRaoOneHotCategorical(0.5, logits=logits)
    assert torch.allclose(d1.log_prob(z[:3]), (z[:3] * logits.log_softmax(-1)).sum(-1))


@pytest.mark.parametrize("scale,dtype", [(1.0, torch.float32), (30.0, torch.float64)])
def test_conditional_gumbels_have_the_sampled_argmax(scale, dtype):
    logits = scale * torch.randn(200, 6, dtype=dtype)
    hard = F.one_hot(torch.randint(6, (200,)), 6).to(dtype)  # includes very unlikely classes
    x = conditional_gumbel(logits, hard, torch.Size([50]))
    assert x.shape == (50, 200, 6) and torch.isfinite(x).all()
    assert (x.argmax(-1) == hard.argmax(-1)).all()


def test_conditional_gumbels_recover_the_unconditional_law():
    """Drawing D ~ Cat(softmax(logits)), then G | D, must give iid Gumbel(logits_i)."""
    logits = torch.tensor([0.5, -1.0, 2.0, 0.0])
    n = 100000
    hard = F.one_hot(torch.multinomial(logits.softmax(-1), n, replacement=True), 4).float()
    x = conditional_gumbel(logits, hard)
    # Gumbel(mu): mean mu + gamma, sd pi / sqrt(6) ~ 1.28; tolerance ~5 standard errors
    assert torch.allclose(x.mean(0), logits + EULER, atol=0.02)
    assert torch.allclose(x.std(0), torch.full((4,), math.pi / math.sqrt(6)), atol=0.02)


def test_conditional_logistic_matches_the_bit_and_the_law():
    logits = torch.tensor([0.7, -2.0, 4.0])
    n = 100000
    bits = torch.bernoulli(torch.sigmoid(logits).expand(n, 3))
    x = conditional_logistic(logits, bits)
    assert ((x > 0).float() == bits).all()
    # logits + Logistic(0, 1): mean = logits, sd = pi / sqrt(3) ~ 1.81
    assert torch.allclose(x.mean(0), logits, atol=0.03)
    assert torch.allclose(x.std(0), torch.full((3,), math.pi / math.sqrt(3)), atol=0.03)


def test_single_sample_equals_straight_through_given_the_same_noise():
    logits = torch.randn(8, 5, requires_grad=True)
    hard = F.one_hot(torch.randint(5, (8,)), 5).float()
    perturbed = conditional_gumbel(logits, hard, torch.Size([1]))
    tau, w = 0.7, torch.randn(8, 5)
    y = gumbel_rao_straight_through(logits, hard, perturbed, torch.tensor(tau))
    (g_rao,) = torch.autograd.grad((w * y).sum() ** 2, logits)
    # plain straight-through Gumbel-softmax with noise G = perturbed - logits, written out
    noise = (perturbed[0] - logits).detach()
    soft = torch.softmax((logits + noise) / tau, -1)
    st_hard = F.one_hot((logits + noise).argmax(-1), 5).float()
    y_st = soft + (st_hard - soft).detach()
    (g_st,) = torch.autograd.grad((w * y_st).sum() ** 2, logits)
    assert torch.equal(y, hard) and torch.equal(st_hard, hard)
    assert torch.allclose(g_rao, g_st, atol=1e-6)


def _per_sample_grads(make_dist, n: int = 10000):
    """Gradient of f(z) = (w . z - 0.3)^2 w.r.t. logits, for n independent draws."""
    logits = torch.tensor([0.5, -0.5, 1.0, 0.0]).repeat(n, 1).requires_grad_()
    w = torch.tensor([1.0, -2.0, 0.5, 3.0])
    z = make_dist(logits).rsample()
    (grad,) = torch.autograd.grad((((z * w).sum(-1) - 0.3) ** 2).sum(), logits)
    return grad


def test_rao_blackwellized_variance_is_at_most_straight_through():
    st = _per_sample_grads(lambda lg: StraightThroughOneHotCategorical(0.5, logits=lg))
    rao = _per_sample_grads(lambda lg: GumbelRaoOneHotCategorical(0.5, logits=lg, num_samples=20))
    # same estimator in expectation (E[rao] = E[E[st | D]] = E[st]); ~5 standard errors
    se = ((st.var(0) + rao.var(0)) / len(st)).sqrt()
    assert ((rao.mean(0) - st.mean(0)).abs() < 5 * se).all()
    # Var(rao) = Var(E[st | D]) + E[Var(st | D)] / K <= Var(st); measured ratio ~0.55
    assert rao.var(0).sum() < 0.8 * st.var(0).sum()


def test_bernoulli_rao_variance_is_at_most_straight_through():
    def grads(k):
        logits = torch.full((20000,), 0.4, requires_grad=True)
        z = GumbelRaoBernoulli(0.5, logits=logits, num_samples=k).rsample()
        assert ((z == 0) | (z == 1)).all()
        return torch.autograd.grad(((z - 0.8) ** 2).sum(), logits)[0]

    one, many = grads(1), grads(20)
    assert abs(one.mean() - many.mean()) < 5 * ((one.var() + many.var()) / len(one)).sqrt()
    assert many.var() < 0.8 * one.var()  # measured ratio ~0.6


def test_messenger_keeps_the_discrete_distribution():
    def model():
        with pyro.plate("data", 4):
            pyro.sample("z", dist.OneHotCategorical(logits=torch.zeros(2, 3)).to_event(1))
            pyro.sample("b", dist.Bernoulli(logits=torch.zeros(5)).to_event(1))

    tr = pyro.poutine.trace(
        RelaxMessenger(Relaxation.gumbel_rao(0.5, num_samples=3))(model)
    ).get_trace()
    assert type(tr.nodes["z"]["fn"].base_dist).__name__ == "GumbelRaoOneHotCategorical"
    assert type(tr.nodes["b"]["fn"].base_dist).__name__ == "GumbelRaoBernoulli"
    assert isinstance(discrete_counterpart(tr.nodes["z"]["fn"]).base_dist, dist.OneHotCategorical)
    assert tr.nodes["z"]["value"].shape == (4, 2, 3)


@pytest.mark.parametrize("latent", ["2x3", "3b"])
def test_elbo_estimates_the_discrete_elbo(latent):
    """The loss is log p(x|z) at an exact sample plus the exact KL: unbiased for -ELBO."""
    vae = DiscreteVAE(4, latent, encoder_hidden=(3,), prior="learned")
    with torch.no_grad():
        vae.prior_logits.normal_()
    x = torch.tensor([[1.0, 0.0, 1.0, 1.0], [0.0, 0.0, 1.0, 0.0]]).repeat(250, 1)
    exact = EnumeratedELBO().loss(vae.model, vae.guide, x)
    elbo = GumbelRaoELBO(num_samples=5, temperature=0.5)
    losses = torch.tensor([elbo.loss(vae.model, vae.guide, x) for _ in range(4)])
    # measured sd of one loss over these 500 data: 1.1 (2x3) and 2.7 (3b) nats; the KL term
    # (~160 nats here) is exact, so a wrong KL is caught
    assert abs(losses.mean() - exact) < 10.0
    elbo.loss_and_grads(vae.model, vae.guide, x)
    assert all(torch.isfinite(p.grad).all() for p in vae.parameters())

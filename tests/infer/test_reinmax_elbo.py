"""ReinMaxELBO (Liu et al. 2023, arXiv:2304.08612) against brute-force enumeration.

On the categorical model of ``_models`` (x ~ Normal(flatten(z) @ w, sigma)), log p(x | z) is
quadratic in z, where ReinMax at tau = 1 is unbiased: the mean of its gradient over many
particles must match the exact ELBO gradient (autograd through the sum over every z), while
straight-through Gumbel-softmax, first order, is measurably off on the same model.
"""

from __future__ import annotations

import pyro
import pyro.distributions as dist
import pytest
import torch
from _models import (
    brute_log_joint,
    brute_log_q,
    categorical_guide,
    categorical_model,
    categorical_params,
    load_params,
)

from pyro_dvae import DiscreteVAE
from pyro_dvae.infer import (
    EnumeratedELBO,
    GumbelSoftmaxELBO,
    ReinMaxELBO,
    Relaxation,
    RelaxMessenger,
    build_elbo,
    discrete_counterpart,
)

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny tensors: single-threaded

N, K, D, B = 2, 3, 2, 3
SIGMA = 0.7
model, guide = categorical_model(SIGMA), categorical_guide


def exact_gradients(p):
    leaves = {n: p[n].clone().requires_grad_() for n in ("prior", "w", "q")}
    log_p = brute_log_joint(leaves["prior"], leaves["w"], p["x"], SIGMA)
    log_q = brute_log_q(leaves["q"])
    (-(log_q.exp() * (log_p - log_q)).sum()).backward()
    return {n: t.grad for n, t in leaves.items()}


def mean_and_se(elbo, p, repeats=20):
    """Mean over ``repeats`` gradient estimates (each averaged over the ELBO's particles) and
    its standard error, per parameter."""
    draws = {n: [] for n in ("prior", "w", "q")}
    for _ in range(repeats):
        load_params(p)
        elbo.loss_and_grads(model, guide, p["x"])
        store = pyro.get_param_store()
        for n in draws:
            draws[n].append(store.get_param(n).unconstrained().grad.clone())
    out = {}
    for n, values in draws.items():
        stacked = torch.stack(values)
        out[n] = (stacked.mean(0), stacked.std(0) / repeats**0.5)
    return out


@pytest.mark.slow  # seconds of training or sampling: make test-fast skips it
def test_gradient_is_unbiased_for_a_decoder_quadratic_in_z():
    p = categorical_params(N, K, D, B, seed=3, w_scale=2.0, x_scale=1.5)
    exact = exact_gradients(p)
    particles = dict(num_particles=2000, vectorize_particles=True, max_plate_nesting=1)
    ours = mean_and_se(ReinMaxELBO(temperature=1.0, **particles), p)
    for n, (mean, se) in ours.items():
        # 5 standard errors plus float64 rounding (the prior's gradient, from the analytic KL,
        # has none); measured max |z| ~3 over the 30 random entries
        assert ((mean - exact[n]).abs() <= 5 * se + 1e-9).all(), n
    st = GumbelSoftmaxELBO(temperature=1.0, kl="analytic", straight_through=True, **particles)
    theirs = mean_and_se(st, p)
    mean, se = theirs["q"]
    z = ((mean - exact["q"]).abs() / se).max()
    assert z > 20  # the test tells a biased estimator apart (measured max |z| ~160 here)


def test_loss_estimates_the_discrete_elbo():
    """The loss is -log p(x | D) at an exact sample D ~ q plus the exact KL: unbiased for -ELBO."""
    vae = DiscreteVAE(4, "2x3", encoder_hidden=(3,), prior="learned")
    with torch.no_grad():
        vae.prior_logits.normal_()
    x = torch.tensor([[1.0, 0.0, 1.0, 1.0], [0.0, 0.0, 1.0, 0.0]]).repeat(250, 1)
    exact = EnumeratedELBO().loss(vae.model, vae.guide, x)
    elbo = ReinMaxELBO(temperature=1.5)
    losses = torch.tensor([elbo.loss(vae.model, vae.guide, x) for _ in range(4)])
    # one loss over these 500 data has sd ~1.1 nats; the KL (~160 nats) is exact
    assert abs(losses.mean() - exact) < 10.0
    elbo.loss_and_grads(vae.model, vae.guide, x)
    assert all(torch.isfinite(p.grad).all() for p in vae.parameters())


def test_messenger_keeps_the_discrete_distribution():
    def model():
        with pyro.plate("data", 4):
            pyro.sample("z", dist.OneHotCategorical(logits=torch.zeros(2, 3)).to_event(1))
            pyro.sample("b", dist.Bernoulli(logits=torch.zeros(5)).to_event(1))

    tr = pyro.poutine.trace(RelaxMessenger(Relaxation.reinmax(1.0))(model)).get_trace()
    assert type(tr.nodes["z"]["fn"].base_dist).__name__ == "ReinMaxOneHotCategorical"
    assert type(tr.nodes["b"]["fn"].base_dist).__name__ == "ReinMaxBernoulli"
    assert isinstance(discrete_counterpart(tr.nodes["z"]["fn"]).base_dist, dist.OneHotCategorical)
    b = tr.nodes["b"]["value"]
    assert b.shape == (4, 5) and ((b == 0) | (b == 1)).all()


def test_named_estimator_builds_reinmax():
    elbo = build_elbo("reinmax", temperature=1.5, num_particles=3)
    assert isinstance(elbo, ReinMaxELBO)
    assert elbo.temperature == 1.5 and elbo.kl == "analytic" and elbo.num_particles == 3

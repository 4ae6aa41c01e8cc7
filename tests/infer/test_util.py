"""``sampled_prior_kl`` and the objectives that use it, on a model with an autoregressive prior.

Ground truth: the ELBO summed over all 2^N codes with the prior's chain rule written out
(``_models.autoregressive_brute_elbo``). Monte Carlo checks compare a mean of independent
estimates with the exact value within 5 standard errors (fixed seeds).
"""

from __future__ import annotations

import itertools

import pyro
import pyro.distributions as dist
import pytest
import torch
from _models import (
    AR_PARAM_NAMES,
    F64,
    autoregressive_brute_elbo,
    autoregressive_brute_log_prior,
    autoregressive_model,
    autoregressive_params,
    bernoulli_guide,
    load_params,
)

from pyro_dvae.distributions import (
    AutoregressiveBernoulli,
    AutoregressiveOneHotCategorical,
    Bernoulli,
    OneHotCategorical,
)
from pyro_dvae.infer import (
    GumbelRaoELBO,
    GumbelSoftmaxELBO,
    ReinMaxELBO,
    ScoreFunctionELBO,
    discrete_elbo,
    exact_log_likelihood,
    sampled_prior_kl,
)

pytestmark = pytest.mark.usefixtures("one_thread")

N, D, B, SIGMA = 3, 2, 4, 0.8
model = autoregressive_model(SIGMA)


def exact_kl(q_logits, prior):
    """[B] KL(q || p) summed over every code."""
    q = Bernoulli(logits=q_logits).to_event(1)
    codes = torch.tensor(list(itertools.product((0.0, 1.0), repeat=N)), dtype=F64)
    log_q = q.log_prob(codes.unsqueeze(1))  # [2^N, B]
    return (log_q.exp() * (log_q - prior.log_prob(codes).unsqueeze(1))).sum(0)


def test_sampled_prior_kl_is_unbiased_and_beats_the_plain_estimate():
    p = autoregressive_params(N, D, B)
    prior = AutoregressiveBernoulli(p["bias"], p["weight"])
    q = Bernoulli(logits=p["q"]).to_event(1)
    z = q.sample((20_000,))  # [S, B, N]
    rb = sampled_prior_kl(q, prior, z)
    plain = q.log_prob(z) - prior.log_prob(z)
    truth = exact_kl(p["q"], prior)
    se = rb.std(0) / rb.shape[0] ** 0.5
    assert bool(((rb.mean(0) - truth).abs() < 5 * se).all()), (rb.mean(0), truth, se)
    assert bool((rb.var(0) < 0.5 * plain.var(0)).all())  # the per-unit sums remove noise


def test_sampled_prior_kl_of_one_hot_groups_is_unbiased():
    g = torch.Generator().manual_seed(5)
    prior = AutoregressiveOneHotCategorical(
        torch.randn(3, 4, generator=g, dtype=F64), 2 * torch.randn(12, 12, generator=g, dtype=F64)
    )
    q = OneHotCategorical(logits=torch.randn(B, 3, 4, generator=g, dtype=F64)).to_event(1)
    codes = prior.enumerate_support(expand=False)  # [64, 3, 4]
    log_q = q.log_prob(codes.unsqueeze(1))
    truth = (log_q.exp() * (log_q - prior.log_prob(codes).unsqueeze(1))).sum(0)
    rb = sampled_prior_kl(q, prior, q.sample((20_000,)))
    se = rb.std(0) / rb.shape[0] ** 0.5
    assert bool(((rb.mean(0) - truth).abs() < 5 * se).all()), (rb.mean(0), truth, se)


def test_sampled_prior_kl_is_exact_for_a_factorized_prior_and_none_without_conditionals():
    p = autoregressive_params(N, D, B)
    q = Bernoulli(logits=p["q"]).to_event(1)
    factorized = AutoregressiveBernoulli(p["bias"], torch.zeros(N, N, dtype=F64))
    analytic = torch.distributions.kl_divergence(q, Bernoulli(logits=p["bias"]).to_event(1))
    for z in q.sample((3,)):
        torch.testing.assert_close(sampled_prior_kl(q, factorized, z), analytic)
    assert sampled_prior_kl(q, Bernoulli(logits=p["bias"]).to_event(1), q.sample()) is None


def test_sampled_prior_kl_under_expand_and_mask():
    p = autoregressive_params(N, D, B)
    q = Bernoulli(logits=p["q"]).to_event(1)
    prior = AutoregressiveBernoulli(p["bias"], p["weight"])
    z = q.sample()
    mask = torch.tensor([True, False, True, False])
    masked = dist.MaskedDistribution(prior.expand((B,)), mask)
    kl = sampled_prior_kl(q, masked, z)
    torch.testing.assert_close(kl[mask], sampled_prior_kl(q, prior, z)[mask])
    assert bool((kl[~mask] == 0).all())


def _estimates(elbo, p, names, repeats=12, replicas=400):
    """``repeats`` independent (loss, gradient) estimates, each on the data replicated
    ``replicas`` times (independent samples per replica), scaled to one copy of the data."""
    x = p["x"].repeat(replicas, 1)
    tiled = dict(p, q=p["q"].repeat(replicas, 1))
    losses, grads = [], {n: [] for n in names}
    for _ in range(repeats):
        load_params(tiled, AR_PARAM_NAMES)
        losses.append(elbo.loss_and_grads(model, bernoulli_guide, x) / replicas)
        store = pyro.get_param_store()
        for n in names:
            g = store.get_param(n).unconstrained().grad / replicas
            grads[n].append(g.reshape(replicas, B, N).sum(0) if n == "q" else g)
    return torch.tensor(losses, dtype=F64), {n: torch.stack(v) for n, v in grads.items()}


def _exact(p):
    leaves = {n: p[n].clone().requires_grad_() for n in AR_PARAM_NAMES}
    loss = -autoregressive_brute_elbo(
        leaves["bias"], leaves["weight"], leaves["w"], leaves["q"], p["x"], SIGMA
    ).sum()
    loss.backward()
    return float(loss.detach()), {n: t.grad for n, t in leaves.items()}


def _assert_within(estimates, truth, what):
    mean = estimates.mean(0)
    se = estimates.std(0) / estimates.shape[0] ** 0.5 + 1e-9
    assert bool(((mean - truth).abs() <= 5 * se).all()), (what, mean, truth, se)


@pytest.mark.parametrize(
    "elbo",
    [
        GumbelSoftmaxELBO(1.0, kl="analytic", straight_through=True),
        GumbelRaoELBO(num_samples=4),
        ReinMaxELBO(),
    ],
    ids=["st-gumbel", "gumbel-rao", "reinmax"],
)
def test_hard_sample_elbos_are_unbiased_in_value_and_model_gradient(elbo):
    """The loss is the negative ELBO at an exact sample z ~ q, so its mean is the exact
    -ELBO; the model's parameters do not move z, so their gradients are unbiased too (the
    guide's gradient is each estimator's own, biased approximation)."""
    p = autoregressive_params(N, D, B, seed=1)
    exact_loss, exact_grads = _exact(p)
    losses, grads = _estimates(elbo, p, ("bias", "weight", "w"))
    _assert_within(losses, torch.tensor(exact_loss, dtype=F64), "loss")
    for n in ("bias", "w"):
        _assert_within(grads[n], exact_grads[n], n)
    lower = torch.ones(N, N, dtype=torch.bool).tril(-1)
    _assert_within(grads["weight"][:, lower], exact_grads["weight"][lower], "weight")
    assert bool((grads["weight"][:, ~lower] == 0).all())  # the upper triangle is unused


def test_score_function_gradient_of_the_guide_is_unbiased():
    p = autoregressive_params(N, D, B, seed=2)
    _, exact_grads = _exact(p)
    _, grads = _estimates(ScoreFunctionELBO(baseline="none"), p, ("q",), replicas=2000)
    _assert_within(grads["q"], exact_grads["q"], "q")


@pytest.mark.slow  # seconds of training or sampling: make test-fast skips it
def test_discrete_elbo_and_exact_log_likelihood_with_an_autoregressive_prior():
    p = autoregressive_params(N, D, B, seed=3)
    load_params(p, AR_PARAM_NAMES)
    truth = autoregressive_brute_elbo(p["bias"], p["weight"], p["w"], p["q"], p["x"], SIGMA)
    draws = torch.stack([discrete_elbo(model, bernoulli_guide, p["x"]) for _ in range(4000)])
    _assert_within(draws, truth, "discrete_elbo")
    # exact log p(x) = log sum_z p(z) p(x | z), the prior from its chain-rule formula
    codes = torch.tensor(list(itertools.product((0.0, 1.0), repeat=N)), dtype=F64)
    log_prior = torch.stack(
        [autoregressive_brute_log_prior(p["bias"], p["weight"], c) for c in codes]
    )
    log_lik = torch.stack(
        [
            torch.logsumexp(
                log_prior + dist.Normal(codes @ p["w"], SIGMA).to_event(1).log_prob(p["x"][b]), 0
            )
            for b in range(B)
        ]
    )
    torch.testing.assert_close(exact_log_likelihood(model, p["x"]), log_lik)

"""Tests for the ReinMax distributions (Liu et al. 2023, arXiv:2304.08612).

Ground truths: the categorical probabilities (chi-square tests of the forward samples), the
gradient of E_q[f(D)] summed over every D by brute force (float64), and the estimator's formula
written out with explicit softmax Jacobians.
"""

from __future__ import annotations

import pytest
import torch

from pyro_dvae.distributions import (
    ReinMaxBernoulli,
    ReinMaxOneHotCategorical,
    reinmax_bernoulli,
    reinmax_one_hot,
)

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny tensors: single-threaded

F64 = torch.float64
CHI2_999_DF3 = 16.266  # chi-square 0.999 quantile, 3 degrees of freedom


def jacobian(p: torch.Tensor) -> torch.Tensor:
    """The softmax Jacobian diag(p) - p p^T."""
    return torch.diag(p) - torch.outer(p, p)


def expected_gradient(estimator, logits, f) -> torch.Tensor:
    """sum_D q(D) d f(estimator(logits, D)) / d logits: the estimator's mean, exactly (its only
    randomness is D)."""
    k = logits.shape[-1]
    q = torch.softmax(logits, -1)
    total = torch.zeros_like(logits)
    for i in range(k):
        lg = logits.detach().clone().requires_grad_(True)
        (grad,) = torch.autograd.grad(f(estimator(lg, torch.eye(k, dtype=F64)[i])), lg)
        total += q[i].detach() * grad
    return total


def true_gradient(logits, f) -> torch.Tensor:
    """d/d logits of sum_D q(D) f(D), by brute force over the vertices."""
    lg = logits.detach().clone().requires_grad_(True)
    k = lg.shape[-1]
    q = torch.softmax(lg, -1)
    value = sum(q[i] * f(torch.eye(k, dtype=F64)[i]) for i in range(k))
    return torch.autograd.grad(value, lg)[0]


def straight_through_pi0(logits, hard):
    """The first-order estimator ReinMax improves on: D + softmax(logits) - sg(softmax)."""
    soft = torch.softmax(logits, -1)
    return hard + soft - soft.detach()


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_expected_gradient_is_exact_for_quadratic_functions(seed):
    """At tau = 1, E[ReinMax gradient] = grad E_q[f(D)] for any quadratic f (Heun's method is
    exact there); the first-order straight-through estimator is off by O(1) on the same f."""
    g = torch.Generator().manual_seed(seed)
    k = 4
    logits = torch.randn(k, generator=g, dtype=F64)
    a, b = torch.randn(k, k, generator=g, dtype=F64), torch.randn(k, generator=g, dtype=F64)

    def f(z):
        return z @ a @ z + b @ z

    exact = true_gradient(logits, f)
    ours = expected_gradient(lambda lg, d: reinmax_one_hot(lg, d, 1.0), logits, f)
    torch.testing.assert_close(ours, exact, rtol=0, atol=1e-12)
    st = expected_gradient(straight_through_pi0, logits, f)
    assert (st - exact).abs().max() > 1e-2  # the test can tell a first-order estimator apart


def test_expected_gradient_is_not_exact_for_cubic_functions():
    """Second order, not exact: a cubic f leaves a bias (so the quadratic test is not vacuous)."""
    logits = torch.tensor([0.3, -1.0, 0.8], dtype=F64)
    c = torch.tensor([1.0, -2.0, 3.0], dtype=F64)

    def f(z):
        return ((c * z).sum()) ** 3

    ours = expected_gradient(lambda lg, d: reinmax_one_hot(lg, d, 1.0), logits, f)
    assert (ours - true_gradient(logits, f)).abs().max() > 1e-2


@pytest.mark.parametrize("tau", [0.5, 1.0, 2.0])
def test_gradient_matches_the_written_out_formula(tau):
    """grad = (2 J(pi1) - J(pi0) / 2) df/dz with pi1 = (D + softmax(logits / tau)) / 2."""
    logits = torch.tensor([0.5, -0.2, 1.1, -2.0], dtype=F64, requires_grad=True)
    hard = torch.tensor([0.0, 0.0, 1.0, 0.0], dtype=F64)
    w = torch.tensor([1.0, -3.0, 0.5, 2.0], dtype=F64)
    y = reinmax_one_hot(logits, hard, tau)
    assert torch.equal(y, hard)
    (grad,) = torch.autograd.grad((y * w).sum(), logits)
    pi0 = torch.softmax(logits.detach(), -1)
    pi1 = (hard + torch.softmax(logits.detach() / tau, -1)) / 2
    torch.testing.assert_close(grad, (2 * jacobian(pi1) - jacobian(pi0) / 2) @ w)


@pytest.mark.parametrize("tau", [0.5, 1.0, 3.0])
def test_bernoulli_is_the_two_category_case(tau):
    logits = torch.tensor([-3.0, -0.4, 0.0, 0.7, 5.0], dtype=F64, requires_grad=True)
    bits = torch.tensor([1.0, 0.0, 1.0, 1.0, 0.0], dtype=F64)
    w = torch.tensor([0.5, -1.0, 2.0, 1.5, -0.3], dtype=F64)
    z = reinmax_bernoulli(logits, bits, tau)
    assert torch.equal(z, bits)
    (ours,) = torch.autograd.grad(((z * w) ** 2).sum(), logits)
    pair = torch.stack([torch.zeros_like(logits), logits], -1)  # category 1 has logit `logits`
    one_hot = torch.stack([1 - bits, bits], -1)
    z2 = reinmax_one_hot(pair, one_hot, tau)[..., 1]
    (reference,) = torch.autograd.grad(((z2 * w) ** 2).sum(), logits)
    torch.testing.assert_close(ours, reference)


@pytest.mark.parametrize("tau", [1.0, 2.0])
def test_extreme_logits_give_finite_gradients_in_float32(tau):
    logits = torch.tensor([[-80.0, 0.0, 80.0], [40.0, -40.0, 0.0]], requires_grad=True)
    hard = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])  # improbable samples
    y = reinmax_one_hot(logits, hard, tau)
    bits = reinmax_bernoulli(logits, (logits < 0).float(), tau)
    (grad,) = torch.autograd.grad((y * torch.arange(3.0)).sum() + bits.sum(), logits)
    assert torch.isfinite(grad).all()


def test_samples_are_exactly_one_hot_and_categorical():
    probs = torch.tensor([0.1, 0.2, 0.3, 0.4])
    d = ReinMaxOneHotCategorical(1.0, logits=probs.log())
    z = d.rsample(torch.Size([20000]))
    assert ((z == 0) | (z == 1)).all() and (z.sum(-1) == 1).all()
    counts = z.sum(0)
    expected = 20000 * probs
    assert float(((counts - expected) ** 2 / expected).sum()) < CHI2_999_DF3


def test_bernoulli_samples_are_exact_bits_with_the_right_rate():
    d = ReinMaxBernoulli(1.5, logits=torch.full((40000,), -0.85))
    z = d.rsample()
    assert ((z == 0) | (z == 1)).all()
    p = torch.sigmoid(torch.tensor(-0.85))
    assert abs(z.mean() - p) < 5 * (p * (1 - p) / 40000).sqrt()  # ~5 standard errors


@pytest.mark.parametrize("cls", [ReinMaxOneHotCategorical, ReinMaxBernoulli])
def test_expand_keeps_the_estimator_and_temperature(cls):
    logits = torch.zeros(3, 4) if cls is ReinMaxOneHotCategorical else torch.zeros(3)
    d = cls(2.0, logits=logits)
    e = d.expand(torch.Size([5]) + d.batch_shape)
    assert type(e) is cls and float(e.temperature) == 2.0
    assert e.rsample().shape == (5,) + tuple(logits.shape)
    assert e.rsample(torch.Size([2])).shape == (2, 5) + tuple(logits.shape)
    value = e.sample()
    torch.testing.assert_close(e.log_prob(value), d.log_prob(value))  # the discrete log-mass


def test_sample_gradient_mean_matches_the_exact_sum_over_samples():
    """rsample draws D ~ q and applies the estimator: the average of its gradients over many
    draws converges to the exact expected gradient (~5 standard errors)."""
    base = torch.tensor([0.4, -0.6, 1.0], dtype=F64)
    w = torch.tensor([2.0, -1.0, 0.5], dtype=F64)

    def f(z):
        return ((z * w).sum(-1) - 0.3) ** 2

    logits = base.expand(50000, 3).clone().requires_grad_(True)
    z = ReinMaxOneHotCategorical(1.0, logits=logits).rsample()
    (grads,) = torch.autograd.grad(f(z).sum(), logits)
    exact = expected_gradient(lambda lg, d: reinmax_one_hot(lg, d, 1.0), base, f)
    se = grads.std(0) / len(grads) ** 0.5
    assert ((grads.mean(0) - exact).abs() < 5 * se).all()
    # and that is the true gradient (f is quadratic in z)
    torch.testing.assert_close(exact, true_gradient(base, f), rtol=0, atol=1e-12)


def test_groups_are_independent_estimators():
    """Each group's gradient depends on its own sample and logits only, as if alone."""
    logits = torch.randn(3, 4, dtype=F64, requires_grad=True)
    hard = torch.eye(4, dtype=F64)[[0, 2, 3]]
    (grad,) = torch.autograd.grad(reinmax_one_hot(logits, hard, 1.0)[1, 2], logits)
    assert (grad[[0, 2]] == 0).all() and (grad[1] != 0).all()
    lg = logits.detach()[1].clone().requires_grad_(True)
    alone = reinmax_one_hot(lg, hard[1], 1.0)
    torch.testing.assert_close(torch.autograd.grad(alone[2], lg)[0], grad[1])

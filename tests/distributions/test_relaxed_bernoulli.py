"""Tests for the binary Concrete (relaxed Bernoulli) and straight-through Bernoulli.

Ground truths: torch's ``RelaxedBernoulli`` where finite, the logistic density of the logit
(Maddison et al. 2017, eq. 26) written out here, quadrature on (0, 1), and Bernoulli
probabilities.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch.distributions import RelaxedBernoulli

from pyro_dvae.distributions import ConcreteBernoulli, StraightThroughBernoulli, base_value_of

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny tensors: single-threaded


def binary_concrete_log_density_from_logit(logits, tau, x):
    """Reference: log p(y) at y = sigmoid(x): logistic density of L = tau x - logits, times tau,
    times the Jacobian |dx/dy| = 1 / (y (1 - y))."""
    logits, x = logits.double(), x.double()
    noise = tau * x - logits
    log_px = math.log(tau) + F.logsigmoid(noise) + F.logsigmoid(-noise)
    log_y, log_1my = F.logsigmoid(x), F.logsigmoid(-x)
    return log_px - log_y - log_1my


def quadrature(half_width=36.0, step=0.01):
    """y = sigmoid(t) on a regular t grid with weight step * dy/dt = step * y (1 - y); |t| <= 36
    keeps float64 y below 1 (sigmoid(37) rounds to 1, where the value has no density)."""
    t = torch.arange(-half_width, half_width + step / 2, step, dtype=torch.float64)
    y = torch.sigmoid(t)
    return y, step * y * (1 - y)


@pytest.mark.parametrize("tau", [0.3, 1.0, 2.5])
def test_log_prob_matches_torch_reference(tau):
    torch.manual_seed(0)
    logits = torch.randn(2, 3, dtype=torch.float64)
    ours = ConcreteBernoulli(tau, logits=logits)
    ref = RelaxedBernoulli(torch.tensor(tau, dtype=torch.float64), logits=logits)
    for value in (ref.sample((6,)), ours.rsample((6,))):
        value = value.clamp(1e-6, 1 - 1e-6)  # keep the reference away from its clamping region
        expected = ref.log_prob(value)
        assert torch.isfinite(expected).all()
        # float64, interior values: agree to 1e-8 relative
        torch.testing.assert_close(ours.log_prob(value), expected, rtol=1e-8, atol=1e-8)


@pytest.mark.parametrize("tau", [0.4, 1.0, 3.0])
def test_normalizes_on_unit_interval(tau):
    d = ConcreteBernoulli(tau, logits=torch.tensor(0.7, dtype=torch.float64))
    # t = logit(y) has a logistic density with scale 1/tau: tails beyond |t| = 36 are < exp(-14)
    y, w = quadrature()
    mass = float((d.log_prob(y).exp() * w).sum())
    assert abs(mass - 1.0) < 1e-3


@pytest.mark.parametrize("tau", [0.5, 1.5])
def test_sample_mean_matches_quadrature_mean(tau):
    d = ConcreteBernoulli(tau, logits=torch.tensor(0.9, dtype=torch.float64))
    y, w = quadrature()
    dens = d.log_prob(y).exp() * w
    mean_quad = float((dens * y).sum() / dens.sum())
    torch.manual_seed(1)
    n = 40000
    s = d.sample((n,))
    z = (float(s.mean()) - mean_quad) / (float(s.std()) / math.sqrt(n))
    # |z| < 4.5 (p ~ 7e-6); sampling at the wrong temperature shifts the mean by > 0.01 (z > 6)
    assert abs(z) < 4.5, (float(s.mean()), mean_quad)
    assert abs(mean_quad - torch.sigmoid(torch.tensor(0.9)).item()) > 0.005


def test_low_temperature_log_prob_finite_and_exact():
    torch.manual_seed(2)
    logits = torch.tensor([8.0, -8.0, 0.0, 3.0], requires_grad=True)
    d = ConcreteBernoulli(0.01, logits=logits)
    y = d.rsample((50,))
    assert ((y == 0) | (y == 1)).any()  # saturated in float32
    x = base_value_of(y)
    lp = d.log_prob_from_base(x)
    assert torch.isfinite(lp).all()
    lp.sum().backward()
    assert torch.isfinite(logits.grad).all()
    expected = binary_concrete_log_density_from_logit(logits.detach(), 0.01, x.detach())
    torch.testing.assert_close(lp.detach().double(), expected, rtol=1e-4, atol=1e-3)
    # the saturated value itself does not determine the density: a one-line error
    with pytest.raises(ValueError, match="exactly 0 or 1") as err:
        d.log_prob(y)
    assert "\n" not in str(err.value)


def test_log_prob_depends_on_the_value_not_the_tensor_object():
    """Issue #19 item 1: a copy of an rsample() was scored from its value clamped to
    [eps, 1 - eps] while the original used a cached logit: up to 234 nats apart at tau = 0.05.
    Now every tensor is scored from its numbers, exactly (float64 reference), and values that
    saturated to 0 or 1 raise instead of returning a number."""
    torch.manual_seed(0)
    d = ConcreteBernoulli(0.05, logits=2 * torch.randn(()))
    torch.manual_seed(1)
    y = d.rsample((1000,))
    inside = (y > 0) & (y < 1)
    assert 50 < int(inside.sum()) < 1000 and bool((y[inside] < 1e-7).any())
    for value in (y, y.clone()):
        with pytest.raises(ValueError, match="exactly 0 or 1"):
            d.log_prob(value)
    y_in = y[inside]
    lp = d.log_prob(y_in)
    assert torch.equal(lp, d.log_prob(y_in.clone()))
    y64 = y_in.double()
    expected = binary_concrete_log_density_from_logit(
        d.logits.double(), 0.05, y64.log() - (-y64).log1p()
    )
    # was 71 nats off (values below 1.2e-7 clamped to it); now float32 accuracy
    torch.testing.assert_close(lp.double(), expected, rtol=1e-5, atol=1e-3)


def test_expand_and_invalid_temperature():
    d = ConcreteBernoulli(0.5, logits=torch.zeros(3))
    e = d.expand((2, 3))
    assert isinstance(e, ConcreteBernoulli) and e.batch_shape == (2, 3)
    y = e.rsample()
    assert torch.isfinite(e.log_prob(y)).all()
    for bad in (0.0, -0.5):
        with pytest.raises(ValueError, match="temperature"):
            ConcreteBernoulli(bad, logits=torch.zeros(3))


# ---------------------------------------------------------------- straight-through ----------
def _binary(z):
    return bool(((z == 0) | (z == 1)).all())


def test_straight_through_samples_exactly_binary_after_shape_ops():
    torch.manual_seed(3)
    d = StraightThroughBernoulli(0.5, logits=torch.randn(3))
    samples = {
        "plain": d.rsample((4,)),
        "expand": d.expand((5, 3)).rsample(),
        "expand_by": d.expand_by((2,)).rsample((4,)),
        "to_event": d.to_event(1).rsample((2,)),
        "expand_to_event": d.expand((2, 3)).to_event(2).rsample((3,)),
    }
    assert samples["expand"].shape == (5, 3)
    assert samples["expand_by"].shape == (4, 2, 3)
    for name, z in samples.items():
        assert _binary(z), name
        assert _binary(z.reshape(-1)), name
        assert _binary(z[..., 1:]), name
        assert _binary(z.unsqueeze(-1).expand(*z.shape, 2)), name
    assert isinstance(d.expand((5, 3)), StraightThroughBernoulli)


@pytest.mark.parametrize("tau", [0.1, 1.0, 5.0])
def test_straight_through_frequencies_match_bernoulli(tau):
    logits = torch.tensor([-1.5, 0.0, 0.4, 2.0])
    d = StraightThroughBernoulli(tau, logits=logits)
    torch.manual_seed(4)
    n = 20000
    freq = d.rsample((n,)).mean(0)
    p = torch.sigmoid(logits)
    z = (freq - p) / (p * (1 - p) / n).sqrt()
    # |z| < 3.9 per unit: family-wise significance ~4e-4 over 4 units (Bonferroni).
    # Thresholding sigmoid((l + L) / tau) at 1/2 gives exactly P = sigmoid(l) at any tau; a wrong
    # threshold or probs^(1/tau) gives |z| in the tens
    assert z.abs().max() < 3.9, (freq, p)


def test_straight_through_gradient_equals_concrete_gradient():
    logits = torch.randn(4, requires_grad=True)
    w = torch.randn(4)
    torch.manual_seed(5)
    z = StraightThroughBernoulli(0.6, logits=logits).rsample((3,))
    (w * z).sum().backward()
    grad_st = logits.grad.clone()
    logits.grad = None
    torch.manual_seed(5)
    y = ConcreteBernoulli(0.6, logits=logits).rsample((3,))
    (w * y).sum().backward()
    assert torch.equal(z.detach(), (y.detach() > 0.5).float())
    torch.testing.assert_close(grad_st, logits.grad, rtol=1e-6, atol=1e-7)
    assert grad_st.abs().sum() > 0


def test_straight_through_log_prob_is_bernoulli_log_mass():
    torch.manual_seed(6)
    logits = torch.randn(5)
    d = StraightThroughBernoulli(0.5, logits=logits)
    z = d.rsample((7,))
    expected = z * F.logsigmoid(logits) + (1 - z) * F.logsigmoid(-logits)
    torch.testing.assert_close(d.log_prob(z), expected)
    d_probs = StraightThroughBernoulli(0.5, probs=torch.sigmoid(logits))
    torch.testing.assert_close(d_probs.log_prob(z), expected, rtol=1e-5, atol=1e-5)

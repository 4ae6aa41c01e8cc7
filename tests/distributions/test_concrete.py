"""Tests for the Concrete (Gumbel-softmax) and straight-through one-hot categorical distributions.

Ground truths are independent: torch's ``RelaxedOneHotCategorical`` where it is finite, the
ExpConcrete density of Maddison et al. (2017, eq. 24) written out here in float64, numerical
quadrature on the simplex, and the categorical probabilities themselves.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch.distributions import RelaxedOneHotCategorical

from pyro_dvae.distributions import (
    ConcreteOneHotCategorical,
    StraightThroughOneHotCategorical,
    base_value_of,
    straight_through,
)

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny tensors: single-threaded


# chi-square 0.999 quantiles (significance 1e-3), from standard tables
CHI2_999 = {3: 16.266, 4: 18.467}


def exp_concrete_log_density(logits, tau, log_y):
    """Reference: log p(y) of the Concrete distribution in terms of log y (float64)."""
    logits, log_y = logits.double(), log_y.double()
    k = logits.shape[-1]
    score = logits - tau * log_y
    return (
        math.lgamma(k)
        + (k - 1) * math.log(tau)
        + score.sum(-1)
        - k * score.logsumexp(-1)
        - log_y.sum(-1)
    )


def simplex_grid(k: int, half_width: float, step: float):
    """Points of the open (k-1)-simplex as softmax([t, 0]) on a regular grid of logits t, with the
    quadrature weight step^(k-1) * |d y_{1:k-1} / d t| = step^(k-1) * prod_i y_i."""
    t = torch.arange(-half_width, half_width + step / 2, step, dtype=torch.float64)
    grids = torch.meshgrid(*([t] * (k - 1)), indexing="ij")
    t_full = torch.stack(
        [g.reshape(-1) for g in grids] + [torch.zeros(t.numel() ** (k - 1), dtype=torch.float64)],
        -1,
    )
    log_y = t_full - t_full.logsumexp(-1, keepdim=True)
    y = log_y.exp()
    weight = step ** (k - 1) * y.prod(-1)
    return y, weight


# ---------------------------------------------------------------- Concrete: density ----------
@pytest.mark.parametrize("tau", [0.3, 1.0, 2.5])
@pytest.mark.parametrize("batch", [(), (3,), (2, 3)])
def test_log_prob_matches_torch_reference(tau, batch):
    torch.manual_seed(1)
    logits = torch.randn(*batch, 5, dtype=torch.float64)
    ours = ConcreteOneHotCategorical(tau, logits=logits)
    ref = RelaxedOneHotCategorical(torch.tensor(tau, dtype=torch.float64), logits=logits)
    # values without a cached log-sample (drawn by torch) and with one (drawn by us)
    for value in (ref.sample((7,)), ours.rsample((7,))):
        expected = ref.log_prob(value)
        assert torch.isfinite(expected).all()
        # float64, no underflow at these temperatures: agree to 1e-9 relative
        torch.testing.assert_close(ours.log_prob(value), expected, rtol=1e-9, atol=1e-9)


def test_log_prob_matches_formula_and_probs_parameterization():
    torch.manual_seed(2)
    logits = torch.randn(4, 6, dtype=torch.float64)
    d = ConcreteOneHotCategorical(0.7, logits=logits)
    y = d.rsample((3,))
    expected = exp_concrete_log_density(logits, 0.7, y.log())
    torch.testing.assert_close(d.log_prob(y), expected, rtol=1e-9, atol=1e-9)
    d_probs = ConcreteOneHotCategorical(0.7, probs=logits.softmax(-1))
    torch.testing.assert_close(d_probs.log_prob(y), expected, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("tau", [0.5, 1.0, 2.0])
def test_normalizes_k2_quadrature(tau):
    logits = torch.tensor([0.8, -0.4], dtype=torch.float64)
    d = ConcreteOneHotCategorical(tau, logits=logits)
    # substitution y1 = sigmoid(t): the t-density decays like exp(-tau |t|), so |t| <= 100 leaves
    # a tail below exp(-50); trapezoid step 0.01 on a smooth integrand: error << 1e-6
    y, weight = simplex_grid(2, 100.0, 0.01)
    mass = (d.log_prob(y).exp() * weight).sum()
    assert abs(float(mass) - 1.0) < 1e-3


@pytest.mark.parametrize("tau", [0.7, 1.5])
def test_normalizes_k3_on_2_simplex(tau):
    logits = torch.tensor([0.5, -1.0, 0.2], dtype=torch.float64)
    d = ConcreteOneHotCategorical(tau, logits=logits)
    # 2-D logit grid [-40, 40]^2, step 0.08: tails < exp(-0.7*40), discretization error << 1e-3
    y, weight = simplex_grid(3, 40.0, 0.08)
    mass = (d.log_prob(y).exp() * weight).sum()
    assert abs(float(mass) - 1.0) < 1e-3


@pytest.mark.parametrize("k, tau", [(2, 0.6), (3, 1.0)])
def test_sample_mean_matches_quadrature_mean(k, tau):
    logits = torch.tensor([1.0, -0.5, 0.3][:k], dtype=torch.float64)
    d = ConcreteOneHotCategorical(tau, logits=logits)
    y_grid, weight = simplex_grid(2, 100.0, 0.01) if k == 2 else simplex_grid(3, 40.0, 0.08)
    dens = d.log_prob(y_grid).exp() * weight
    mean_quad = (dens[:, None] * y_grid).sum(0) / dens.sum()
    torch.manual_seed(3)
    n = 40000
    samples = d.sample((n,))
    mean_mc, se = samples.mean(0), samples.std(0) / math.sqrt(n)
    z = (mean_mc - mean_quad) / se
    # |z| < 4.5 on every coordinate (two-sided p ~ 7e-6 each); a temperature or logit-scale bug
    # moves E[y] by > 0.01 here, i.e. z > 5 with se ~ 1.5e-3
    assert z.abs().max() < 4.5, (mean_mc, mean_quad, z)
    # the Concrete mean is not the categorical probability vector (documented difference)
    assert (mean_quad - logits.softmax(-1)).abs().max() > 0.01


def test_pyro_issue_3304_low_temperature_many_classes():
    torch.manual_seed(0)
    logits = torch.randn(1000, requires_grad=True)
    d = ConcreteOneHotCategorical(torch.tensor(0.1), logits=logits)
    y = d.rsample()
    assert (y == 0).any()  # some classes underflow to exactly 0 in float32 (4 with this seed)
    log_value = base_value_of(y)
    lp = d.log_prob_from_base(log_value)
    assert torch.isfinite(lp)
    lp.backward()
    assert torch.isfinite(logits.grad).all()
    # exact value: the ExpConcrete density at the log-sample (float64 reference), 1e-4 relative
    expected = exp_concrete_log_density(logits.detach(), 0.1, log_value.detach())
    assert float(lp.detach()) == pytest.approx(float(expected), rel=1e-4)
    # the value itself no longer determines the density: a one-line error, not a number
    with pytest.raises(ValueError, match="exactly 0") as err:
        d.log_prob(y)
    assert "\n" not in str(err.value)
    # the torch/pyro reference gives NaN at the very same value (pyro-ppl #3304)
    ref = RelaxedOneHotCategorical(torch.tensor(0.1), logits=logits)
    assert torch.isnan(ref.log_prob(y))


def test_log_prob_of_own_low_temperature_samples_passes_validation():
    """rsample() output must lie in the support that log_prob() validates (the simplex, checked
    by torch to 1e-6). In float32 at tau = 0.1 the exponentiated log-sample can miss a unit sum
    by more than that, and log_prob(rsample()) then raises ValueError."""
    torch.manual_seed(0)
    d = ConcreteOneHotCategorical(0.1, logits=torch.randn(1000, 4), validate_args=True)
    y = d.rsample((20,))
    d._validate_sample(y)  # must not raise
    assert torch.isfinite(d.log_prob_from_base(base_value_of(y))).all()
    # rows without entries that underflowed to 0 are scored from their values, validated
    rows = ~(y == 0).any(-1)
    assert 0.99 < float(rows.float().mean()) < 1.0
    single = ConcreteOneHotCategorical(0.1, logits=d.logits[0], validate_args=True)
    assert torch.isfinite(single.log_prob(y[:, 0][rows[:, 0]])).all()
    # and through Pyro's default validation path (pyro.enable_validation)
    d2 = ConcreteOneHotCategorical(0.1, logits=torch.randn(1000, 4))
    d2._validate_sample(d2.rsample((20,)))


def test_log_prob_under_other_concrete_from_the_base_value():
    """A relaxed prior scoring the guide's sample (as in the relaxed-KL ELBO) stays finite."""
    torch.manual_seed(4)
    q = ConcreteOneHotCategorical(0.1, logits=torch.randn(8, 500))
    p = ConcreteOneHotCategorical(0.1, logits=torch.zeros(8, 500))
    y = q.rsample()
    assert (y == 0).any()
    assert torch.isfinite(p.log_prob_from_base(base_value_of(y))).all()
    # also after expand (the base value is drawn with the expanded shape)
    y2 = q.expand((2, 8)).rsample()
    assert torch.isfinite(p.expand((2, 8)).log_prob_from_base(base_value_of(y2))).all()


def _reference_at_value(logits: torch.Tensor, tau: float, y: torch.Tensor) -> torch.Tensor:
    """float64 density at the simplex point that the float numbers of ``y`` round."""
    log_y = y.double().log()
    return exp_concrete_log_density(logits, tau, log_y - log_y.logsumexp(-1, keepdim=True))


def test_log_prob_depends_on_the_value_not_the_tensor_object():
    """Issue #19 item 1: a clone, slice or float64 copy of an rsample() got another density
    (666.19 vs 612.70 nats in the issue's example, up to 250 nats over 1000 samples), because
    log_prob read a log-sample cached on the original tensor and clamped the copy's subnormal
    entries. Now every copy gets the density of its numbers, accurate against float64, and values
    with entries that underflowed to 0 raise instead of returning a number."""
    torch.manual_seed(0)
    logits = 2 * torch.randn(10)
    d = ConcreteOneHotCategorical(0.1, logits=logits)
    torch.manual_seed(81)
    y = d.rsample()  # the issue's example: two entries underflowed to exactly 0
    assert int((y == 0).sum()) == 2
    for value in (y, y.clone(), y[None][0]):
        with pytest.raises(ValueError, match="exactly 0"):
            d.log_prob(value)
    # float32 rounding misses a unit sum by more than torch's float64 tolerance: no validation
    d64 = ConcreteOneHotCategorical(0.1, logits=logits.double(), validate_args=False)
    torch.manual_seed(1)
    worst, undetermined = 0.0, 0
    for _ in range(1000):
        y = d.rsample()
        if bool((y == 0).any()):
            undetermined += 1
            with pytest.raises(ValueError, match="exactly 0"):
                d.log_prob(y.clone())
            continue
        lp = d.log_prob(y)
        assert torch.equal(lp, d.log_prob(y.clone())) and torch.equal(lp, d.log_prob(y[None])[0])
        expected = _reference_at_value(logits.double(), 0.1, y)
        worst = max(worst, abs(float(lp) - float(expected)))
        # the float64 copy of the same numbers: the same density to float32 accuracy
        assert float(d64.log_prob(y.double())) == pytest.approx(float(expected), abs=1e-6)
    assert 0 < undetermined < 200  # 59 of 1000 with this seed
    assert worst < 1e-3, worst  # was 40 nats: subnormal entries clamped to 1.2e-38


def test_expand_and_invalid_temperature():
    d = ConcreteOneHotCategorical(0.5, logits=torch.zeros(3, 4))
    e = d.expand((2, 3))
    assert isinstance(e, ConcreteOneHotCategorical)
    assert e.batch_shape == (2, 3) and e.event_shape == (4,)
    assert float(e.temperature) == 0.5
    assert e.rsample().shape == (2, 3, 4)
    for bad in (0.0, -1.0):
        with pytest.raises(ValueError, match="temperature"):
            ConcreteOneHotCategorical(bad, logits=torch.zeros(3))


# ---------------------------------------------------------------- straight-through ----------
def _is_one_hot(z: torch.Tensor) -> bool:
    return bool(((z == 0) | (z == 1)).all() and (z.sum(-1) == 1).all())


def test_straight_through_samples_exactly_one_hot_after_shape_ops():
    torch.manual_seed(5)
    d = StraightThroughOneHotCategorical(0.5, logits=torch.randn(3, 4))
    samples = {
        "plain": d.rsample(),
        "sample_shape": d.rsample((6,)),
        "expand": d.expand((5, 3)).rsample(),
        "expand_by": d.expand_by((2,)).rsample((4,)),
        "to_event": d.to_event(1).rsample((2,)),
        "expand_to_event": d.expand((2, 3)).to_event(2).rsample(),
    }
    assert samples["expand"].shape == (5, 3, 4)
    assert samples["expand_by"].shape == (4, 2, 3, 4)
    assert samples["to_event"].shape == (2, 3, 4)
    for name, z in samples.items():
        assert z.dtype == torch.float32, name
        assert _is_one_hot(z), name
        assert _is_one_hot(z.reshape(-1, 4)), name
        assert _is_one_hot(z[..., 1, :]), name
        assert _is_one_hot(z.flatten(-2).unflatten(-1, (3, 4))), name
        assert _is_one_hot(z.detach().clone()), name
    assert isinstance(d.expand((5, 3)), StraightThroughOneHotCategorical)


@pytest.mark.parametrize("tau", [0.1, 1.0, 5.0])
def test_straight_through_frequencies_match_categorical(tau):
    probs = torch.tensor([0.1, 0.2, 0.3, 0.4])
    d = StraightThroughOneHotCategorical(tau, probs=probs)
    torch.manual_seed(6)
    n = 20000
    counts = d.rsample((n,)).sum(0)
    expected = n * probs
    chi2 = float(((counts - expected) ** 2 / expected).sum())
    # Pearson chi-square, 3 dof, significance 1e-3 (quantile 16.27). Drawing the hard value from a
    # tempered softmax instead of Gumbel-max (e.g. tau=0.1) gives chi2 in the thousands.
    assert chi2 < CHI2_999[3], (counts, expected)


def test_straight_through_gradient_equals_concrete_gradient():
    logits = torch.randn(2, 5, requires_grad=True)
    w = torch.randn(2, 5)
    tau = 0.4
    torch.manual_seed(7)
    z = StraightThroughOneHotCategorical(tau, logits=logits).rsample((3,))
    (w * z).sum().backward()
    grad_st = logits.grad.clone()
    logits.grad = None
    torch.manual_seed(7)  # same Gumbel noise
    y = ConcreteOneHotCategorical(tau, logits=logits).rsample((3,))
    (w * y).sum().backward()
    grad_concrete = logits.grad.clone()
    # forward: the hard value is the argmax of the very soft sample (Gumbel-max)
    assert torch.equal(z.detach(), torch.nn.functional.one_hot(y.argmax(-1), 5).float())
    assert not torch.equal(z.detach(), y.detach())
    torch.testing.assert_close(grad_st, grad_concrete, rtol=1e-6, atol=1e-7)
    assert grad_st.abs().sum() > 0


def test_straight_through_log_prob_is_discrete_log_mass():
    torch.manual_seed(8)
    logits = torch.randn(3, 4)
    d = StraightThroughOneHotCategorical(0.5, logits=logits)
    z = d.rsample((5,))
    expected = (z * logits.log_softmax(-1)).sum(-1)
    torch.testing.assert_close(d.log_prob(z), expected)
    enum = d.enumerate_support()
    torch.testing.assert_close(d.log_prob(enum).exp().sum(0), torch.ones(3))


def test_straight_through_function():
    soft = torch.tensor([0.2, 0.8], requires_grad=True)
    hard = torch.tensor([0.0, 1.0])
    out = straight_through(soft, hard)
    assert torch.equal(out.detach(), hard)
    (out * torch.tensor([3.0, -2.0])).sum().backward()
    assert torch.equal(soft.grad, torch.tensor([3.0, -2.0]))

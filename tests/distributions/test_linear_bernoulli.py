"""LinearBernoulliVector: log-density and gradients equal Pyro's ``Bernoulli(logits).to_event(1)``
with ``logits = F.linear(features, weight, bias)`` written out, on every path (enumerated
configurations against a data batch with H < D and H >= D, training batches, particles)."""

from __future__ import annotations

import pyro.distributions as dist
import pytest
import torch
import torch.nn.functional as F

from pyro_dvae.distributions import LinearBernoulliVector
from pyro_dvae.distributions.linear_bernoulli import softplus_row_sums

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny tensors: single-threaded

F64 = torch.float64
TOL = dict(rtol=1e-10, atol=1e-10)  # float64, sums of <= 12 terms


def reference(features, weight, bias, x):
    """Pyro's elementwise Bernoulli log-mass, summed over the D pixels."""
    logits = F.linear(features, weight, bias)
    return dist.Bernoulli(logits=logits).to_event(1).log_prob(x)


def tensors(h, d, seed=0):
    g = torch.Generator().manual_seed(seed)
    weight = torch.randn(d, h, generator=g, dtype=F64)
    bias = torch.randn(d, generator=g, dtype=F64)
    return weight, bias, g


@pytest.mark.parametrize(
    "features_shape, x_shape",
    [
        ((5, 1, 3), (4, 12)),  # enumerated configurations vs a data batch, H < D (one product)
        ((2, 5, 1, 3), (4, 12)),  # with an extra leading dim
        ((5, 1, 3), (1, 12)),  # a single datum
        ((4, 3), (4, 12)),  # a training batch: same batch shape
        ((6, 4, 3), (4, 12)),  # particles
    ],
)
def test_log_prob_and_gradients_equal_pyro_bernoulli(features_shape, x_shape):
    h, d = features_shape[-1], x_shape[-1]
    weight, bias, g = tensors(h, d)
    features = torch.randn(features_shape, generator=g, dtype=F64)
    x = torch.bernoulli(torch.full(x_shape, 0.4, dtype=F64), generator=g)
    leaves = [t.clone().requires_grad_() for t in (features, weight, bias)]
    ours = LinearBernoulliVector(*leaves).log_prob(x)
    ref_leaves = [t.clone().requires_grad_() for t in (features, weight, bias)]
    expected = reference(*ref_leaves, x)
    assert ours.shape == expected.shape
    torch.testing.assert_close(ours, expected, **TOL)
    seed_grad = torch.randn(ours.shape, generator=g, dtype=F64)
    (ours * seed_grad).sum().backward()
    (expected * seed_grad).sum().backward()
    for a, b in zip(leaves, ref_leaves):
        torch.testing.assert_close(a.grad, b.grad, **TOL)


def test_wide_features_take_the_logits_path_and_agree():
    """H >= D: the product over H would cost more than over D; the result is the same."""
    weight, bias, g = tensors(h=20, d=6)
    features = torch.randn(7, 1, 20, generator=g, dtype=F64)
    x = torch.bernoulli(torch.full((3, 6), 0.5, dtype=F64), generator=g)
    torch.testing.assert_close(
        LinearBernoulliVector(features, weight, bias).log_prob(x),
        reference(features, weight, bias, x),
        **TOL,
    )


def test_expand_sample_mean_and_entropy_match_the_logits():
    weight, bias, g = tensors(h=3, d=5)
    features = torch.randn(4, 1, 3, generator=g, dtype=F64)
    d = LinearBernoulliVector(features, weight, bias).expand([4, 6])
    assert type(d) is LinearBernoulliVector
    assert d.batch_shape == (4, 6) and d.event_shape == (5,)
    logits = F.linear(features, weight, bias)
    torch.testing.assert_close(d.mean, torch.sigmoid(logits).expand(4, 6, 5))
    assert d.sample().shape == (4, 6, 5)
    assert set(d.sample().unique().tolist()) <= {0.0, 1.0}
    torch.testing.assert_close(
        d.entropy(), dist.Bernoulli(logits=logits).to_event(1).entropy().expand(4, 6), **TOL
    )
    x = torch.bernoulli(torch.full((6, 5), 0.5, dtype=F64), generator=g)
    torch.testing.assert_close(d.log_prob(x), reference(features, weight, bias, x), **TOL)
    with pytest.raises(RuntimeError):
        d.expand([3, 6])


def test_mismatched_shapes_are_refused():
    with pytest.raises(ValueError, match="do not match"):
        LinearBernoulliVector(torch.zeros(2, 4), torch.zeros(5, 3), torch.zeros(5))


@pytest.mark.parametrize("num_configs", [1, 7, 64, 150])
def test_blocked_normalizer_without_autograd_equals_softplus_sum(monkeypatch, num_configs):
    """The in-place, block-by-block normalizer (no autograd, CPU) equals the plain expression,
    including a last block shorter than the others; forcing 8-row blocks makes every case
    above 8 configurations cross block boundaries."""
    import pyro_dvae.distributions.linear_bernoulli as module

    monkeypatch.setattr(module, "_BLOCK_BYTES", 8 * 12 * 8)  # 8 rows of 12 float64 logits
    monkeypatch.setattr(module, "_MIN_BLOCK_ROWS", 1)
    weight, bias, g = tensors(3, 12)
    features = torch.randn(num_configs, 1, 3, generator=g, dtype=F64)
    x = torch.bernoulli(torch.full((4, 12), 0.5, dtype=F64), generator=g)
    with torch.no_grad():
        blocked = softplus_row_sums(features[:, 0], weight, bias)
        ours = LinearBernoulliVector(features, weight, bias).log_prob(x)
    plain = F.softplus(F.linear(features[:, 0], weight, bias)).sum(-1, keepdim=True)
    torch.testing.assert_close(blocked, plain, **TOL)
    torch.testing.assert_close(ours, reference(features, weight, bias, x), **TOL)


def test_normalizer_keeps_autograd_when_gradients_are_needed():
    weight, bias, g = tensors(3, 12)
    weight.requires_grad_(True)
    features = torch.randn(9, 3, generator=g, dtype=F64)
    out = softplus_row_sums(features, weight, bias)
    (grad,) = torch.autograd.grad(out.sum(), weight)
    expected = torch.sigmoid(F.linear(features, weight, bias)).T @ features  # d/dW sum softplus
    torch.testing.assert_close(grad, expected, **TOL)

"""Broadcast-efficient discrete distributions equal Pyro's own, value for value; their KL rules
agree with float64 references and stay finite where torch's return inf."""

from __future__ import annotations

import pyro.distributions as dist
import pytest
import torch
import torch.nn.functional as F
from torch.distributions import kl_divergence

from pyro_dvae.distributions import (
    Bernoulli,
    BernoulliVector,
    BroadcastingIndependent,
    OneHotCategorical,
    broadcast_dot,
    collapse_expanded,
)
from pyro_dvae.infer import relax_distribution


@pytest.mark.parametrize(
    "a_shape, b_shape",
    [((5, 1, 3), (4, 3)), ((4, 3), (4, 3)), ((2, 1, 6, 3), (1, 7, 1, 3)), ((3,), (2, 3))],
)
def test_broadcast_dot_equals_elementwise_sum(a_shape, b_shape):
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(a_shape, generator=g), torch.randn(b_shape, generator=g)
    torch.testing.assert_close(broadcast_dot(a, b), (a * b).sum(-1), rtol=1e-5, atol=1e-5)


def test_broadcast_dot_scores_expanded_operands_once():
    """An operand expanded (stride 0) over the dim the other one broadcasts along is contracted
    un-expanded; the result equals the elementwise sum and is a stride-0 view over that dim."""
    g = torch.Generator().manual_seed(1)
    a = torch.randn(5, 1, 3, generator=g)
    b = torch.randn(3, generator=g).expand(4, 3)
    got = broadcast_dot(a, b)
    torch.testing.assert_close(got, (a * b).sum(-1), rtol=1e-6, atol=1e-6)
    assert got.shape == (5, 4) and got.stride()[1] == 0


def test_collapse_expanded_keeps_values_and_drops_repeats():
    base = torch.randn(1, 3)
    t = base.expand(100, 3)
    c = collapse_expanded(t)
    assert c.shape == (1, 3) and torch.equal(c, base)
    assert collapse_expanded(torch.randn(4, 3)).shape == (4, 3)  # nothing expanded


@pytest.mark.parametrize("expand", [None, [6, 4], [1, 6, 4]])
def test_bernoulli_log_prob_equals_pyro(expand):
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(4, generator=g) * 3
    ours, ref = Bernoulli(logits=logits), dist.Bernoulli(logits=logits)
    if expand is not None:
        ours, ref = ours.expand(expand), ref.expand(expand)
    value = torch.bernoulli(torch.full((5, 1, 4), 0.5), generator=g)  # enumerated-style values
    got = ours.log_prob(value)
    torch.testing.assert_close(got, ref.log_prob(value), rtol=1e-6, atol=1e-6)
    assert got.shape == torch.broadcast_shapes(value.shape, ours.batch_shape)


def test_bernoulli_relaxes_and_enumerates_like_pyros():
    d = Bernoulli(logits=torch.zeros(3)).to_event(1)
    assert type(relax_distribution(d, 0.5).base_dist).__name__ == "ConcreteBernoulli"
    support = d.base_dist.enumerate_support(expand=False)
    assert support.reshape(-1).tolist() == [0.0, 1.0]


def test_bernoulli_vector_equals_independent_bernoulli():
    g = torch.Generator().manual_seed(2)
    logits = torch.randn(3, 1, 7, generator=g)
    x = torch.bernoulli(torch.full((4, 7), 0.3), generator=g)
    ref = dist.Bernoulli(logits=logits).to_event(1).log_prob(x)
    torch.testing.assert_close(BernoulliVector(logits).log_prob(x), ref, rtol=1e-5, atol=1e-5)


def test_one_hot_categorical_equals_pyro():
    g = torch.Generator().manual_seed(3)
    logits = torch.randn(4, 2, 5, generator=g)
    values = torch.eye(5)[torch.randint(5, (6, 1, 2), generator=g)]
    ref = dist.OneHotCategorical(logits=logits).log_prob(values)
    torch.testing.assert_close(OneHotCategorical(logits=logits).log_prob(values), ref)


@pytest.mark.parametrize(
    "logits_shape, expand, event_dims",
    [
        ((4,), [6, 4], 1),  # a prior inside a data plate
        ((1,), [6, 4], 1),  # the event dim itself expanded: each copy still counts
        ((1,), [6, 4], 2),
        ((3, 4), [2, 3, 4], 1),  # nothing to collapse in the event dims
    ],
)
def test_to_event_sums_before_broadcasting_and_equals_pyro(logits_shape, expand, event_dims):
    g = torch.Generator().manual_seed(4)
    logits = torch.randn(logits_shape, generator=g)
    ours = Bernoulli(logits=logits).expand(expand).to_event(event_dims)
    ref = dist.Bernoulli(logits=logits).expand(expand).to_event(event_dims)
    assert isinstance(ours, BroadcastingIndependent)
    value_shape = (5,) + (1,) * (len(expand) - 1) + (expand[-1],)
    value = torch.bernoulli(torch.full(value_shape, 0.5), generator=g)
    got = ours.log_prob(value)
    torch.testing.assert_close(got, ref.log_prob(value), rtol=1e-6, atol=1e-5)
    assert got.shape == ref.log_prob(value).shape
    bigger = ours.expand([7] + list(ours.batch_shape))
    assert isinstance(bigger, BroadcastingIndependent)
    value = value.unsqueeze(1)  # [5, 1, 1, D] against batch [7, ...]
    torch.testing.assert_close(
        bigger.log_prob(value), ref.expand([7] + list(ref.batch_shape)).log_prob(value)
    )


def test_one_hot_categorical_to_event_equals_pyro():
    g = torch.Generator().manual_seed(5)
    logits = torch.randn(3, 5, generator=g)
    values = torch.eye(5)[torch.randint(5, (6, 1, 3), generator=g)]
    ours = OneHotCategorical(logits=logits).expand([4, 3]).to_event(1)
    ref = dist.OneHotCategorical(logits=logits).expand([4, 3]).to_event(1)
    assert isinstance(ours, BroadcastingIndependent)
    torch.testing.assert_close(ours.log_prob(values), ref.log_prob(values))
    plain = OneHotCategorical(logits=logits)
    assert plain.to_event(0) is plain  # no event dims added: the distribution itself


@pytest.mark.parametrize(
    "logits_shape, expand, index_shape",
    [
        ((3, 5), [4, 3], (6, 1, 3)),  # prior [N, K] in a data plate of 4, 6 enumerated values
        ((2, 1, 5), [2, 4], (6, 2, 1)),  # expanded in a middle dim
    ],
)
def test_one_hot_categorical_expanded_logits_are_scored_once(logits_shape, expand, index_shape):
    """A prior inside a data plate: the values are scored against the un-expanded logits and the
    result broadcast as a stride-0 view (no work per datum), equal to Pyro's."""
    g = torch.Generator().manual_seed(6)
    logits = torch.randn(logits_shape, generator=g)
    k = logits_shape[-1]
    values = torch.eye(k)[torch.randint(k, index_shape, generator=g)]
    ours = OneHotCategorical(logits=logits).expand(expand)
    ref = dist.OneHotCategorical(logits=logits).expand(expand)
    got = ours.log_prob(values)
    torch.testing.assert_close(got, ref.log_prob(values))
    assert got.shape == ref.log_prob(values).shape
    repeated = [n for n, s in zip(got.shape, got.stride()) if n > 1 and s == 0]
    assert repeated, f"log_prob {tuple(got.shape)} was evaluated per datum: {got.stride()}"


def test_bernoulli_kl_matches_float64_reference_and_stays_finite():
    """Against the definition p log(p/q) + (1-p) log((1-p)/(1-q)) in float64 (probabilities from
    the logits), including prior logits past float32's sigmoid rounding (|logit| > 16.6),
    where torch's own rule returns inf (the ReinMax Bernoulli MNIST run hit it at step 39k)."""
    a = torch.tensor([-3.0, 0.0, 2.5, 0.3, -0.7, 30.0, -30.0])
    b = torch.tensor([1.0, 17.0, -20.0, 40.0, -40.0, 30.0, -29.0])
    ours = kl_divergence(Bernoulli(logits=a), Bernoulli(logits=b))
    a64, b64 = a.double(), b.double()
    p = torch.sigmoid(a64)
    log_q, log_1mq = F.logsigmoid(b64), F.logsigmoid(-b64)
    ref = p * (p.log() - log_q) + (1 - p) * (torch.log1p(-p) - log_1mq)
    torch.testing.assert_close(ours.double(), ref, rtol=1e-5, atol=1e-6)
    assert torch.isinf(kl_divergence(dist.Bernoulli(logits=a), dist.Bernoulli(logits=b))).any()
    # gradients are finite too, and exact 0/1 probabilities in p contribute their limit 0
    a.requires_grad_(True)
    kl_divergence(Bernoulli(logits=a), Bernoulli(logits=b)).sum().backward()
    assert torch.isfinite(a.grad).all()
    edge = kl_divergence(Bernoulli(probs=torch.tensor([0.0, 1.0])), Bernoulli(logits=b[:2]))
    torch.testing.assert_close(edge, torch.stack([F.softplus(b[0]), F.softplus(-b[1])]))


def test_one_hot_categorical_kl_matches_reference_and_stays_finite():
    p_logits = torch.tensor([[0.0, 1.0, -2.0], [3.0, 0.0, 0.0]])
    q_logits = torch.tensor([[0.5, -0.5, 0.0], [0.0, -120.0, 1.0]])  # q.probs underflows to 0
    ours = kl_divergence(OneHotCategorical(logits=p_logits), OneHotCategorical(logits=q_logits))
    lp, lq = p_logits.double().log_softmax(-1), q_logits.double().log_softmax(-1)
    torch.testing.assert_close(ours.double(), (lp.exp() * (lp - lq)).sum(-1))
    theirs = kl_divergence(
        dist.OneHotCategorical(logits=p_logits), dist.OneHotCategorical(logits=q_logits)
    )
    assert torch.isinf(theirs[1])
    # a category impossible under p contributes 0; impossible under q alone, inf
    p0 = OneHotCategorical(probs=torch.tensor([0.5, 0.5, 0.0]))
    assert torch.isfinite(kl_divergence(p0, OneHotCategorical(logits=q_logits[0])))
    q0 = OneHotCategorical(probs=torch.tensor([0.5, 0.0, 0.5]))
    assert torch.isinf(kl_divergence(OneHotCategorical(logits=p_logits[0]), q0))

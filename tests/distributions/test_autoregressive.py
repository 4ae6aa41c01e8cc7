"""Autoregressive priors against a hand-written chain rule over every code of a tiny prior."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from pyro_dvae.distributions import (
    MAX_ENUMERATED_CODES,
    AutoregressiveBernoulli,
    AutoregressiveOneHotCategorical,
    Bernoulli,
    OneHotCategorical,
)
from pyro_dvae.errors import DVAEInputError, LatentSpaceTooLargeError

N = 4


def params(seed=0, batch=()):
    g = torch.Generator().manual_seed(seed)
    bias = torch.randn(batch + (N,), generator=g, dtype=torch.float64)
    weight = 2 * torch.randn(N, N, generator=g, dtype=torch.float64)
    return bias, weight


def chain_rule_log_prob(bias, weight, z):
    """log p(z) = sum_i log Bernoulli(z_i; sigmoid(b_i + sum_{j<i} W_ij z_j)), unit by unit."""
    total = 0.0
    for i in range(len(z)):
        logit = float(bias[i]) + sum(float(weight[i, j]) * z[j] for j in range(i))
        p1 = 1.0 / (1.0 + math.exp(-logit))
        total += math.log(p1 if z[i] == 1 else 1.0 - p1)
    return total


def all_codes():
    return torch.tensor(list(itertools.product((0.0, 1.0), repeat=N)), dtype=torch.float64)


def test_log_prob_matches_chain_rule_and_ignores_upper_triangle():
    bias, weight = params()
    p = AutoregressiveBernoulli(bias, weight)
    codes = all_codes()
    expected = torch.tensor(
        [chain_rule_log_prob(bias, weight, z.tolist()) for z in codes], dtype=torch.float64
    )
    torch.testing.assert_close(p.log_prob(codes), expected, rtol=0, atol=1e-12)
    upper_changed = AutoregressiveBernoulli(bias, weight + torch.ones(N, N).triu())
    torch.testing.assert_close(upper_changed.log_prob(codes), expected, rtol=0, atol=1e-12)


def test_normalized_over_enumerated_support():
    p = AutoregressiveBernoulli(*params(1))
    support = p.enumerate_support()
    assert support.shape == (2**N, N)
    assert len({tuple(z.tolist()) for z in support}) == 2**N  # every code once
    assert abs(float(p.log_prob(support).exp().sum()) - 1.0) < 1e-12


def test_zero_weight_is_the_factorized_bernoulli():
    bias, _ = params(2)
    p = AutoregressiveBernoulli(bias, torch.zeros(N, N, dtype=torch.float64))
    codes = all_codes()
    expected = Bernoulli(logits=bias).to_event(1).log_prob(codes)
    torch.testing.assert_close(p.log_prob(codes), expected, rtol=0, atol=1e-12)


def test_conditionals_reproduce_log_prob():
    p = AutoregressiveBernoulli(*params(3))
    codes = all_codes()
    torch.testing.assert_close(p.conditionals(codes).log_prob(codes), p.log_prob(codes))


def test_sample_frequencies_chi_square():
    """Counts of 40k sampled codes against the chain-rule probabilities: the chi-square
    statistic (15 degrees of freedom) stays under its 0.999 quantile, 37.7."""
    bias, weight = params(4)
    p = AutoregressiveBernoulli(bias, weight)
    n = 40_000
    z = p.sample((n,))
    assert z.shape == (n, N) and bool(((z == 0) | (z == 1)).all())
    index = (z * 2 ** torch.arange(N - 1, -1, -1, dtype=z.dtype)).sum(-1).long()
    counts = torch.bincount(index, minlength=2**N).double()
    probs = torch.tensor(
        [math.exp(chain_rule_log_prob(bias, weight, c.tolist())) for c in all_codes()]
    ).double()
    chi2 = float(((counts - n * probs) ** 2 / (n * probs)).sum())
    assert chi2 < 37.7, chi2


def test_batched_bias_expand_and_batched_weight():
    bias, weight = params(5, batch=(3,))
    p = AutoregressiveBernoulli(bias, weight)
    assert p.batch_shape == (3,) and p.sample((2,)).shape == (2, 3, N)
    e = AutoregressiveBernoulli(bias[0], weight).expand((5, 3))
    assert e.batch_shape == (5, 3)
    z = all_codes()[:5].unsqueeze(1)  # [5, 1, N] against batch [5, 3]
    assert e.log_prob(z).shape == (5, 3)
    batched = AutoregressiveBernoulli(bias, weight.expand(3, N, N))
    torch.testing.assert_close(batched.log_prob(all_codes()[:3]), p.log_prob(all_codes()[:3]))
    assert p.enumerate_support(expand=False).shape == (2**N, 1, N)


def test_rejects_relaxed_values_and_bad_shapes():
    p = AutoregressiveBernoulli(*params(), validate_args=True)
    with pytest.raises(DVAEInputError, match="values other than 0 and 1"):
        p.log_prob(torch.full((N,), 0.3, dtype=torch.float64))
    with pytest.raises(DVAEInputError, match="weight must have shape"):
        AutoregressiveBernoulli(torch.zeros(3), torch.zeros(3, 4))
    with pytest.raises(DVAEInputError, match="bias must have 1 trailing code dims"):
        AutoregressiveBernoulli(torch.tensor(0.0), torch.zeros(1, 1))


def test_enumeration_refuses_large_codes():
    n = MAX_ENUMERATED_CODES.bit_length()  # 2^n codes, one over the limit
    p = AutoregressiveBernoulli(torch.zeros(n), torch.zeros(n, n))
    with pytest.raises(LatentSpaceTooLargeError, match="2,097,152 codes, too many to enumerate"):
        p.enumerate_support()
    c = AutoregressiveOneHotCategorical(torch.zeros(7, 8), torch.zeros(56, 56))
    with pytest.raises(LatentSpaceTooLargeError, match="2,097,152 codes"):
        c.enumerate_support()


# ------------------------------------------------------------------ one-hot groups ----------
G, K = 2, 3


def categorical_params(seed=0):
    g = torch.Generator().manual_seed(seed)
    return (
        torch.randn(G, K, generator=g, dtype=torch.float64),
        2 * torch.randn(G * K, G * K, generator=g, dtype=torch.float64),
    )


def categorical_chain_rule(bias, weight, idx):
    """log p(z) for the code with category ``idx[g]`` in group g: group by group, logits of
    group g = bias[g] + sum over earlier groups h of the weight column of h's category."""
    total = 0.0
    for g in range(G):
        logits = [
            float(bias[g, c]) + sum(float(weight[g * K + c, h * K + idx[h]]) for h in range(g))
            for c in range(K)
        ]
        log_norm = math.log(sum(math.exp(v) for v in logits))
        total += logits[idx[g]] - log_norm
    return total


def test_categorical_log_prob_normalization_and_factorized_limit():
    bias, weight = categorical_params()
    p = AutoregressiveOneHotCategorical(bias, weight)
    combos = list(itertools.product(range(K), repeat=G))
    codes = torch.stack([torch.eye(K, dtype=torch.float64)[list(c)] for c in combos])
    expected = torch.tensor(
        [categorical_chain_rule(bias, weight, c) for c in combos], dtype=torch.float64
    )
    torch.testing.assert_close(p.log_prob(codes), expected, rtol=0, atol=1e-12)
    support = p.enumerate_support()
    assert support.shape == (K**G, G, K)
    assert len({tuple(z.flatten().tolist()) for z in support}) == K**G
    assert abs(float(p.log_prob(support).exp().sum()) - 1.0) < 1e-12
    factorized = AutoregressiveOneHotCategorical(bias, torch.zeros_like(weight))
    torch.testing.assert_close(
        factorized.log_prob(codes), OneHotCategorical(logits=bias).to_event(1).log_prob(codes)
    )
    torch.testing.assert_close(p.conditionals(codes).log_prob(codes), p.log_prob(codes))


def test_categorical_sample_frequencies_chi_square():
    """30k samples over the 9 codes: chi-square (8 degrees of freedom) under its 0.999
    quantile, 26.1."""
    bias, weight = categorical_params(1)
    p = AutoregressiveOneHotCategorical(bias, weight)
    n = 30_000
    z = p.sample((n,))
    assert z.shape == (n, G, K) and bool((z.sum(-1) == 1).all())
    index = (z.argmax(-1) * torch.tensor([K, 1])).sum(-1)
    counts = torch.bincount(index, minlength=K**G).double()
    combos = list(itertools.product(range(K), repeat=G))
    probs = torch.tensor([math.exp(categorical_chain_rule(bias, weight, c)) for c in combos])
    chi2 = float(((counts - n * probs.double()) ** 2 / (n * probs.double())).sum())
    assert chi2 < 26.1, chi2


def test_categorical_rejects_bad_shapes_and_values():
    with pytest.raises(DVAEInputError, match=r"weight must have shape \[..., 6, 6\]"):
        AutoregressiveOneHotCategorical(torch.zeros(2, 3), torch.zeros(3, 3))
    p = AutoregressiveOneHotCategorical(torch.zeros(2, 3), torch.zeros(6, 6), validate_args=True)
    with pytest.raises(DVAEInputError, match="values other than 0 and 1"):
        p.log_prob(torch.full((2, 3), 1 / 3))

"""Tiny models shared by the tests in this folder, with their brute-force ground truth.

Three families, each small enough to sum over every latent configuration:

* the *categorical* model: ``z`` = N one-hot groups of K with logits ``pyro.param("prior")``,
  ``x ~ Normal(flatten(z) @ pyro.param("w"), sigma)``; the guide has per-datum logits
  ``pyro.param("q")`` (:func:`categorical_params`, :func:`categorical_model`, ...);
* the *two-site* model: ``z1 ~ Bernoulli(0.3)``, ``z2 | z1 ~ Cat(softmax(C + z1 A))``,
  ``x ~ Normal(z1 W1 + z2 W2, 0.8)`` on the fixed data ``X2`` (:func:`two_site_model`,
  :func:`two_site_log_joint`, :func:`chain_guide`);
* the scalar *mixture*: three unit-variance normals, ``z ~ Cat(softmax(prior_logits))``, with
  the linear encoder ``q(z | x) = Cat(softmax(x * enc_w + enc_b))`` (:func:`mixture_model`,
  :func:`mixture_guide`).

The ground truth is written out by hand here, never computed by the code under test.
"""

from __future__ import annotations

import itertools
import math

import pyro
import pyro.distributions as dist
import torch

F64 = torch.float64
PARAM_NAMES = ("prior", "w", "q")


# ------------------------------------------------------------- categorical model --------------
def categorical_params(n, k, d, b, seed=0, *, w_scale=1.0, x_scale=1.0):
    """Random ``prior`` [n, k], ``w`` [n*k, d], guide logits ``q`` [b, n, k] and data ``x`` [b, d],
    drawn in this order from one seeded generator."""
    g = torch.Generator().manual_seed(seed)
    return {
        "prior": torch.randn(n, k, generator=g, dtype=F64),
        "w": w_scale * torch.randn(n * k, d, generator=g, dtype=F64),
        "q": torch.randn(b, n, k, generator=g, dtype=F64),
        "x": x_scale * torch.randn(b, d, generator=g, dtype=F64),
    }


def load_params(p, names=PARAM_NAMES):
    """A fresh param store holding copies of ``p[name]`` for ``name`` in ``names``."""
    pyro.clear_param_store()
    for name in names:
        pyro.param(name, p[name].clone())


def categorical_model(sigma):
    """The categorical model with observation noise ``sigma`` (params from the param store)."""

    def model(x):
        prior, w = pyro.param("prior"), pyro.param("w")
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.OneHotCategorical(logits=prior).to_event(1))
            pyro.sample("x", dist.Normal(z.flatten(-2) @ w, sigma).to_event(1), obs=x)

    return model


def categorical_guide(x):
    """q(z | x_b) with logits ``pyro.param("q")[b]``."""
    q = pyro.param("q")
    with pyro.plate("data", x.shape[0]):
        pyro.sample("z", dist.OneHotCategorical(logits=q).to_event(1))


def normal_log_prob(x, mean, sigma):
    """sum_d log Normal(x_d; mean_d, sigma), written out."""
    return (-0.5 * ((x - mean) / sigma) ** 2 - math.log(sigma) - 0.5 * math.log(2 * math.pi)).sum(
        -1
    )


def brute_log_joint(prior, w, x, sigma):
    """[B, K^N] log p(x, z) of the categorical model, configurations in ``itertools.product``
    order (differentiable in ``prior`` and ``w``)."""
    n, k = prior.shape
    lp_prior = prior.log_softmax(-1)
    cols = []
    for idx in itertools.product(range(k), repeat=n):
        z = torch.eye(k, dtype=F64)[list(idx)]
        log_prior = sum(lp_prior[g, idx[g]] for g in range(n))
        cols.append(log_prior + normal_log_prob(x, z.reshape(-1) @ w, sigma))
    return torch.stack(cols, -1)


def brute_log_q(q):
    """[B, K^N] log q(z | x) of the guide logits ``q`` [B, N, K], in the same order."""
    _, n, k = q.shape
    lq = q.log_softmax(-1)
    return torch.stack(
        [sum(lq[:, g, idx[g]] for g in range(n)) for idx in itertools.product(range(k), repeat=n)],
        -1,
    )


# ------------------------------------------------------------- two-site model -----------------
A = torch.tensor([[1.5, -1.0, 0.2]], dtype=F64)
C = torch.tensor([0.3, 0.0, -0.4], dtype=F64)
W1 = torch.tensor([[1.0, -2.0]], dtype=F64)
W2 = torch.tensor([[0.5, 0.5], [-1.0, 1.0], [2.0, 0.0]], dtype=F64)
X2 = torch.tensor([[0.2, -1.0], [1.5, 0.3], [-0.7, 2.0]], dtype=F64)


def two_site_model(x):
    with pyro.plate("data", x.shape[0]):
        z1 = pyro.sample("z1", dist.Bernoulli(torch.tensor([0.3], dtype=F64)).to_event(1))
        z2 = pyro.sample("z2", dist.OneHotCategorical(logits=C + z1 @ A))
        pyro.sample("x", dist.Normal(z1 @ W1 + z2 @ W2, 0.8).to_event(1), obs=x)


def two_site_log_joint(x):
    """log p(x, z1, z2) of :func:`two_site_model` as [B, 2, 3], by explicit formulas."""
    out = torch.empty(x.shape[0], 2, 3, dtype=F64)
    for b1 in (0, 1):
        z1 = torch.tensor([float(b1)], dtype=F64)
        lp2 = (C + z1 @ A).log_softmax(-1)
        for k in range(3):
            ll = normal_log_prob(x, z1 @ W1 + W2[k], 0.8)
            out[:, b1, k] = math.log(0.3 if b1 else 0.7) + lp2[k] + ll
    return out


def chain_guide(q1, q2):
    """A guide for :func:`two_site_model`: q(z1 = 1 | x_b) = q1[b], q(z2 | z1, x_b) = q2[b, z1]."""

    def guide(x):
        with pyro.plate("data", x.shape[0]):
            z1 = pyro.sample("z1", dist.Bernoulli(q1.unsqueeze(-1)).to_event(1))
            pyro.sample("z2", dist.OneHotCategorical(probs=q2[:, 1] * z1 + q2[:, 0] * (1 - z1)))

    return guide


# ------------------------------------------------------------- scalar mixture -----------------
def mixture_model(x):
    """z ~ Cat(softmax(prior_logits)) over 3 classes, x | z ~ Normal(locs[z], 1) (scalar data)."""
    prior = pyro.param("prior_logits", torch.tensor([0.3, 0.0, -0.3]))
    locs = pyro.param("locs", torch.tensor([-1.0, 0.5, 1.5]))
    with pyro.plate("data", len(x)):
        z = pyro.sample("z", dist.OneHotCategorical(logits=prior))
        pyro.sample("x", dist.Normal((z * locs).sum(-1), 1.0), obs=x)


def mixture_guide(x):
    """q(z | x) with logits ``x * enc_w + enc_b``."""
    w = pyro.param("enc_w", torch.tensor([-0.5, 0.2, 0.6]))
    b = pyro.param("enc_b", torch.tensor([0.1, 0.0, -0.2]))
    with pyro.plate("data", len(x)):
        pyro.sample("z", dist.OneHotCategorical(logits=x.unsqueeze(-1) * w + b))


# ------------------------------------------------------------- autoregressive-prior model -----
AR_PARAM_NAMES = ("bias", "weight", "w", "q")


def autoregressive_params(n, d, b, seed=0):
    """Random prior ``bias`` [n] and ``weight`` [n, n], decoder ``w`` [n, d], guide logits
    ``q`` [b, n] and data ``x`` [b, d] for the autoregressive-prior model."""
    g = torch.Generator().manual_seed(seed)
    return {
        "bias": torch.randn(n, generator=g, dtype=F64),
        "weight": 2 * torch.randn(n, n, generator=g, dtype=F64),
        "w": torch.randn(n, d, generator=g, dtype=F64),
        "q": torch.randn(b, n, generator=g, dtype=F64),
        "x": torch.randn(b, d, generator=g, dtype=F64),
    }


def autoregressive_model(sigma):
    """``z ~ AutoregressiveBernoulli(bias, weight)``, ``x ~ Normal(z @ w, sigma)``."""
    from pyro_dvae.distributions import AutoregressiveBernoulli

    def model(x):
        prior = AutoregressiveBernoulli(pyro.param("bias"), pyro.param("weight"))
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", prior)
            pyro.sample("x", dist.Normal(z @ pyro.param("w"), sigma).to_event(1), obs=x)

    return model


def bernoulli_guide(x):
    """q(z | x_b) = prod_i Bernoulli(sigmoid(q[b, i]))."""
    with pyro.plate("data", x.shape[0]):
        pyro.sample("z", dist.Bernoulli(logits=pyro.param("q")).to_event(1))


def autoregressive_brute_log_prior(bias, weight, z):
    """log p(z) of one code ``z`` [n], unit by unit: sum_i log Bernoulli(z_i; sigmoid(bias_i +
    sum_{j<i} weight_ij z_j))."""
    total = 0.0
    for i in range(bias.shape[0]):
        logit = bias[i] + (weight[i, :i] * z[:i]).sum()
        total = total + torch.nn.functional.logsigmoid(logit if z[i] == 1 else -logit)
    return total


def autoregressive_brute_elbo(bias, weight, w, q, x, sigma):
    """[B] ELBO of the autoregressive-prior model, summed over every code z in {0,1}^n with the
    chain rule written out unit by unit (differentiable in every argument)."""
    n = bias.shape[0]
    lq1, lq0 = torch.nn.functional.logsigmoid(q), torch.nn.functional.logsigmoid(-q)
    total = 0.0
    for code in itertools.product((0.0, 1.0), repeat=n):
        z = torch.tensor(code, dtype=F64)
        log_prior = autoregressive_brute_log_prior(bias, weight, z)
        log_q = sum(lq1[:, i] if code[i] else lq0[:, i] for i in range(n))
        log_joint = log_prior + normal_log_prob(x, z @ w, sigma)
        total = total + log_q.exp() * (log_joint - log_q)
    return total

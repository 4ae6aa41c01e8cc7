"""Shared ground-truth checks for the gradient-estimator tests (RLOO, DisARM, GST).

* :func:`user_model` / :func:`user_guide`: a model written in plain Pyro syntax with two
  discrete sites in a data plate, an integer ``Categorical`` that depends on a ``Bernoulli``
  (``z1 ~ Bernoulli``, ``z2 | z1 ~ Categorical``, ``x ~ Normal(a[z2] + c z1, 1)``), and a guide
  in which ``q(z2 | x, z1)`` depends on ``z1`` too;
* :func:`factorized_guide`: the same model's guide with ``q(z1 | x)`` and ``q(z2 | x)``
  independent (the VAE-encoder case);
* :func:`flat_exact` / :func:`z_scores`: the exact gradient by enumeration
  (:func:`~pyro_dvae.diagnostics.exact_gradient`, the discrete ELBO summed over every
  configuration) and per-coordinate z-statistics of the mean of ``R`` estimates against it.
"""

from __future__ import annotations

import pyro
import pyro.distributions as dist
import torch

from pyro_dvae.diagnostics import exact_gradient, gradient_estimates

# three distinct data values repeated: one call sums many independent per-datum estimates
USER_DATA = torch.tensor([-1.0, 0.5, 2.0]).repeat(100)
ALL = "all"


def user_model(x):
    a = pyro.param("a", torch.tensor([-1.0, 0.5, 2.0]))
    c = pyro.param("c", torch.tensor(0.8))
    with pyro.plate("data", len(x)):
        z1 = pyro.sample("z1", dist.Bernoulli(logits=torch.tensor(0.2)))
        z2 = pyro.sample("z2", dist.Categorical(logits=torch.stack([z1, -z1, 0 * z1], -1)))
        pyro.sample("x", dist.Normal(a[z2] + c * z1, 1.0), obs=x)


def user_guide(x):
    """q(z1 | x) q(z2 | x, z1): z2's logits read z1."""
    w1 = pyro.param("w1", torch.tensor([0.3, -0.2]))
    w2 = pyro.param("w2", torch.tensor([[-0.5, 0.2, 0.6], [0.1, 0.0, -0.2], [0.4, -0.3, 0.1]]))
    with pyro.plate("data", len(x)):
        z1 = pyro.sample("z1", dist.Bernoulli(logits=w1[0] * x + w1[1]))
        logits = x.unsqueeze(-1) * w2[0] + z1.unsqueeze(-1) * w2[1] + w2[2]
        pyro.sample("z2", dist.Categorical(logits=logits))


def factorized_guide(x):
    """q(z1 | x) q(z2 | x): the sites are independent given x."""
    w1 = pyro.param("w1", torch.tensor([0.3, -0.2]))
    w2 = pyro.param("w2", torch.tensor([[-0.5, 0.2, 0.6], [0.4, -0.3, 0.1]]))
    with pyro.plate("data", len(x)):
        pyro.sample("z1", dist.Bernoulli(logits=w1[0] * x + w1[1]))
        pyro.sample("z2", dist.Categorical(logits=x.unsqueeze(-1) * w2[0] + w2[1]))


def flat_exact(model, guide, data) -> torch.Tensor:
    """The exact gradient of -ELBO, every parameter flattened in name order."""
    exact = exact_gradient(model, guide, data)
    return torch.cat([exact[name].reshape(-1) for name in sorted(exact)])


def estimates(elbo, model, guide, data, num_calls: int) -> torch.Tensor:
    """``[num_calls, P]`` independent gradient estimates, flattened as :func:`flat_exact`."""
    est = gradient_estimates(elbo, model, guide, data, num_samples=num_calls, groups=_by_name)
    return torch.cat([est[name] for name in sorted(est)], -1)


def _by_name(name: str) -> str:
    return name


def z_scores(samples: torch.Tensor, exact: torch.Tensor) -> torch.Tensor:
    """Per-coordinate z-statistics of the sample mean against ``exact``."""
    se = samples.std(0) / samples.shape[0] ** 0.5
    return (samples.mean(0) - exact) / se

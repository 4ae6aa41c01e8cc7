"""Held-out evaluation in nats per datum: the discrete ELBO and the importance-weighted bound.

Both use the user's model and guide as written (discrete latents, hard samples), so numbers are
comparable across every training estimator. For the exact log p(x) see
:func:`~pyro_dvae.infer.exact_log_likelihood`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator

import pyro
import pyro.poutine as poutine
import torch
from pyro.poutine import Trace

from ..errors import DVAEInputError
from .util import (
    DataPlates,
    find_data_plates,
    per_datum_log_prob,
    sample_sites,
    site_kl,
)

__all__ = ["discrete_elbo", "iwae_log_likelihood"]


def _traces(model: Callable, guide: Callable, args: tuple, kwargs: dict):
    guide_trace = poutine.trace(guide).get_trace(*args, **kwargs)
    model_trace = poutine.trace(poutine.replay(model, trace=guide_trace)).get_trace(*args, **kwargs)
    model_trace.compute_log_prob()
    guide_trace.compute_log_prob()
    return model_trace, guide_trace


def discrete_elbo(
    model: Callable,
    guide: Callable,
    *args,
    num_samples: int = 1,
    particles_per_batch: int = 1,
    **kwargs,
) -> torch.Tensor:
    """Per-datum ELBO with hard samples from the discrete guide and exact discrete KL terms.

    ELBO(x) = E_q[log p(x | z)] - KL(q(z | x) || p(z)); the KL is analytic wherever
    ``kl_divergence`` knows the pair (one-hot categorical, Bernoulli), from each unit's KL to
    its prior conditional for an autoregressive prior
    (:func:`~pyro_dvae.infer.util.site_kl`), else estimated from the same samples. The
    reconstruction term is averaged over ``num_samples`` draws, taken one model run at a time
    (any model) or, with ``particles_per_batch > 1``, that many at once in an extra plate left
    of the model's plates (the model must broadcast over leading dims, as for
    :func:`iwae_log_likelihood`; much faster for many samples).

    Example:
        >>> import pyro, pyro.distributions as dist
        >>> def model(x):
        ...     with pyro.plate("data", len(x)):
        ...         z = pyro.sample("z", dist.Bernoulli(0.5))
        ...         pyro.sample("x", dist.Normal(z, 1.0), obs=x)
        >>> def guide(x):
        ...     with pyro.plate("data", len(x)):
        ...         pyro.sample("z", dist.Bernoulli(0.5))
        >>> discrete_elbo(model, guide, torch.zeros(3)).shape
        torch.Size([3])
        >>> x = torch.zeros(3)
        >>> discrete_elbo(model, guide, x, num_samples=50, particles_per_batch=25).shape
        torch.Size([3])
    """
    _check_counts(num_samples, particles_per_batch)
    total = 0.0
    with torch.no_grad():
        if particles_per_batch == 1:
            for _ in range(num_samples):
                model_trace, guide_trace = _traces(model, guide, args, kwargs)
                total = total + _elbo_terms(model_trace, guide_trace, find_data_plates(model_trace))
        else:
            for m_trace, g_trace, plates, size in _particle_traces(
                model, guide, args, kwargs, num_samples, particles_per_batch
            ):
                terms = _elbo_terms(m_trace, g_trace, plates, lead=1)
                total = total + terms.expand(size, plates.num_data).sum(0)
    return total / num_samples


def _elbo_terms(
    model_trace: Trace, guide_trace: Trace, plates: DataPlates, lead: int = 0
) -> torch.Tensor:
    """log p(x | z) - KL per datum (``[*lead_sizes, num_data]``) for one set of samples."""
    elbo = per_datum_log_prob(model_trace, plates, lead=lead, observed=True)
    for site in sample_sites(model_trace):
        if site["is_observed"]:
            continue
        guide_site = guide_trace.nodes[site["name"]]
        kl = site_kl(guide_site["fn"], site["fn"], guide_site["value"])
        if kl is not None:
            elbo = elbo - plates.reduce(kl, lead=lead)
        else:
            elbo = elbo + plates.reduce(site["log_prob"], lead)
            elbo = elbo - plates.reduce(guide_site["log_prob"], lead)
    return elbo


def _check_counts(num_samples: int, particles_per_batch: int) -> None:
    if num_samples < 1:
        raise DVAEInputError(f"num_samples must be >= 1, got {num_samples}")
    if particles_per_batch < 1:
        raise DVAEInputError(
            f"particles_per_batch must be >= 1, got {particles_per_batch}; pass e.g. 100"
        )


def _particle_traces(
    model: Callable,
    guide: Callable,
    args: tuple,
    kwargs: dict,
    num_samples: int,
    per_batch: int,
) -> Iterator[tuple[Trace, Trace, DataPlates, int]]:
    """Model and guide traces of ``num_samples`` particles drawn ``per_batch`` at a time in a
    plate left of every plate of the model and guide, with the data plates (particle dim
    counted in their nesting) and the batch's size."""
    model_trace, guide_trace = _traces(model, guide, args, kwargs)
    plates = find_data_plates(model_trace)
    nesting = plates.max_plate_nesting
    for site in sample_sites(guide_trace):
        for f in site["cond_indep_stack"]:
            if f.vectorized and f.dim is not None:
                nesting = max(nesting, -f.dim)
    plates = DataPlates(plates.dims, plates.sizes, nesting)
    done = 0
    while done < num_samples:
        size = min(per_batch, num_samples - done)
        plate = pyro.plate("_particles", size, dim=-(nesting + 1))
        m_trace, g_trace = _traces(plate(model), plate(guide), args, kwargs)
        yield m_trace, g_trace, plates, size
        done += size


def iwae_log_likelihood(
    model: Callable,
    guide: Callable,
    *args,
    num_samples: int = 1000,
    particles_per_batch: int = 100,
    **kwargs,
) -> torch.Tensor:
    """Per-datum importance-weighted bound log (1/k) sum_i p(x, z_i) / q(z_i | x), z_i ~ q.

    A lower bound on log p(x) in expectation that increases with ``k = num_samples`` (Burda et
    al. 2016, arXiv:1509.00519). Particles are drawn in vectorized batches (an extra plate left
    of the model's plates), so the model must broadcast over leading dims, as for enumeration.

    Example:
        >>> import pyro, pyro.distributions as dist
        >>> def model(x):
        ...     with pyro.plate("data", len(x)):
        ...         z = pyro.sample("z", dist.Bernoulli(0.5))
        ...         pyro.sample("x", dist.Normal(z, 1.0), obs=x)
        >>> def guide(x):
        ...     with pyro.plate("data", len(x)):
        ...         pyro.sample("z", dist.Bernoulli(0.5))
        >>> iwae_log_likelihood(model, guide, torch.zeros(3), num_samples=10).shape
        torch.Size([3])
    """
    _check_counts(num_samples, particles_per_batch)
    log_weights = []
    with torch.no_grad():
        for m_trace, g_trace, plates, size in _particle_traces(
            model, guide, args, kwargs, num_samples, particles_per_batch
        ):
            lw = per_datum_log_prob(m_trace, plates, lead=1) - per_datum_log_prob(
                g_trace, plates, lead=1
            )
            log_weights.append(lw.expand(size, plates.num_data))
        log_weights = torch.cat(log_weights)
    return log_weights.logsumexp(0) - math.log(num_samples)

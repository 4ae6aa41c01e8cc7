"""Helpers shared by the exact and Monte Carlo objectives: data plates and per-datum log-densities.

A *data plate* is a plate that contains every sample site of the model (latent and observed):
its elements are conditionally independent replicates, so log p(x) factorizes over it. Every
per-datum quantity in pyro_dvae (exact log p(x), discrete ELBO, IWAE bound) has the shape of the
data plates, flattened to ``[num_data]``.
"""

from __future__ import annotations

from collections.abc import Container

import torch
from pyro.distributions.torch_distribution import ExpandedDistribution, MaskedDistribution
from pyro.poutine import Trace
from pyro.poutine.util import site_is_subsample
from torch.distributions import Distribution, kl_divergence

from ..errors import DVAEInputError

__all__ = [
    "DataPlates",
    "callable_key",
    "find_data_plates",
    "per_datum_log_prob",
    "sample_sites",
    "sampled_prior_kl",
    "shape_failure",
    "site_kl",
]


def callable_key(fn) -> tuple:
    """A hashable identity of a model or guide that survives attribute access: a bound method
    is a new object at every ``obj.method``, so it is keyed by its function and its object's id.

    Example:
        >>> class M:
        ...     def model(self):
        ...         pass
        >>> m = M()
        >>> callable_key(m.model) == callable_key(m.model)
        True
    """
    if fn is None:
        return ()
    return (getattr(fn, "__func__", fn), id(getattr(fn, "__self__", None)))


def shape_failure(error: Exception) -> str | None:
    r"""The first line of ``error`` if it reads as a shape mismatch (what a model or guide that
    does not broadcast over an extra leading dim raises), else ``None``.

    Example:
        >>> shape_failure(RuntimeError("The size of tensor a (3) must match b (2)\nTrace Shapes:"))
        'The size of tensor a (3) must match b (2)'
        >>> shape_failure(ValueError("bad scale")) is None
        True
    """
    text = str(error).strip()
    first = text.splitlines()[0] if text else repr(error)
    if any(word in first for word in ("size", "shape", "dimension", "expand")):
        return first
    return None


def sample_sites(trace: Trace) -> list[dict]:
    """The sample sites of a trace, in execution order.

    Example:
        >>> import pyro, pyro.distributions as dist, pyro.poutine as poutine
        >>> def model():
        ...     pyro.sample("a", dist.Normal(0.0, 1.0))
        ...     pyro.sample("b", dist.Normal(0.0, 1.0))
        >>> [site["name"] for site in sample_sites(poutine.trace(model).get_trace())]
        ['a', 'b']
    """
    return [s for s in trace.nodes.values() if s["type"] == "sample" and not site_is_subsample(s)]


class DataPlates:
    """The data plates of a model trace and its plate nesting.

    :ivar dims: negative dims (relative to the batch shape) of the data plates.
    :ivar sizes: their sizes.
    :ivar max_plate_nesting: number of batch dims reserved by plates.

    Example:
        >>> plates = DataPlates(dims=(-1,), sizes=(3,), max_plate_nesting=1)
        >>> plates.num_data, plates.reduce(torch.ones(2, 3), lead=1).shape
        (3, torch.Size([2, 3]))
    """

    def __init__(self, dims: tuple[int, ...], sizes: tuple[int, ...], max_plate_nesting: int):
        self.dims = dims
        self.sizes = sizes
        self.max_plate_nesting = max_plate_nesting

    @property
    def num_data(self) -> int:
        n = 1
        for s in self.sizes:
            n *= s
        return n

    def reduce(self, log_prob: torch.Tensor | float, lead: int) -> torch.Tensor:
        """Sum a site's log-density over every non-data dim.

        ``log_prob`` has ``lead`` dims (enumeration or particle dims) left of the plate dims; the
        result has shape ``[*lead_sizes, num_data]``.
        """
        width = lead + self.max_plate_nesting
        lp = torch.as_tensor(log_prob)
        if lp.dim() > width:
            raise ValueError(f"log_prob of shape {tuple(lp.shape)} has more than {width} dims")
        lp = lp.reshape((1,) * (width - lp.dim()) + tuple(lp.shape))
        keep = {width + d for d in self.dims}
        other = [i for i in range(lead, width) if i not in keep]
        if other:
            lp = lp.sum(other, keepdim=True)
        lead_shape = tuple(lp.shape[:lead])
        data_shape = tuple(lp.shape[width + d] for d in self.dims)
        lp = lp.reshape(lead_shape + data_shape).expand(lead_shape + self.sizes)
        return lp.reshape(lead_shape + (self.num_data,))


def find_data_plates(trace: Trace) -> DataPlates:
    """Find the data plates of a model trace (plates that contain every sample site).

    Example:
        >>> import pyro, pyro.distributions as dist, pyro.poutine as poutine
        >>> def model(x):
        ...     with pyro.plate("data", len(x)):
        ...         z = pyro.sample("z", dist.Bernoulli(0.5))
        ...         pyro.sample("x", dist.Normal(z, 1.0), obs=x)
        >>> plates = find_data_plates(poutine.trace(model).get_trace(torch.zeros(5)))
        >>> plates.dims, plates.sizes, plates.max_plate_nesting
        ((-1,), (5,), 1)
    """
    sites = sample_sites(trace)
    if not sites:
        raise DVAEInputError("the model has no sample sites; it must declare latents and data")
    common = None
    min_dim = 0
    for site in sites:
        frames = {
            (f.name, f.dim, f.size)
            for f in site["cond_indep_stack"]
            if f.vectorized and f.dim is not None
        }
        for f in site["cond_indep_stack"]:
            if f.vectorized and f.dim is not None:
                min_dim = min(min_dim, f.dim)
        common = frames if common is None else common & frames
    for site in sites:
        for f in site["cond_indep_stack"]:
            if (f.name, f.dim, f.size) in common and getattr(f, "full_size", None) not in (
                None,
                f.size,
            ):
                raise DVAEInputError(
                    f"plate '{f.name}' is subsampled; exact and per-datum evaluation need the "
                    "full plate: pass the evaluation batch as data instead of subsampling"
                )
    ordered = sorted(common, key=lambda f: f[1])  # outermost (most negative) dim first
    return DataPlates(
        dims=tuple(f[1] for f in ordered),
        sizes=tuple(f[2] for f in ordered),
        max_plate_nesting=-min_dim,
    )


def per_datum_log_prob(
    trace: Trace,
    plates: DataPlates,
    lead: int,
    *,
    observed: bool | None = None,
    names: Container[str] | None = None,
) -> torch.Tensor:
    """Sum of the per-datum log-densities of a trace's sample sites (optionally only (un)observed,
    or only those in ``names``).

    The trace must have had ``compute_log_prob`` called. Returns ``[*lead_sizes, num_data]``.

    Example:
        >>> import pyro, pyro.distributions as dist, pyro.poutine as poutine
        >>> def model(x):
        ...     with pyro.plate("data", len(x)):
        ...         z = pyro.sample("z", dist.Bernoulli(0.5))
        ...         pyro.sample("x", dist.Normal(z, 1.0), obs=x)
        >>> trace = poutine.trace(model).get_trace(torch.zeros(5))
        >>> trace.compute_log_prob()
        >>> per_datum_log_prob(trace, find_data_plates(trace), lead=0, observed=True).shape
        torch.Size([5])
    """
    total = None
    for site in sample_sites(trace):
        if observed is not None and site["is_observed"] != observed:
            continue
        if names is not None and site["name"] not in names:
            continue
        lp = plates.reduce(site["log_prob"], lead)
        total = lp if total is None else total + lp
    if total is None:
        raise ValueError("no matching sample sites in the trace")
    return total


def sampled_prior_kl(q: Distribution, p: Distribution, value: torch.Tensor) -> torch.Tensor | None:
    """KL(q || p) from one sample ``value ~ q`` for an autoregressive prior ``p``, else ``None``.

    A prior that provides ``conditionals(value)`` (e.g.
    :class:`~pyro_dvae.distributions.AutoregressiveBernoulli`) has no closed-form KL against a
    factorized guide, but E_q[sum_i KL(q_i || p(z_i | z_<i))] is the KL exactly when q
    factorizes over the event, so ``kl_divergence(q, p.conditionals(value))`` is an unbiased
    estimate in which each unit's own sampling noise is summed out; its gradient flows through
    ``value`` wherever the sample is reparameterized (straight-through, Gumbel-Rao, ReinMax).
    Returns ``None`` when ``p`` (under any ``.expand`` or ``.mask``) has no ``conditionals`` or
    ``kl_divergence`` has no rule for q against them.

    Example:
        >>> from pyro_dvae.distributions import AutoregressiveBernoulli, Bernoulli
        >>> q = Bernoulli(logits=torch.zeros(5, 3)).to_event(1)
        >>> p = AutoregressiveBernoulli(torch.zeros(3), torch.zeros(3, 3))
        >>> sampled_prior_kl(q, p, q.sample()).abs().max().item()  # p = q here
        0.0
    """
    mask = None
    while isinstance(p, (ExpandedDistribution, MaskedDistribution)):
        if isinstance(p, MaskedDistribution):
            mask = p._mask if mask is None else mask & p._mask
        p = p.base_dist
    conditionals = getattr(p, "conditionals", None)
    if conditionals is None:
        return None
    try:
        kl = kl_divergence(q, conditionals(value))
    except NotImplementedError:  # q does not factorize into the conditionals' units
        return None
    return kl if mask is None else torch.where(mask, kl, torch.zeros_like(kl))


def site_kl(q: Distribution, p: Distribution, value: torch.Tensor) -> torch.Tensor | None:
    """KL(q || p) of one latent site, the one fallback chain of every analytic-KL objective:
    closed form where ``kl_divergence`` has a rule for the pair (one-hot categorical, Bernoulli),
    else from each unit's KL to its prior conditional at the sample ``value`` for an
    autoregressive prior (:func:`sampled_prior_kl`), else ``None`` (the caller then estimates
    log q(z) - log p(z) from the sample).

    Example:
        >>> from pyro_dvae.distributions import Bernoulli
        >>> q, p = Bernoulli(probs=torch.tensor(0.5)), Bernoulli(probs=torch.tensor(0.5))
        >>> float(site_kl(q, p, q.sample()))
        0.0
    """
    try:
        return kl_divergence(q, p)
    except NotImplementedError:
        return sampled_prior_kl(q, p, value)

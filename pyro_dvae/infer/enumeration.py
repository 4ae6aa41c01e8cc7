"""Chunked joint enumeration of a model's discrete latent space, and the exact log p(x).

Pyro's parallel enumeration (``TraceEnum_ELBO``) materializes one tensor dimension per latent
site, so K^N configurations times the data batch live in memory at once (8^4 configurations x 100
data points of a 784-pixel model already need about 4 GB). Here the joint configurations of *all*
latent sites (including ``.to_event`` groups inside one site) are walked in chunks of ``C``
configurations: the model is run once per chunk with the latent values conditioned to a tensor
with one extra leading dimension of size ``C`` (left of every plate), so that peak memory grows
with ``C``, not with K^N.

Models must be written so that latent values broadcast (as for Pyro's parallel enumeration):
e.g. ``decoder(z.flatten(-2))`` rather than ``z.view(batch, -1)``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pyro.poutine as poutine
import torch

from ..errors import DVAEInputError, LatentSpaceTooLargeError
from .structured_enumeration import (
    DEFAULT_MAX_CONFIGURATIONS,
    DEFAULT_MEMORY_BUDGET,
    StructuredEnumeration,
    leaf_distribution,
    summarize_sizes,
)
from .util import DataPlates, find_data_plates, per_datum_log_prob, sample_sites

__all__ = [
    "DEFAULT_MAX_CONFIGURATIONS",
    "LatentEnumeration",
    "exact_log_likelihood",
    "exact_posterior",
]


@dataclass
class _Site:
    name: str
    support: torch.Tensor  # [K, *leaf_event_shape]
    element_shape: tuple[int, ...]  # padded batch shape (data dims = 1) + leading event dims

    @property
    def num_categories(self) -> int:
        return self.support.shape[0]

    @property
    def num_elements(self) -> int:
        return math.prod(self.element_shape)


class LatentEnumeration:
    """The joint discrete latent space of a model, walked in chunks of configurations.

    :param model: a Pyro model whose latent sites are all discrete with enumerable support.
    :param args, kwargs: the model's arguments (the data).
    :param max_configurations: refuse spaces with more joint configurations than this.

    Example:
        >>> import pyro, pyro.distributions as dist
        >>> def model(x):
        ...     with pyro.plate("data", len(x)):
        ...         z = pyro.sample("z", dist.Bernoulli(0.3 * torch.ones(3)).to_event(1))
        ...         pyro.sample("x", dist.Normal(z.sum(-1), 1.0), obs=x)
        >>> LatentEnumeration(model, (torch.zeros(5),)).num_configurations
        8
    """

    def __init__(
        self,
        model: Callable,
        args: tuple = (),
        kwargs: dict | None = None,
        max_configurations: int = DEFAULT_MAX_CONFIGURATIONS,
    ) -> None:
        self.model = model
        self.args = args
        self.kwargs = kwargs or {}
        with torch.no_grad():
            trace = poutine.trace(poutine.block(model, hide_types=["param"])).get_trace(
                *args, **self.kwargs
            )
        self.plates: DataPlates = find_data_plates(trace)
        self.sites: list[_Site] = []
        floats_per_config = 1024  # slack for hidden activations of a decoder
        for site in sample_sites(trace):
            if site["is_observed"]:
                if getattr(leaf_distribution(site["fn"]), "broadcasts_efficiently", False):
                    floats_per_config += self.plates.num_data + site["fn"].event_shape.numel()
                else:
                    floats_per_config += site["value"].numel()
                continue
            self.sites.append(self._describe(site))
        if not self.sites:
            raise DVAEInputError("the model has no latent sample sites to enumerate")
        self.floats_per_config = floats_per_config
        self.log_num_configurations = sum(
            s.num_elements * math.log(s.num_categories) for s in self.sites
        )
        self.num_configurations = math.prod(s.num_categories**s.num_elements for s in self.sites)
        if self.num_configurations > max_configurations:
            raise LatentSpaceTooLargeError(
                f"exact enumeration needs {self._describe_size()} latent configurations, over "
                f"the limit max_configurations={max_configurations:,}; use a smaller latent "
                "space, an importance-weighted bound (iwae_log_likelihood), or a relaxed estimator"
            )

    def _describe(self, site: dict) -> _Site:
        fn = site["fn"]
        leaf = leaf_distribution(fn)
        if not leaf.has_enumerate_support:
            raise DVAEInputError(
                f"latent site '{site['name']}' has a {type(leaf).__name__} distribution, which "
                "cannot be enumerated; exact computations need discrete latents "
                "(OneHotCategorical, Categorical, Bernoulli)"
            )
        support = leaf.enumerate_support(expand=False)
        leaf_event = tuple(leaf.event_shape)
        support = support.reshape((support.shape[0],) + leaf_event)
        shape = tuple(fn.batch_shape) + tuple(fn.event_shape)
        value_batch_ndim = len(shape) - len(leaf_event)
        nesting = self.plates.max_plate_nesting
        batch_ndim = len(fn.batch_shape)
        padded = [1] * (nesting - batch_ndim) + list(shape[:value_batch_ndim])
        for d in self.plates.dims:
            padded[nesting + d] = 1
        return _Site(site["name"], support, tuple(padded))

    def _describe_size(self) -> str:
        return summarize_sizes([(s.num_categories, s.num_elements) for s in self.sites])

    def default_chunk_size(self, memory_budget: int = DEFAULT_MEMORY_BUDGET) -> int:
        """Configurations per chunk so that the per-chunk tensors fit ``memory_budget`` bytes.

        The estimate counts the observed sites' log-density tensors (``C x batch x event``, or
        ``C x (batch + event)`` for distributions that broadcast efficiently such as
        :class:`~pyro_dvae.distributions.BernoulliVector`) plus decoder activations, times four
        for temporaries and gradients.
        """
        bytes_per_config = 4 * 4 * self.floats_per_config
        return int(max(1, min(self.num_configurations, memory_budget // bytes_per_config)))

    def chunks(self, chunk_size: int | None = None) -> Iterator[dict[str, torch.Tensor]]:
        """Yield ``{site: value}`` dicts, each value with a leading dim of ``<= chunk_size``."""
        chunk_size = chunk_size or self.default_chunk_size()
        total = self.num_configurations
        for start in range(0, total, chunk_size):
            index = torch.arange(start, min(start + chunk_size, total))
            yield self._values(index)

    def _values(self, index: torch.Tensor) -> dict[str, torch.Tensor]:
        values = {}
        nesting = self.plates.max_plate_nesting
        for site in reversed(self.sites):  # last site varies fastest
            k, m = site.num_categories, site.num_elements
            powers = k ** torch.arange(m - 1, -1, -1)
            digits = (index.unsqueeze(-1) // powers) % k  # [C, M]
            index = index // (k**m)
            value = site.support[digits.to(site.support.device)]  # [C, M, *leaf_event]
            shape = (len(digits),) + site.element_shape + tuple(site.support.shape[1:])
            values[site.name] = value.reshape(shape)
            assert len(site.element_shape) >= nesting
        return values

    def log_joint(self, values: dict[str, torch.Tensor], model: Callable | None = None):
        """log p(x, z) per configuration and datum, ``[C, num_data]``, for one chunk of values."""
        model = self.model if model is None else model
        trace = poutine.trace(poutine.condition(model, data=values)).get_trace(
            *self.args, **self.kwargs
        )
        trace.compute_log_prob()
        return per_datum_log_prob(trace, self.plates, lead=1)

    def log_guide(self, guide: Callable, values: dict[str, torch.Tensor]) -> torch.Tensor | None:
        """log q(z | x) per configuration and datum, ``[C, num_data]``.

        ``None`` if the guide samples none of the latent sites (e.g. an empty guide).
        """
        return self.log_guide_terms(guide, values)[0]

    def log_guide_terms(
        self, guide: Callable, values: dict[str, torch.Tensor]
    ) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """``(log q(z | x), guide factors)`` per configuration and datum, each ``[C, num_data]``.

        The first sums the guide's sites of the enumerated latents; the second its other observed
        sites (``pyro.factor`` statements, which Pyro's ELBOs count as part of log q). Either is
        ``None`` where the guide has no such site.
        """
        trace = poutine.trace(poutine.condition(guide, data=values)).get_trace(
            *self.args, **self.kwargs
        )
        observed = {site["name"] for site in sample_sites(trace) if site["is_observed"]}
        if not observed:
            return None, None
        latents = observed.intersection(values)
        factors = observed.difference(values)
        for name in factors:
            dims = {f.dim for f in trace.nodes[name]["cond_indep_stack"] if f.vectorized}
            if not dims.issuperset(self.plates.dims):
                raise DVAEInputError(
                    f"guide site '{name}' (a pyro.factor?) lies outside the data plate; exact "
                    "objectives count guide factors per datum: put it inside the data plate"
                )
        trace.compute_log_prob()
        log_q = per_datum_log_prob(trace, self.plates, 1, names=latents) if latents else None
        log_f = per_datum_log_prob(trace, self.plates, 1, names=factors) if factors else None
        return log_q, log_f


def exact_log_likelihood(
    model: Callable,
    *args,
    max_configurations: int = DEFAULT_MAX_CONFIGURATIONS,
    chunk_size: int | None = None,
    **kwargs,
) -> torch.Tensor:
    """Exact log p(x) per datum, every discrete latent site summed out.

    The sum follows the model's structure (:class:`~pyro_dvae.infer.StructuredEnumeration`):
    sites local to a nested plate are summed per plate element, ``pyro.markov`` chains by
    variable elimination (linear in their length), and the coupled sites of the data plate (a
    decoder's latent groups) jointly in memory-bounded chunks of ``chunk_size``
    configurations. A datum is one element of the outermost plate that holds every site.
    Raises :class:`~pyro_dvae.errors.LatentSpaceTooLargeError` when the coupled sites exceed
    ``max_configurations``, and :class:`~pyro_dvae.errors.DVAEInputError` for a continuous
    latent (no exact sum: use :func:`~pyro_dvae.infer.iwae_log_likelihood`) or a subsampled
    data plate.

    Example:
        >>> import pyro, pyro.distributions as dist
        >>> def model(x):
        ...     with pyro.plate("data", len(x)):
        ...         z = pyro.sample("z", dist.Bernoulli(0.5))
        ...         pyro.sample("x", dist.Normal(z, 1.0), obs=x)
        >>> exact_log_likelihood(model, torch.zeros(2)).shape
        torch.Size([2])
    """
    try:
        space = StructuredEnumeration(
            model,
            None,
            args,
            kwargs,
            guide_side=False,
            max_configurations=max_configurations,
            chunk_size=chunk_size,
        )
    except DVAEInputError as error:
        if "cannot be summed exactly" in str(error):
            raise DVAEInputError(
                str(error).split(", which")[0] + ", which cannot be summed exactly: log p(x) "
                "has no exact value here; use iwae_log_likelihood(model, guide, ...)"
            ) from None
        raise
    if space.subsampled:
        raise DVAEInputError(
            "the data plate is subsampled; exact and per-datum evaluation need the full "
            "plate: pass the evaluation batch as data instead of subsampling"
        )
    return space.log_marginal()


def exact_posterior(
    model: Callable,
    *args,
    max_configurations: int = 2**16,
    **kwargs,
) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """Every joint latent configuration and its exact posterior p(z | x) per datum.

    Returns ``(values, probs)``: ``values[site]`` has a leading dim of size K^N and ``probs``
    has shape ``[K^N, num_data]`` (columns sum to one). For small latent spaces (tutorials, tests).

    Example:
        >>> import pyro, pyro.distributions as dist
        >>> def model(x):
        ...     with pyro.plate("data", len(x)):
        ...         z = pyro.sample("z", dist.Bernoulli(0.5))
        ...         pyro.sample("x", dist.Normal(z, 1.0), obs=x)
        >>> values, probs = exact_posterior(model, torch.tensor([0.0, 1.0]))
        >>> probs.shape
        torch.Size([2, 2])
    """
    space = LatentEnumeration(model, args, kwargs, max_configurations)
    with torch.no_grad():
        values = space._values(torch.arange(space.num_configurations))
        log_joint = space.log_joint(values)
    return values, (log_joint - log_joint.logsumexp(0)).exp()

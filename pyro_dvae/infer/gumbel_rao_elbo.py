"""The Gumbel-Rao ELBO: straight-through Gumbel-softmax with a Rao-Blackwellized gradient."""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch.distributions import Bernoulli, Distribution, OneHotCategorical

from ..distributions.gumbel_rao import GumbelRaoBernoulli, GumbelRaoOneHotCategorical
from ..errors import DVAEInputError
from .gumbel_softmax_elbo import GumbelSoftmaxELBO
from .relax import RelaxMessenger, map_leaf

__all__ = ["GumbelRaoELBO", "GumbelRaoMessenger", "gumbel_rao_distribution"]


def gumbel_rao_distribution(
    fn: Distribution, temperature: float | torch.Tensor, num_samples: int
) -> Distribution | None:
    """The Gumbel-Rao counterpart of a discrete distribution, or ``None`` if not discrete.

    Handles ``OneHotCategorical`` and ``Bernoulli`` inside any nesting of ``Independent``,
    ``ExpandedDistribution`` and ``MaskedDistribution`` (as
    :func:`~pyro_dvae.infer.relax_distribution` does).

    Example:
        >>> import pyro.distributions as dist
        >>> d = dist.OneHotCategorical(logits=torch.zeros(4, 8)).to_event(1)
        >>> type(gumbel_rao_distribution(d, 0.5, 10).base_dist).__name__
        'GumbelRaoOneHotCategorical'
    """
    return map_leaf(fn, lambda leaf: _gumbel_rao_leaf(leaf, temperature, num_samples))


def _gumbel_rao_leaf(
    fn: Distribution, temperature: float | torch.Tensor, num_samples: int
) -> Distribution | None:
    if isinstance(fn, (GumbelRaoOneHotCategorical, GumbelRaoBernoulli)):
        return fn
    if isinstance(fn, OneHotCategorical):
        return GumbelRaoOneHotCategorical(temperature, logits=fn.logits, num_samples=num_samples)
    if isinstance(fn, Bernoulli):
        return GumbelRaoBernoulli(temperature, logits=fn.logits, num_samples=num_samples)
    return None


class GumbelRaoMessenger(RelaxMessenger):
    """Like :class:`~pyro_dvae.infer.RelaxMessenger`, but discrete latent sites draw from their
    Gumbel-Rao counterparts (the original is kept: :func:`~pyro_dvae.infer.discrete_counterpart`).

    Example:
        >>> import pyro, pyro.distributions as dist
        >>> def model():
        ...     return pyro.sample("z", dist.OneHotCategorical(logits=torch.zeros(3)))
        >>> z = GumbelRaoMessenger(0.5, num_samples=4)(model)()
        >>> z.sum().item()
        1.0
    """

    def __init__(
        self,
        temperature: float | torch.Tensor,
        num_samples: int = 10,
        sites: Iterable[str] | None = None,
    ) -> None:
        super().__init__(temperature, straight_through=True, sites=sites)
        self.num_samples = int(num_samples)

    def _relax(self, fn: Distribution) -> Distribution | None:
        return gumbel_rao_distribution(fn, self.temperature, self.num_samples)


class GumbelRaoELBO(GumbelSoftmaxELBO):
    """Gumbel-Rao estimator of the discrete ELBO (Paulus, Maddison, Krause 2021,
    arXiv:2010.04838).

    Latents are exact discrete samples D ~ q(z|x) (forward pass identical to straight-through
    Gumbel-softmax), and the backward pass replaces the straight-through gradient of the
    Gumbel-softmax sample by its conditional expectation given D, estimated with ``num_samples``
    conditional Gumbel perturbations (:class:`~pyro_dvae.distributions.GumbelRaoOneHotCategorical`,
    :class:`~pyro_dvae.distributions.GumbelRaoBernoulli`). The KL term is the exact discrete
    KL(q(z|x) || p(z)) (``kl="analytic"`` of :class:`GumbelSoftmaxELBO`); the objective's value
    is an unbiased estimate of the discrete ELBO, its gradient is biased (as straight-through)
    but with variance at most that of straight-through Gumbel-softmax at the same temperature.

    :param num_samples: conditional Gumbel samples per latent (K in the paper); ``1`` is
        straight-through Gumbel-softmax.
    :param temperature: Gumbel-softmax temperature of the backward pass.
    :param kwargs: passed to :class:`~pyro.infer.Trace_ELBO` (``num_particles``, ...).

    Example:
        >>> import pyro, pyro.distributions as dist
        >>> def model(x):
        ...     with pyro.plate("data", len(x)):
        ...         z = pyro.sample("z", dist.OneHotCategorical(logits=torch.zeros(3)))
        ...         pyro.sample("x", dist.Normal(z[..., 0], 1.0), obs=x)
        >>> def guide(x):
        ...     logits = pyro.param("q", torch.zeros(3))
        ...     with pyro.plate("data", len(x)):
        ...         pyro.sample("z", dist.OneHotCategorical(logits=logits))
        >>> loss = GumbelRaoELBO(num_samples=10, temperature=0.5).loss(model, guide, torch.zeros(4))
    """

    def __init__(self, num_samples: int = 10, temperature: float = 1.0, **kwargs) -> None:
        if int(num_samples) < 1:
            raise DVAEInputError(f"num_samples must be >= 1, got {num_samples}")
        super().__init__(temperature=temperature, kl="analytic", straight_through=True, **kwargs)
        self.num_samples = int(num_samples)

    def _relax_handler(self) -> GumbelRaoMessenger:
        return GumbelRaoMessenger(self.temperature, num_samples=self.num_samples)

"""The ``relax`` effect handler: swap discrete latent sites for their Gumbel-softmax relaxations.

A user's model and guide declare *discrete* latents (``OneHotCategorical``, ``Bernoulli``, possibly
wrapped by ``.to_event``, ``.expand`` or ``.mask``). Under :func:`relax`, every such unobserved
sample site draws from the Concrete counterpart at the given temperature instead
(:class:`~pyro_dvae.distributions.ConcreteOneHotCategorical`,
:class:`~pyro_dvae.distributions.ConcreteBernoulli`), or from the straight-through variant. The
original discrete distribution is kept on the relaxed distribution object (read it back with
:func:`discrete_counterpart`) so that an ELBO can compute exact discrete KL terms. It travels with
the distribution rather than in ``msg["infer"]`` because ``poutine.replay`` copies the guide's
``infer`` dict onto the model's site, which would make the model's "prior" the guide's q.
The same model function therefore serves relaxed, straight-through and exact-enumeration
estimators without edits.

References:
    - [1] C. J. Maddison, A. Mnih, Y. W. Teh. The Concrete Distribution. arXiv:1611.00712
    - [2] E. Jang, S. Gu, B. Poole. Categorical Reparameterization with Gumbel-Softmax.
      arXiv:1611.01144
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
from pyro.distributions import Independent
from pyro.distributions.torch_distribution import ExpandedDistribution, MaskedDistribution
from pyro.poutine.messenger import Messenger
from torch.distributions import Bernoulli, Categorical, Distribution, OneHotCategorical

from ..distributions import (
    ConcreteBernoulli,
    ConcreteOneHotCategorical,
    StraightThroughBernoulli,
    StraightThroughOneHotCategorical,
)
from ..errors import DVAEInputError

__all__ = [
    "RelaxMessenger",
    "discrete_counterpart",
    "map_leaf",
    "relax",
    "relax_distribution",
]

_DISCRETE_ATTR = "_pyro_dvae_discrete_fn"


def discrete_counterpart(fn: Distribution) -> Distribution | None:
    """The discrete distribution that a site's relaxed ``fn`` was made from by :func:`relax`.

    Returns ``None`` for a distribution that :func:`relax` did not produce.

    Example:
        >>> import pyro, pyro.distributions as dist
        >>> import pyro.poutine as poutine
        >>> def model():
        ...     pyro.sample("z", dist.OneHotCategorical(logits=torch.zeros(3)))
        >>> site = poutine.trace(relax(model, temperature=0.5)).get_trace().nodes["z"]
        >>> type(discrete_counterpart(site["fn"])).__name__
        'OneHotCategorical'
    """
    return getattr(fn, _DISCRETE_ATTR, None)


def mark_relaxed(relaxed: Distribution, discrete: Distribution) -> Distribution:
    """Record on ``relaxed`` the discrete distribution it relaxes; returns ``relaxed``."""
    setattr(relaxed, _DISCRETE_ATTR, discrete)
    return relaxed


def map_leaf(
    fn: Distribution, replace: Callable[[Distribution], Distribution | None]
) -> Distribution | None:
    """``fn`` with its innermost distribution swapped for ``replace(leaf)``, or ``None`` where
    ``replace`` returns ``None``; any nesting of ``Independent`` (``.to_event``),
    ``ExpandedDistribution`` and ``MaskedDistribution`` around the leaf is rebuilt around the
    replacement (shared by :func:`relax_distribution` and the Gumbel-Rao and ReinMax
    counterparts).

    Example:
        >>> import pyro.distributions as dist
        >>> d = dist.Bernoulli(logits=torch.zeros(4, 8)).to_event(1)
        >>> new = map_leaf(d, lambda leaf: dist.Bernoulli(logits=leaf.logits + 1))
        >>> new.event_shape, float(new.base_dist.logits[0, 0])
        (torch.Size([8]), 1.0)
    """
    if isinstance(fn, Independent):
        inner = map_leaf(fn.base_dist, replace)
        return None if inner is None else Independent(inner, fn.reinterpreted_batch_ndims)
    if isinstance(fn, ExpandedDistribution):
        inner = map_leaf(fn.base_dist, replace)
        return None if inner is None else inner.expand(fn.batch_shape)
    if isinstance(fn, MaskedDistribution):
        inner = map_leaf(fn.base_dist, replace)
        return None if inner is None else MaskedDistribution(inner, fn._mask)
    return replace(fn)


def relax_distribution(
    fn: Distribution, temperature: float | torch.Tensor, straight_through: bool = False
) -> Distribution | None:
    """The Gumbel-softmax counterpart of a discrete distribution, or ``None`` if not discrete.

    Handles ``OneHotCategorical`` and ``Bernoulli`` and any nesting of ``Independent``
    (``.to_event``), ``ExpandedDistribution`` and ``MaskedDistribution`` around them.

    Example:
        >>> import pyro.distributions as dist
        >>> d = dist.OneHotCategorical(logits=torch.zeros(4, 8)).to_event(1)
        >>> type(relax_distribution(d, 0.5).base_dist).__name__
        'ConcreteOneHotCategorical'
    """
    return map_leaf(fn, lambda leaf: _relax_leaf(leaf, temperature, straight_through))


def _relax_leaf(
    fn: Distribution, temperature: float | torch.Tensor, straight_through: bool
) -> Distribution | None:
    if isinstance(
        fn,
        (
            ConcreteOneHotCategorical,
            ConcreteBernoulli,
            StraightThroughOneHotCategorical,
            StraightThroughBernoulli,
        ),
    ):
        return fn
    if isinstance(fn, OneHotCategorical):
        cls = StraightThroughOneHotCategorical if straight_through else ConcreteOneHotCategorical
        return cls(temperature, logits=fn.logits)
    if isinstance(fn, Bernoulli):
        cls = StraightThroughBernoulli if straight_through else ConcreteBernoulli
        return cls(temperature, logits=fn.logits)
    if isinstance(fn, Categorical):
        raise DVAEInputError(
            "a Categorical (integer-valued) latent has no Gumbel-softmax relaxation; declare it "
            "as dist.OneHotCategorical(logits) so that it can be relaxed"
        )
    return None


class RelaxMessenger(Messenger):
    """Replace unobserved discrete sample sites by their Concrete or straight-through relaxation.

    :param temperature: Concrete temperature (> 0).
    :param straight_through: draw exact discrete samples with relaxed gradients instead.
    :param sites: optional names of the sites to relax (default: every discrete latent site).

    Example:
        >>> import pyro, pyro.distributions as dist
        >>> def model():
        ...     return pyro.sample("z", dist.OneHotCategorical(logits=torch.zeros(3)))
        >>> with RelaxMessenger(temperature=0.5, straight_through=True):
        ...     z = model()
        >>> sorted(z.tolist())  # a hard one-hot sample that carries a relaxed gradient
        [0.0, 0.0, 1.0]
    """

    def __init__(
        self,
        temperature: float | torch.Tensor,
        straight_through: bool = False,
        sites: Iterable[str] | None = None,
    ) -> None:
        super().__init__()
        if float(torch.as_tensor(temperature).min()) <= 0:
            raise DVAEInputError(
                f"temperature must be > 0, got {float(torch.as_tensor(temperature).min())}; "
                "pass a positive temperature such as 1.0 or 0.5"
            )
        self.temperature = temperature
        self.straight_through = straight_through
        self.sites = None if sites is None else frozenset(sites)

    def _pyro_sample(self, msg: dict) -> None:
        if msg["is_observed"] or (self.sites is not None and msg["name"] not in self.sites):
            return
        if discrete_counterpart(msg["fn"]) is not None:  # already relaxed by an outer handler
            return
        relaxed = self._relax(msg["fn"])
        if relaxed is None or relaxed is msg["fn"]:
            return
        msg["fn"] = mark_relaxed(relaxed, msg["fn"])

    def _relax(self, fn: Distribution) -> Distribution | None:
        return relax_distribution(fn, self.temperature, self.straight_through)


def relax(
    fn: Callable | None = None,
    temperature: float | torch.Tensor = 1.0,
    straight_through: bool = False,
    sites: Iterable[str] | None = None,
):
    """Effect handler form of :class:`RelaxMessenger`.

    Example:
        >>> import pyro, pyro.distributions as dist
        >>> def model():
        ...     return pyro.sample("z", dist.OneHotCategorical(logits=torch.zeros(3)))
        >>> z = relax(model, temperature=0.5)()
        >>> bool(((z > 0) & (z < 1)).all())
        True
    """
    messenger = RelaxMessenger(temperature, straight_through=straight_through, sites=sites)
    return messenger if fn is None else messenger(fn)

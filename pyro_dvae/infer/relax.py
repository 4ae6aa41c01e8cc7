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

One handler serves every relaxation: a :class:`Relaxation` says which distribution replaces a
``OneHotCategorical`` and a ``Bernoulli`` leaf (Concrete, straight-through, Gumbel-Rao,
ReinMax, gapped straight-through, ...), at which temperature and with which extra arguments;
:class:`RelaxMessenger` applies it to the sites of a model or guide.

References:
    - [1] C. J. Maddison, A. Mnih, Y. W. Teh. The Concrete Distribution. arXiv:1611.00712
    - [2] E. Jang, S. Gu, B. Poole. Categorical Reparameterization with Gumbel-Softmax.
      arXiv:1611.01144
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from pyro.distributions import Independent
from pyro.distributions.torch_distribution import ExpandedDistribution, MaskedDistribution
from pyro.poutine.messenger import Messenger
from torch.distributions import (
    Bernoulli,
    Categorical,
    Distribution,
    OneHotCategorical,
    RelaxedBernoulli,
    RelaxedOneHotCategorical,
)

from ..distributions import (
    ConcreteBernoulli,
    ConcreteOneHotCategorical,
    StraightThroughBernoulli,
    StraightThroughOneHotCategorical,
)
from ..errors import DVAEInputError

__all__ = [
    "RelaxMessenger",
    "Relaxation",
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


@dataclass(frozen=True)
class Relaxation:
    """How a discrete leaf is relaxed: ``one_hot(temperature, logits=..., **options)`` replaces a
    ``OneHotCategorical``, ``bernoulli(...)`` a ``Bernoulli``; distributions that already have
    ``rsample`` (relaxed or straight-through ones) are kept, an integer ``Categorical`` raises.

    The built-in ones: :meth:`concrete`, :meth:`straight_through`, :meth:`gumbel_rao`,
    :meth:`reinmax` and :meth:`gst`; a new one is a ``Relaxation(name, OneHotClass,
    BernoulliClass, tau, {"extra": value})``.

    Example:
        >>> import pyro.distributions as dist
        >>> leaf = dist.Bernoulli(logits=torch.zeros(3))
        >>> type(Relaxation.gumbel_rao(0.5, num_samples=4).leaf(leaf)).__name__
        'GumbelRaoBernoulli'
    """

    name: str
    one_hot: Callable[..., Distribution]
    bernoulli: Callable[..., Distribution]
    temperature: float | torch.Tensor = 1.0
    options: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def concrete(cls, temperature: float | torch.Tensor) -> Relaxation:
        """Concrete (Gumbel-softmax) samples (Maddison et al. 2017; Jang et al. 2017)."""
        return cls("Gumbel-softmax", ConcreteOneHotCategorical, ConcreteBernoulli, temperature)

    @classmethod
    def straight_through(cls, temperature: float | torch.Tensor) -> Relaxation:
        """Exact discrete samples with the Concrete sample's gradient."""
        return cls(
            "straight-through",
            StraightThroughOneHotCategorical,
            StraightThroughBernoulli,
            temperature,
        )

    @classmethod
    def gumbel_rao(cls, temperature: float | torch.Tensor, num_samples: int = 10) -> Relaxation:
        """Straight-through with a Rao-Blackwellized gradient (Paulus et al. 2021)."""
        from ..distributions.gumbel_rao import GumbelRaoBernoulli, GumbelRaoOneHotCategorical

        return cls(
            "Gumbel-Rao",
            GumbelRaoOneHotCategorical,
            GumbelRaoBernoulli,
            temperature,
            {"num_samples": int(num_samples)},
        )

    @classmethod
    def reinmax(cls, temperature: float | torch.Tensor) -> Relaxation:
        """Exact samples with ReinMax's second-order gradient (Liu et al. 2023)."""
        from ..distributions.reinmax import ReinMaxBernoulli, ReinMaxOneHotCategorical

        return cls("ReinMax", ReinMaxOneHotCategorical, ReinMaxBernoulli, temperature)

    @classmethod
    def gst(cls, temperature: float | torch.Tensor = 1.0, gap: float = 1.0) -> Relaxation:
        """Exact samples with the gapped straight-through gradient (Fan et al. 2022)."""
        from .gst_elbo import GSTBernoulli, GSTOneHotCategorical, check_gap

        return cls("GST", GSTOneHotCategorical, GSTBernoulli, temperature, {"gap": check_gap(gap)})

    def leaf(self, fn: Distribution) -> Distribution | None:
        """The relaxed counterpart of one (unwrapped) distribution, or ``None`` if not discrete."""
        if isinstance(fn, (RelaxedOneHotCategorical, RelaxedBernoulli)):
            return fn  # already relaxed
        if isinstance(fn, (OneHotCategorical, Bernoulli)) and fn.has_rsample:
            return fn  # already straight-through (or another relaxation of it)
        if isinstance(fn, OneHotCategorical):
            return self.one_hot(self.temperature, logits=fn.logits, **self.options)
        if isinstance(fn, Bernoulli):
            return self.bernoulli(self.temperature, logits=fn.logits, **self.options)
        if isinstance(fn, Categorical):
            raise DVAEInputError(
                f"a Categorical (integer-valued) latent has no {self.name} relaxation; declare it "
                "as dist.OneHotCategorical(logits) so that it can be relaxed"
            )
        return None


def relax_distribution(
    fn: Distribution,
    relaxation: Relaxation | float | torch.Tensor,
    straight_through: bool = False,
) -> Distribution | None:
    """The relaxed counterpart of a discrete distribution, or ``None`` if not discrete.

    ``relaxation`` is a :class:`Relaxation`, or a temperature for the Concrete (or, with
    ``straight_through=True``, straight-through) relaxation. Handles ``OneHotCategorical`` and
    ``Bernoulli`` and any nesting of ``Independent`` (``.to_event``), ``ExpandedDistribution``
    and ``MaskedDistribution`` around them.

    Example:
        >>> import pyro.distributions as dist
        >>> d = dist.OneHotCategorical(logits=torch.zeros(4, 8)).to_event(1)
        >>> type(relax_distribution(d, 0.5).base_dist).__name__
        'ConcreteOneHotCategorical'
        >>> type(relax_distribution(d, Relaxation.reinmax(1.0)).base_dist).__name__
        'ReinMaxOneHotCategorical'
    """
    return map_leaf(fn, _as_relaxation(relaxation, straight_through).leaf)


def _as_relaxation(
    relaxation: Relaxation | float | torch.Tensor, straight_through: bool
) -> Relaxation:
    if isinstance(relaxation, Relaxation):
        return relaxation
    if straight_through:
        return Relaxation.straight_through(relaxation)
    return Relaxation.concrete(relaxation)


class RelaxMessenger(Messenger):
    """Replace unobserved discrete sample sites by their relaxation (:class:`Relaxation`).

    :param relaxation: a :class:`Relaxation`, or a Concrete temperature (> 0).
    :param straight_through: with a temperature: draw exact discrete samples with relaxed
        gradients instead (:meth:`Relaxation.straight_through`).
    :param sites: optional names of the sites to relax (default: every discrete latent site).

    Example:
        >>> import pyro, pyro.distributions as dist
        >>> def model():
        ...     return pyro.sample("z", dist.OneHotCategorical(logits=torch.zeros(3)))
        >>> with RelaxMessenger(0.5, straight_through=True):
        ...     z = model()
        >>> sorted(z.tolist())  # a hard one-hot sample that carries a relaxed gradient
        [0.0, 0.0, 1.0]
        >>> with RelaxMessenger(Relaxation.gumbel_rao(0.5, num_samples=4)):
        ...     z = model()
        >>> z.sum().item()
        1.0
    """

    def __init__(
        self,
        relaxation: Relaxation | float | torch.Tensor,
        straight_through: bool = False,
        sites: Iterable[str] | None = None,
    ) -> None:
        super().__init__()
        self.relaxation = _as_relaxation(relaxation, straight_through)
        low = float(torch.as_tensor(self.relaxation.temperature).min())
        if low <= 0:
            raise DVAEInputError(
                f"temperature must be > 0, got {low}; pass a positive temperature such as 1.0 "
                "or 0.5"
            )
        self.sites = None if sites is None else frozenset(sites)

    @property
    def temperature(self) -> float | torch.Tensor:
        return self.relaxation.temperature

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
        return map_leaf(fn, self.relaxation.leaf)


def relax(
    fn: Callable | None = None,
    temperature: float | torch.Tensor = 1.0,
    straight_through: bool = False,
    sites: Iterable[str] | None = None,
    *,
    relaxation: Relaxation | None = None,
):
    """Effect handler form of :class:`RelaxMessenger` (``relaxation`` overrides
    ``temperature`` and ``straight_through``).

    Example:
        >>> import pyro, pyro.distributions as dist
        >>> def model():
        ...     return pyro.sample("z", dist.OneHotCategorical(logits=torch.zeros(3)))
        >>> z = relax(model, temperature=0.5)()
        >>> bool(((z > 0) & (z < 1)).all())
        True
        >>> relax(model, relaxation=Relaxation.reinmax(1.0))().sum().item()
        1.0
    """
    chosen = relaxation if relaxation is not None else temperature
    messenger = RelaxMessenger(chosen, straight_through=straight_through, sites=sites)
    return messenger if fn is None else messenger(fn)

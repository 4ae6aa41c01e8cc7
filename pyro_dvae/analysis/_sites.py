"""Find the latent and observed sites of a Pyro model/guide pair and name their array dims.

A site value has shape ``batch_shape + event_shape`` (``batch_shape`` from the plates). The one
*data plate* (the plate holding every sample site) becomes the ``observation`` dim; other plates
keep their own names; event dims are named by role: ``latent_group`` for the groups of a latent
(a one-hot categorical latent is exported as integer codes, its ``category`` dim only appears in
its probabilities), and ``data_dim`` for an observed site with one event dim. A name that is
already taken with another size falls back to ``<site>_<role>`` so several sites never clash.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyro.poutine as poutine
import torch
from pyro.distributions import Independent
from pyro.distributions.torch_distribution import ExpandedDistribution, MaskedDistribution
from torch.distributions import Bernoulli, constraints

from ..errors import DVAEInputError
from ..infer.util import find_data_plates, sample_sites

__all__ = [
    "DimNamer",
    "SiteInfo",
    "discover_sites",
    "elementwise_log_prob",
    "leaf_distribution",
    "site_probs",
]

OBSERVATION = "observation"


def leaf_distribution(fn: Any) -> Any:
    """The innermost distribution under ``Independent`` / expanded / masked wrappers."""
    while isinstance(fn, (Independent, ExpandedDistribution, MaskedDistribution)):
        fn = fn.base_dist
    return fn


@dataclass(frozen=True)
class SiteInfo:
    """What the export needs to know about the model's sites and its data plate."""

    latent: tuple[str, ...]
    observed: tuple[str, ...]
    data_plate: str
    data_dim: int  # negative batch dim of the data plate
    num_observations: int
    max_plate_nesting: int


def _user_names(names: Sequence[str] | None, available: Sequence[str], kind: str) -> tuple:
    if names is None:
        return tuple(available)
    missing = [n for n in names if n not in available]
    if missing:
        raise DVAEInputError(
            f"{kind} site(s) {missing} not found; the model/guide have {kind} sites "
            f"{list(available)}"
        )
    return tuple(names)


def discover_sites(
    model: Callable,
    guide: Callable,
    args: tuple,
    kwargs: Mapping[str, Any],
    latent_sites: Sequence[str] | None = None,
    observed_sites: Sequence[str] | None = None,
) -> SiteInfo:
    """Trace ``guide`` then ``model`` (replaying the guide) once and classify their sites.

    Latent sites are the guide's unobserved sample sites; observed sites are the model's
    observed ones. Exactly one data plate (a plate holding every site of the model) is needed.
    """
    with torch.no_grad():
        guide_tr = poutine.trace(guide).get_trace(*args, **kwargs)
        model_tr = poutine.trace(poutine.replay(model, trace=guide_tr)).get_trace(*args, **kwargs)
    latent = [s["name"] for s in sample_sites(guide_tr) if not s["is_observed"]]
    observed = [s["name"] for s in sample_sites(model_tr) if s["is_observed"]]
    if not observed:
        raise DVAEInputError(
            "the model has no observed site; declare the data with pyro.sample(name, d, obs=x)"
        )
    if not latent:
        raise DVAEInputError("the guide has no latent sample site; nothing to export")
    plates = find_data_plates(model_tr)
    if len(plates.dims) != 1:
        raise DVAEInputError(
            f"the model needs exactly one data plate holding every sample site, found "
            f"{len(plates.dims)}; wrap latents and observations in one pyro.plate('data', N)"
        )
    dim = plates.dims[0]
    plate_name = next(
        f.name
        for s in sample_sites(model_tr)
        for f in s["cond_indep_stack"]
        if f.vectorized and f.dim == dim
    )
    return SiteInfo(
        latent=_user_names(latent_sites, latent, "latent"),
        observed=_user_names(observed_sites, observed, "observed"),
        data_plate=plate_name,
        data_dim=dim,
        num_observations=plates.sizes[0],
        max_plate_nesting=plates.max_plate_nesting,
    )


class DimNamer:
    """Names the dims of each exported variable; collects ``dims`` for ``az.from_dict``.

    Example:
        >>> namer = DimNamer()
        >>> namer.claim("z", "latent_group", 4), namer.claim("w", "latent_group", 3)
        ('latent_group', 'w_latent_group')
    """

    def __init__(self) -> None:
        self.sizes: dict[str, int] = {}
        self.dims: dict[str, list[str]] = {}

    def claim(self, site: str, role: str, size: int) -> str:
        """``role`` if free (or already used with this size), else ``<site>_<role>``."""
        for name in (role, f"{site}_{role}"):
            if self.sizes.setdefault(name, size) == size:
                return name
        raise DVAEInputError(f"cannot name a dim of site {site!r}: {role!r} sizes clash")

    def site_array(
        self,
        site: Mapping[str, Any],
        value: torch.Tensor,
        info: SiteInfo,
        observed: bool,
        category: bool = False,
        as_codes: bool = False,
    ) -> tuple[np.ndarray, list[str]]:
        """``value`` of ``site`` as an array ``[observation, ...]`` and its dim names.

        ``value`` has the site's ``batch_shape + event_shape`` (or broadcasts to it), plus one
        trailing ``category`` dim when ``category`` is true (the probs of an index-valued
        ``Categorical``). With ``as_codes``, a one-hot categorical value becomes its integer
        code (the index of its 1) and loses its ``category`` dim.
        """
        fn = site["fn"]
        batch, event = tuple(fn.batch_shape), tuple(fn.event_shape)
        extra = tuple(value.shape[-1:]) if category else ()
        value = torch.broadcast_to(value, batch + event + extra)
        one_hot = _is_one_hot(fn) and not observed
        if as_codes and one_hot and event:
            value, event = value.argmax(-1), event[:-1]
            one_hot = False
        frames = {f.dim: f.name for f in site["cond_indep_stack"] if f.vectorized}
        names: list[str | None] = []
        for i, size in enumerate(batch):
            dim = i - len(batch)
            if dim == info.data_dim:
                names.append(OBSERVATION)
            elif dim in frames:
                names.append(self.claim(site["name"], frames[dim], size))
            elif size == 1:
                names.append(None)  # a broadcast dim outside every plate: dropped
            else:
                names.append(self.claim(site["name"], f"batch_{i}", size))
        if OBSERVATION not in names:
            raise DVAEInputError(
                f"site {site['name']!r} is outside the data plate '{info.data_plate}'; "
                "every exported site needs one value per observation"
            )
        names += self._event_names(site["name"], event, one_hot, observed)
        if category:
            names.append(self.claim(site["name"], "category", extra[0]))
        keep = [i for i, n in enumerate(names) if n is not None]
        arr = value.detach().cpu().reshape([value.shape[i] for i in keep])
        dims = [n for n in names if n is not None]
        first = dims.index(OBSERVATION)
        order = [first] + [i for i in range(len(dims)) if i != first]
        return arr.permute(order).numpy(), [dims[i] for i in order]

    def _event_names(self, site: str, event: tuple, one_hot: bool, observed: bool) -> list[str]:
        n = len(event)
        if n == 0:
            return []
        if observed:
            roles = ["data_dim"] if n == 1 else [f"dim_{j}" for j in range(n)]
        elif one_hot:
            groups = ["latent_group"] if n == 2 else [f"group_{j}" for j in range(n - 1)]
            roles = groups + ["category"]
        else:
            roles = ["latent_group"] if n == 1 else [f"dim_{j}" for j in range(n)]
        return [self.claim(site, role, size) for role, size in zip(roles, event)]


def _is_one_hot(fn: Any) -> bool:
    """Whether ``fn``'s values are one-hot vectors (its support, under ``Independent``)."""
    support = fn.support
    while isinstance(support, constraints.independent):
        support = support.base_constraint
    return isinstance(support, type(constraints.one_hot))


def site_probs(site: Mapping[str, Any]) -> tuple[torch.Tensor, bool] | None:
    """The ``probs`` of a site's discrete distribution broadcast to the site's value shape, and
    whether a trailing category dim was added (index-valued ``Categorical``); ``None`` if the
    distribution has no ``probs`` (e.g. a continuous latent)."""
    fn = site["fn"]
    leaf = leaf_distribution(fn)
    try:
        probs = leaf.probs
    except (AttributeError, NotImplementedError):
        return None
    if not isinstance(probs, torch.Tensor):
        return None
    extra = tuple(probs.shape[len(leaf.batch_shape) + len(leaf.event_shape) :])
    shape = tuple(fn.batch_shape) + tuple(fn.event_shape) + extra
    return torch.broadcast_to(probs, shape), bool(extra)


def elementwise_log_prob(fn: Any, value: torch.Tensor) -> tuple[torch.Tensor, bool]:
    """The log-density of ``value`` under a site's ``fn`` per element of the value (ArviZ's
    pointwise convention: one log-likelihood per element of the observed data), and whether it is
    per element.

    ``Independent`` (``.to_event``) sums are undone, masks and expansions kept; a leaf with event
    dims of its own is split into elements where it is a vector of independent Bernoulli
    variables with ``logits`` (:class:`~pyro_dvae.distributions.BernoulliVector`,
    :class:`~pyro_dvae.distributions.LinearBernoulliVector`). Any other leaf with event dims
    gives its ``log_prob`` over its batch dims and ``False``.

    Example:
        >>> import pyro.distributions as dist
        >>> d = dist.Bernoulli(logits=torch.zeros(2, 3)).to_event(1)
        >>> lp, per_element = elementwise_log_prob(d, torch.ones(2, 3))
        >>> tuple(lp.shape), per_element
        ((2, 3), True)
    """
    if isinstance(fn, Independent):
        return elementwise_log_prob(fn.base_dist, value)
    if isinstance(fn, MaskedDistribution):
        lp, per_element = elementwise_log_prob(fn.base_dist, value)
        if fn._mask is True:
            return lp, per_element
        mask = torch.as_tensor(fn._mask, device=lp.device)
        if per_element:
            mask = mask.reshape(mask.shape + (1,) * fn.base_dist.event_dim)
        return torch.where(mask, lp, torch.zeros_like(lp)), per_element
    if isinstance(fn, ExpandedDistribution):
        lp, per_element = elementwise_log_prob(fn.base_dist, value)
        batch = tuple(fn.batch_shape) + (tuple(fn.base_dist.event_shape) if per_element else ())
        return lp.expand(torch.broadcast_shapes(batch, lp.shape)), per_element
    if not fn.event_shape:
        return fn.log_prob(value), True
    support = getattr(fn.support, "base_constraint", None)
    if support is constraints.boolean and hasattr(fn, "logits"):
        return Bernoulli(logits=fn.logits, validate_args=False).log_prob(value), True
    return fn.log_prob(value), False

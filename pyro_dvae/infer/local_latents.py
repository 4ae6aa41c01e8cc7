"""Per-datum terms shared by the multi-sample and antithetic score-function estimators.

:class:`~pyro_dvae.infer.RLOOELBO` and :class:`~pyro_dvae.infer.DisARMELBO` give each datum its
own learning signal: the sample ELBO ``f = log p(x, z) - log q(z|x)`` summed over every site
but kept separate along the *data plates* (plates that hold every sample site, see
:func:`~pyro_dvae.infer.util.find_data_plates`). Datum n's latents only enter datum n's terms,
so a baseline or an antithetic difference built from datum n's ``f`` is still unbiased, and far
less noisy than one built from the whole batch. A latent outside every data plate (a global
latent) makes the whole batch a single datum.
"""

from __future__ import annotations

import torch
from pyro.distributions.util import is_identically_zero
from pyro.poutine import Trace

from ..errors import DVAEInputError
from .util import DataPlates, callable_key, find_data_plates, sample_sites

__all__ = [
    "broadcast_to_site",
    "local_data_plates",
    "per_datum_terms",
    "require_factorized_guide",
]


def local_data_plates(model_trace: Trace, guide_trace: Trace, *, lead: int, name: str):
    """The data plates of ``model_trace``, leaving out ``lead`` leading particle dims.

    :param lead: 1 when the traces carry a vectorized particle plate left of the model's plates
        (it is then the outermost plate and is dropped), else 0.
    :param name: the estimator's name, for the error message.

    Example:
        >>> import pyro, pyro.distributions as dist, pyro.poutine as poutine
        >>> def model(x):
        ...     with pyro.plate("data", len(x)):
        ...         z = pyro.sample("z", dist.Bernoulli(0.5))
        ...         pyro.sample("x", dist.Normal(z, 1.0), obs=x)
        >>> tr = poutine.trace(model).get_trace(torch.zeros(4))
        >>> local_data_plates(tr, tr, lead=0, name="RLOO").sizes
        (4,)
    """
    found = find_data_plates(model_trace)
    nesting = found.max_plate_nesting
    keep = list(zip(found.dims, found.sizes))
    if lead:
        keep = [(d, s) for d, s in keep if d != -nesting]
        nesting -= 1
    for site in sample_sites(guide_trace):
        frames = {(f.dim, f.size) for f in site["cond_indep_stack"] if f.vectorized}
        if not set(keep) <= frames:
            raise DVAEInputError(
                f"latent site '{site['name']}' lies outside the data plates; {name} needs every "
                "guide site inside the plates that hold every model site: move it into them"
            )
    return DataPlates(
        dims=tuple(d for d, _ in keep), sizes=tuple(s for _, s in keep), max_plate_nesting=nesting
    )


def per_datum_terms(
    model_trace: Trace,
    guide_trace: Trace,
    plates: DataPlates,
    *,
    lead: int,
    detach_discrete_log_q: bool = False,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Per-datum sample ELBO ``f = log p(x, z) - log q(z|x)`` and the per-datum score terms
    ``log q`` (differentiable in the guide's parameters at the drawn value) of every
    non-reparameterized guide site, by name. Shapes ``[*lead_sizes, num_data]``.

    The traces must carry log-densities and score parts (Pyro's ``get_importance_trace``).
    With ``detach_discrete_log_q`` the non-reparameterized sites' ``log q`` enters ``f``
    detached: its gradient at a fixed value has expectation zero, so dropping it keeps the
    estimate unbiased and removes its noise.
    """
    f = 0.0
    scores: dict[str, torch.Tensor] = {}
    for site in sample_sites(model_trace):
        f = f + plates.reduce(site["log_prob"], lead)
    for site in sample_sites(guide_trace):
        log_q = site["log_prob"]
        term = site["score_parts"].score_function
        if not is_identically_zero(term) and not site["is_observed"]:
            scores[site["name"]] = plates.reduce(term, lead)
            if detach_discrete_log_q:
                log_q = log_q.detach()
        f = f - plates.reduce(log_q, lead)
    return torch.as_tensor(f), scores


def broadcast_to_site(per_datum: torch.Tensor, plates: DataPlates, event_dim: int) -> torch.Tensor:
    """Reshape a ``[*lead, num_data]`` tensor so that it broadcasts against a site's value
    (``[*lead, *batch_shape, *event_shape]``, the data plates at their dims; ``lead`` is empty
    or the particle dims left of the plates).

    Example:
        >>> plates = DataPlates(dims=(-1,), sizes=(3,), max_plate_nesting=1)
        >>> broadcast_to_site(torch.arange(3.0), plates, event_dim=1).shape
        torch.Size([3, 1])
        >>> broadcast_to_site(torch.zeros(2, 3), plates, event_dim=1).shape  # 2 particles
        torch.Size([2, 3, 1])
    """
    width = plates.max_plate_nesting
    shape = [1] * width
    for d, s in zip(plates.dims, plates.sizes):
        shape[width + d] = s
    return per_datum.reshape(per_datum.shape[:-1] + tuple(shape) + (1,) * event_dim)


def require_factorized_guide(guide, args: tuple, kwargs: dict, checked: set, needs: str) -> None:
    """Refuse a guide whose discrete sites depend on each other (Pyro's provenance tracking),
    in one line that says which estimator ``needs`` it and what to use instead. Each guide is
    checked once (``checked`` holds the guides seen; bound methods count as their function and
    object).

    Example:
        >>> import pyro, pyro.distributions as dist
        >>> def guide():
        ...     a = pyro.sample("a", dist.Bernoulli(0.5))
        ...     pyro.sample("b", dist.Bernoulli(0.2 + 0.5 * a))
        >>> require_factorized_guide(guide, (), {}, set(), "REBAR")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        pyro_dvae.errors.DVAEInputError: guide site 'b' depends on ['a']; REBAR needs ...
    """
    from pyro.infer.inspect import get_dependencies

    key = callable_key(guide)
    if key in checked:
        return
    try:
        deps = get_dependencies(guide, args, kwargs)["prior_dependencies"]
    except Exception:  # noqa: BLE001 - provenance tracking failed: nothing to check with
        deps = {}
    for site, upstream in deps.items():
        others = sorted(set(upstream) - {site})
        if others:
            raise DVAEInputError(
                f"guide site '{site}' depends on {others}; {needs} needs the guide's discrete "
                "sites independent given the data: use rloo or disarm"
            )
    checked.add(key)

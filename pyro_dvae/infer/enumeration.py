"""Exact log p(x) and the exact posterior of a model's discrete latents.

Both are computed by :class:`~pyro_dvae.infer.StructuredEnumeration`, which sums each discrete
site the way the model's structure allows: plate-local sites per plate element, ``pyro.markov``
chains by variable elimination, and the *coupled* sites of the data plate (a decoder's latent
groups, including ``.to_event`` groups inside one site that Pyro cannot enumerate) jointly, in
memory-bounded blocks of configurations, so that peak memory follows the block size, not K^N.

Models must be written so that latent values broadcast (as for Pyro's parallel enumeration):
e.g. ``decoder(z.flatten(-2))`` rather than ``z.view(batch, -1)``.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from ..errors import DVAEInputError
from .structured_enumeration import DEFAULT_MAX_CONFIGURATIONS, StructuredEnumeration

__all__ = [
    "DEFAULT_MAX_CONFIGURATIONS",
    "exact_log_likelihood",
    "exact_posterior",
]


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
    space = _model_side_space(model, args, kwargs, max_configurations, chunk_size)
    return space.log_marginal()


def exact_posterior(
    model: Callable,
    *args,
    max_configurations: int = 2**16,
    chunk_size: int | None = None,
    **kwargs,
) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """Every joint configuration of the model's coupled discrete sites and its exact posterior
    probability per datum.

    The coupled sites are those :func:`exact_log_likelihood` sums jointly: the discrete sites
    directly in the data plate, outside ``pyro.markov`` (a VAE's latent groups). Every other
    discrete site (local to a nested plate, or in a Markov chain) is summed out, so ``probs``
    is the marginal posterior of the coupled sites. Returns ``(values, probs)``:
    ``values[site]`` has a leading dim of size C (the number of joint configurations, the
    first site varying slowest) and ``probs`` has shape ``[C, num_data]`` (columns sum to
    one). For small latent spaces (tutorials, tests, posterior analysis).

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
    space = _model_side_space(model, args, kwargs, max_configurations, chunk_size)
    if not space.coupled:
        raise DVAEInputError(
            "the model has no discrete site directly in its data plate outside pyro.markov, "
            "so there is no joint posterior to tabulate; for plate-local or Markov sites use "
            "pyro.infer.TraceEnum_ELBO().compute_marginals or pyro.infer.infer_discrete"
        )
    log_joint = space.log_joint_table()
    log_joint = log_joint.reshape(log_joint.shape[0], -1)
    return space.coupled_values(), (log_joint - log_joint.logsumexp(0)).exp()


def _model_side_space(
    model: Callable,
    args: tuple,
    kwargs: dict,
    max_configurations: int,
    chunk_size: int | None,
) -> StructuredEnumeration:
    """The engine summing every discrete site in the model; one-line errors for a continuous
    latent or a subsampled data plate (no exact per-datum value)."""
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
    return space

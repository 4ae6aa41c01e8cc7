"""Named training estimators, as used by the command line and the comparison harness."""

from __future__ import annotations

from pyro.infer import ELBO

from ..errors import DVAEInputError
from .enumerated_elbo import EnumeratedELBO
from .enumeration import DEFAULT_MAX_CONFIGURATIONS
from .exact_marginal_elbo import ExactMarginalELBO
from .gumbel_softmax_elbo import GumbelSoftmaxELBO

__all__ = ["ESTIMATORS", "RELAXED_ESTIMATORS", "build_elbo"]

ESTIMATORS = ("gumbel-softmax", "st-gumbel", "enumerate", "exact")
RELAXED_ESTIMATORS = ("gumbel-softmax", "st-gumbel")


def build_elbo(
    estimator: str,
    *,
    temperature: float = 1.0,
    kl: str = "relaxed",
    num_particles: int = 1,
    max_configurations: int = DEFAULT_MAX_CONFIGURATIONS,
    chunk_size: int | None = None,
) -> ELBO:
    """The Pyro ELBO object for a named estimator.

    - ``gumbel-softmax``: :class:`GumbelSoftmaxELBO` with ``kl`` in {relaxed, analytic};
    - ``st-gumbel``: straight-through Gumbel-softmax (``kl`` must be ``analytic``);
    - ``enumerate``: :class:`EnumeratedELBO` (expectation over q summed exactly);
    - ``exact``: :class:`ExactMarginalELBO` (log p(x), z summed out of the model).

    Example:
        >>> build_elbo("st-gumbel", kl="analytic").straight_through
        True
    """
    if estimator == "gumbel-softmax":
        return GumbelSoftmaxELBO(
            temperature=temperature,
            kl=kl,
            num_particles=num_particles,
            vectorize_particles=num_particles > 1,
        )
    if estimator == "st-gumbel":
        return GumbelSoftmaxELBO(
            temperature=temperature,
            kl=kl,
            straight_through=True,
            num_particles=num_particles,
            vectorize_particles=num_particles > 1,
        )
    if estimator == "enumerate":
        return EnumeratedELBO(max_configurations=max_configurations, chunk_size=chunk_size)
    if estimator == "exact":
        return ExactMarginalELBO(max_configurations=max_configurations, chunk_size=chunk_size)
    raise DVAEInputError(
        f"unknown estimator {estimator!r}; choose one of {', '.join(ESTIMATORS)}"
    )

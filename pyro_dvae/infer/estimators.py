"""Named training estimators, as used by the command line and the comparison harness."""

from __future__ import annotations

from pyro.infer import ELBO

from ..errors import DVAEInputError
from .enumerated_elbo import EnumeratedELBO
from .enumeration import DEFAULT_MAX_CONFIGURATIONS
from .exact_marginal_elbo import ExactMarginalELBO
from .gumbel_rao_elbo import GumbelRaoELBO
from .gumbel_softmax_elbo import GumbelSoftmaxELBO
from .reinmax_elbo import ReinMaxELBO
from .score_function_elbo import ScoreFunctionELBO
from .vimco_elbo import VIMCOELBO

__all__ = ["ESTIMATORS", "EXACT_ESTIMATORS", "RELAXED_ESTIMATORS", "build_elbo"]

ESTIMATORS = (
    "gumbel-softmax",
    "st-gumbel",
    "gumbel-rao",
    "reinmax",
    "enumerate",
    "exact",
    "score-function",
    "score-function-baseline",
    "nvil",
    "vimco",
)
#: estimators whose gradient goes through a Gumbel-softmax relaxation (they take a temperature)
RELAXED_ESTIMATORS = ("gumbel-softmax", "st-gumbel", "gumbel-rao", "reinmax")
#: estimators that enumerate every latent configuration (limited by ``max_configurations``)
EXACT_ESTIMATORS = ("enumerate", "exact")


def build_elbo(
    estimator: str,
    *,
    temperature: float = 1.0,
    kl: str = "relaxed",
    num_particles: int = 1,
    max_configurations: int = DEFAULT_MAX_CONFIGURATIONS,
    chunk_size: int | None = None,
    gumbel_rao_samples: int = 10,
    max_plate_nesting: int | None = None,
) -> ELBO:
    """The Pyro ELBO object for a named estimator.

    - ``gumbel-softmax``: :class:`GumbelSoftmaxELBO` with ``kl`` in {relaxed, analytic};
    - ``st-gumbel``: straight-through Gumbel-softmax (``kl`` must be ``analytic``);
    - ``enumerate``: :class:`EnumeratedELBO` (expectation over q summed exactly);
    - ``exact``: :class:`ExactMarginalELBO` (log p(x), z summed out of the model);
    - ``gumbel-rao``: :class:`GumbelRaoELBO` with ``gumbel_rao_samples`` conditional samples;
    - ``reinmax``: :class:`ReinMaxELBO` (second-order straight-through; ``kl`` analytic);
    - ``score-function``: :class:`ScoreFunctionELBO` without baseline (REINFORCE);
    - ``score-function-baseline``: with Pyro's decaying-average baseline;
    - ``nvil``: with a learned, input-dependent neural baseline;
    - ``vimco``: :class:`VIMCOELBO` with ``max(2, num_particles)`` particles.

    ``max_plate_nesting`` is passed to the sampling ELBOs (guessed by Pyro when ``None``).

    Example:
        >>> build_elbo("st-gumbel", kl="analytic").straight_through
        True
    """
    nesting = {} if max_plate_nesting is None else {"max_plate_nesting": max_plate_nesting}
    if estimator == "gumbel-softmax":
        return GumbelSoftmaxELBO(
            temperature=temperature,
            kl=kl,
            num_particles=num_particles,
            vectorize_particles=num_particles > 1,
            **nesting,
        )
    if estimator == "st-gumbel":
        return GumbelSoftmaxELBO(
            temperature=temperature,
            kl=kl,
            straight_through=True,
            num_particles=num_particles,
            vectorize_particles=num_particles > 1,
            **nesting,
        )
    if estimator == "gumbel-rao":
        return GumbelRaoELBO(
            num_samples=gumbel_rao_samples,
            temperature=temperature,
            num_particles=num_particles,
            vectorize_particles=num_particles > 1,
            **nesting,
        )
    if estimator == "reinmax":
        return ReinMaxELBO(
            temperature=temperature,
            num_particles=num_particles,
            vectorize_particles=num_particles > 1,
            **nesting,
        )
    if estimator in ("score-function", "score-function-baseline", "nvil"):
        baseline = {
            "score-function": "none",
            "score-function-baseline": "decaying_average",
            "nvil": "neural",
        }[estimator]
        return ScoreFunctionELBO(baseline=baseline, num_particles=num_particles, **nesting)
    if estimator == "vimco":
        return VIMCOELBO(num_particles=max(2, num_particles), **nesting)
    if estimator == "enumerate":
        return EnumeratedELBO(max_configurations=max_configurations, chunk_size=chunk_size)
    if estimator == "exact":
        return ExactMarginalELBO(max_configurations=max_configurations, chunk_size=chunk_size)
    raise DVAEInputError(f"unknown estimator {estimator!r}; choose one of {', '.join(ESTIMATORS)}")

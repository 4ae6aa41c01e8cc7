"""Named training estimators (:func:`build_elbo`), declared once in the estimator registry.

Each estimator below is one :func:`~pyro_dvae.infer.registry.register_estimator` declaration;
see :mod:`pyro_dvae.infer.registry` for how to add one.

Example:
    >>> build_elbo("st-gumbel").straight_through
    True
"""

from __future__ import annotations

from pyro.infer import ELBO

from .disarm_elbo import DisARMELBO
from .enumerated_elbo import EnumeratedELBO
from .exact_marginal_elbo import ExactMarginalELBO
from .gst_elbo import GSTELBO
from .gumbel_rao_elbo import GumbelRaoELBO
from .gumbel_softmax_elbo import GumbelSoftmaxELBO
from .rebar_elbo import RELAXELBO
from .registry import OPTIONS, estimator_names, get_estimator, register_estimator
from .reinmax_elbo import ReinMaxELBO
from .rloo_elbo import RLOOELBO
from .score_function_elbo import ScoreFunctionELBO
from .unordered_set_elbo import UnorderedSetELBO
from .vimco_elbo import VIMCOELBO

__all__ = ["ESTIMATORS", "EXACT_ESTIMATORS", "RELAXED_ESTIMATORS", "build_elbo"]

_SAMPLING = ("num_particles", "max_plate_nesting")
_RELAXED = dict(relaxed=True, vectorize_particles=True)
_EXACT = dict(exact=True, options=("max_configurations", "chunk_size"))

register_estimator(
    "gumbel-softmax",
    GumbelSoftmaxELBO,
    options=("temperature", "kl", *_SAMPLING),
    hard=False,
    kl_modes=("analytic", "relaxed"),
    priors=("uniform", "learned"),  # relaxed codes: an autoregressive prior scores hard ones
    summary="pathwise through the Concrete relaxation at temperature tau",
    **_RELAXED,
)
register_estimator(
    "st-gumbel",
    GumbelSoftmaxELBO,
    options=("temperature", "kl", *_SAMPLING),
    fixed={"straight_through": True},
    kl_modes=("analytic",),
    summary="exact one-hot forward sample (Gumbel-max), relaxed gradient backward",
    **_RELAXED,
)
register_estimator(
    "gumbel-rao",
    GumbelRaoELBO,
    options={"temperature": "temperature", "gumbel_rao_samples": "num_samples"}
    | {o: o for o in _SAMPLING},
    kl_modes=("analytic",),
    summary="straight-through with the gradient averaged over conditional Gumbel noise",
    **_RELAXED,
)
register_estimator(
    "reinmax",
    ReinMaxELBO,
    options=("temperature", *_SAMPLING),
    kl_modes=("analytic",),
    summary="exact discrete forward sample, second-order straight-through gradient",
    **_RELAXED,
)
register_estimator(
    "enumerate", EnumeratedELBO, summary="the expectation over q summed exactly", **_EXACT
)
register_estimator(
    "exact", ExactMarginalELBO, summary="log p(x) itself, z summed out of the model", **_EXACT
)
register_estimator(
    "score-function",
    ScoreFunctionELBO,
    options=_SAMPLING,
    fixed={"baseline": "none"},
    summary="REINFORCE without baseline",
)
register_estimator(
    "score-function-baseline",
    ScoreFunctionELBO,
    options=_SAMPLING,
    fixed={"baseline": "decaying_average"},
    summary="REINFORCE with a moving-average baseline",
)
register_estimator(
    "nvil",
    ScoreFunctionELBO,
    options=_SAMPLING,
    fixed={"baseline": "neural"},
    summary="REINFORCE with a learned, input-dependent baseline",
)
register_estimator(
    "vimco",
    VIMCOELBO,
    options=_SAMPLING,
    min_particles=2,
    summary="multi-sample bound with leave-one-out baselines",
)
register_estimator(
    "rloo",
    RLOOELBO,
    options=_SAMPLING,
    min_particles=2,
    summary="REINFORCE with K samples and leave-one-out baselines (Kool et al. 2019)",
)
register_estimator(
    "disarm",
    DisARMELBO,
    options={"disarm_categorical": "categorical"} | {o: o for o in _SAMPLING},
    fixed={"vectorize_pairs": True},  # the model broadcasts over particles, as for rloo
    summary="antithetic Bernoulli / stick-breaking categorical pairs (Dong et al. 2020, 2021); "
    "num_particles = pairs",
)
register_estimator(
    "gst",
    GSTELBO,
    options=("temperature", *_SAMPLING),
    kl_modes=("analytic",),
    summary="exact discrete forward sample, gapped straight-through gradient (Fan et al. 2022)",
    **_RELAXED,
)
register_estimator(
    "rebar",
    RELAXELBO,
    options=_SAMPLING,
    fixed={"control": "rebar"},
    priors=("uniform", "learned"),  # the control variate scores relaxed codes under the prior
    mixed=False,
    summary="REINFORCE with REBAR's learned relaxed control variate (Tucker et al. 2017)",
)
register_estimator(
    "relax",
    RELAXELBO,
    options=_SAMPLING,
    fixed={"control": "relax"},
    priors=("uniform", "learned"),
    mixed=False,
    summary="REBAR's control variate plus a learned network (Grathwohl et al. 2018)",
)
register_estimator(
    "unordered-set",
    UnorderedSetELBO,
    options={"num_particles": "num_samples", "max_plate_nesting": "max_plate_nesting"},
    min_particles=2,
    mixed=False,
    summary="k codes sampled without replacement, unordered set estimator (Kool et al. 2020)",
)

#: every registered estimator name (the built-in ones, in this order)
ESTIMATORS = estimator_names()
#: estimators whose gradient goes through a Gumbel-softmax relaxation (they take a temperature)
RELAXED_ESTIMATORS = estimator_names(relaxed=True)
#: estimators that enumerate every latent configuration (limited by ``max_configurations``)
EXACT_ESTIMATORS = estimator_names(exact=True)


def build_elbo(
    estimator: str,
    *,
    temperature: float = OPTIONS["temperature"],
    kl: str = OPTIONS["kl"],
    num_particles: int = OPTIONS["num_particles"],
    max_configurations: int | None = None,
    chunk_size: int | None = None,
    gumbel_rao_samples: int = OPTIONS["gumbel_rao_samples"],
    disarm_categorical: str = OPTIONS["disarm_categorical"],
    max_plate_nesting: int | None = None,
) -> ELBO:
    """The Pyro ELBO object for a registered estimator (:mod:`pyro_dvae.infer.registry`).

    - ``gumbel-softmax``: :class:`GumbelSoftmaxELBO` with ``kl`` in {analytic, relaxed};
    - ``st-gumbel``: straight-through Gumbel-softmax (``kl="analytic"`` only);
    - ``gumbel-rao``: :class:`GumbelRaoELBO` with ``gumbel_rao_samples`` conditional samples;
    - ``reinmax``: :class:`ReinMaxELBO` (second-order straight-through);
    - ``enumerate``: :class:`EnumeratedELBO` (expectation over q summed exactly);
    - ``exact``: :class:`ExactMarginalELBO` (log p(x), z summed out of the model);
    - ``score-function``: :class:`ScoreFunctionELBO` without baseline (REINFORCE);
    - ``score-function-baseline``: with Pyro's decaying-average baseline;
    - ``nvil``: with a learned, input-dependent neural baseline;
    - ``vimco``: :class:`VIMCOELBO` with ``max(2, num_particles)`` particles;
    - ``rloo``: :class:`RLOOELBO` (leave-one-out baselines) with ``max(2, num_particles)``;
    - ``disarm``: :class:`DisARMELBO` with ``num_particles`` antithetic pairs; categorical sites
      by ``disarm_categorical`` (``stick-breaking`` DisARM or the two-sample ``loo`` fallback);
    - ``gst``: :class:`GSTELBO` (gapped straight-through at ``temperature``);
    - ``rebar``, ``relax``: :class:`RELAXELBO` with REBAR's or RELAX's control variate;
    - ``unordered-set``: :class:`UnorderedSetELBO` with ``max(2, num_particles)`` codes per datum
      sampled without replacement.

    Options an estimator does not take are ignored; ``max_plate_nesting`` is passed to the
    sampling ELBOs (guessed by Pyro when ``None``).

    Example:
        >>> build_elbo("st-gumbel").straight_through
        True
        >>> build_elbo("gumbel-rao", kl="relaxed")
        Traceback (most recent call last):
        ...
        pyro_dvae.errors.DVAEInputError: estimator 'gumbel-rao' cannot use kl='relaxed': its \
hard one-hot sample has zero density under the relaxed (Concrete) prior; use kl='analytic'
    """
    return get_estimator(estimator).build(
        temperature=temperature,
        kl=kl,
        num_particles=num_particles,
        max_configurations=max_configurations,
        chunk_size=chunk_size,
        gumbel_rao_samples=gumbel_rao_samples,
        disarm_categorical=disarm_categorical,
        max_plate_nesting=max_plate_nesting,
    )

"""The estimator registry: each training estimator's name, ELBO class, options and capabilities.

Every layer that needs to know about estimators reads this one table: :func:`build_elbo`, the
command line's ``--estimator`` choices, :class:`~pyro_dvae.training.TrainConfig` validation
(which KL modes, priors and options an estimator accepts), ``pyro-dvae compare`` spec options
and the estimator tables of README.md and docs/guide/estimators.rst
(``tests/infer/test_registry.py`` checks that they list every registered name).

Registering a new estimator is one declaration, next to the built-in ones at the end of
:mod:`pyro_dvae.infer.estimators` (so that it is registered whenever :mod:`pyro_dvae.infer` is
imported)::

    register_estimator(
        "rloo",                       # the name used by --estimator, build_elbo and compare specs
        RLOOELBO,                     # the ELBO class (or any callable returning a Pyro ELBO)
        options=SAMPLING,             # build_elbo options it takes (see OPTIONS), or a dict
        hard=True,                    # forward pass draws hard discrete codes
        summary="REINFORCE with leave-one-out baselines (Kool et al. 2019)",
    )

``options`` names the :func:`build_elbo` options (:data:`OPTIONS`) the class accepts; a dict maps
an option to a differently named keyword (``{"gumbel_rao_samples": "num_samples"}``). Options
an estimator does not take are ignored by :func:`build_elbo`, so a training configuration can
pass all of them. ``fixed`` holds keywords always passed (``{"baseline": "neural"}``).
Capabilities: ``relaxed`` (the gradient goes through a temperature relaxation: it takes
``temperature`` and supports KL warm-up), ``hard`` (forward samples are hard codes), ``exact``
(enumerates every configuration, limited by ``max_configurations``), ``kl_modes`` (for relaxed
estimators, the KL terms it can train with; the first is its default), ``priors`` (the
:class:`~pyro_dvae.models.DiscreteVAE` priors it can train: an autoregressive prior scores hard
codes only), ``mixed`` (handles mixed discrete/continuous latents) and ``min_particles``.

Example:
    >>> info = get_estimator("st-gumbel")
    >>> info.relaxed, info.hard, info.kl_modes
    (True, True, ('analytic',))
    >>> "st-gumbel" in estimator_names(relaxed=True)
    True
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from pyro.infer import ELBO

from ..errors import DVAEInputError

__all__ = [
    "ALL_PRIORS",
    "KL_MODES",
    "OPTIONS",
    "EstimatorInfo",
    "estimator_names",
    "get_estimator",
    "register_estimator",
]

#: the options :func:`~pyro_dvae.infer.build_elbo` understands, with their defaults
OPTIONS: dict[str, Any] = {
    "temperature": 1.0,
    "kl": "analytic",
    "num_particles": 1,
    "gumbel_rao_samples": 10,
    "disarm_categorical": "stick-breaking",
    "max_configurations": None,  # None: the ELBO's own default
    "chunk_size": None,
    "max_plate_nesting": None,  # None: guessed by Pyro
}
#: the KL terms of relaxed estimators; ``analytic`` (the exact discrete KL) is the default
KL_MODES = ("analytic", "relaxed")
#: priors of :class:`~pyro_dvae.models.DiscreteVAE`
ALL_PRIORS = ("uniform", "learned", "autoregressive")

_REGISTRY: dict[str, EstimatorInfo] = {}


@dataclass(frozen=True)
class EstimatorInfo:
    """One registered estimator (see the module docstring for the meaning of each field).

    Example:
        >>> get_estimator("gumbel-rao").takes("gumbel_rao_samples")
        True
    """

    name: str
    elbo: Callable[..., ELBO]
    options: Mapping[str, str]
    fixed: Mapping[str, Any] = field(default_factory=dict)
    relaxed: bool = False
    hard: bool = True
    exact: bool = False
    kl_modes: tuple[str, ...] = ()
    priors: tuple[str, ...] = ALL_PRIORS
    mixed: bool = True
    min_particles: int = 1
    vectorize_particles: bool = False
    summary: str = ""

    def takes(self, option: str) -> bool:
        """Whether :func:`~pyro_dvae.infer.build_elbo`'s ``option`` applies to this estimator."""
        return option in self.options

    def build(self, **options: Any) -> ELBO:
        """The ELBO object, from :data:`OPTIONS` (those it does not take are ignored).

        Example:
            >>> get_estimator("vimco").build(num_particles=1).num_particles
            2
        """
        unknown = sorted(set(options) - set(OPTIONS))
        if unknown:
            raise DVAEInputError(
                f"unknown option(s) {', '.join(unknown)} for estimator {self.name!r}; the "
                f"options are {', '.join(OPTIONS)}"
            )
        values = {**OPTIONS, **options}
        if self.kl_modes and values["kl"] not in self.kl_modes:
            raise DVAEInputError(
                f"estimator {self.name!r} cannot use kl={values['kl']!r}: "
                + (
                    "its hard one-hot sample has zero density under the relaxed (Concrete) prior; "
                    if values["kl"] == "relaxed"
                    else ""
                )
                + f"use kl={self.kl_modes[0]!r}"
            )
        kwargs = dict(self.fixed)
        for option, keyword in self.options.items():
            if values[option] is not None:
                kwargs[keyword] = values[option]
        if self.takes("num_particles"):
            particles = max(self.min_particles, int(values["num_particles"]))
            kwargs[self.options["num_particles"]] = particles
            if self.vectorize_particles:
                kwargs["vectorize_particles"] = particles > 1
        return self.elbo(**kwargs)


def register_estimator(
    name: str,
    elbo: Callable[..., ELBO],
    *,
    options: tuple[str, ...] | Mapping[str, str] = (),
    **capabilities: Any,
) -> EstimatorInfo:
    """Add an estimator to the registry and return its :class:`EstimatorInfo`.

    Example:
        >>> from pyro.infer import Trace_ELBO
        >>> info = register_estimator("my-trace", Trace_ELBO, options=("num_particles",))
        >>> type(get_estimator("my-trace").build()).__name__
        'Trace_ELBO'
        >>> _ = _REGISTRY.pop("my-trace")  # doctest cleanup
    """
    if name in _REGISTRY:
        raise DVAEInputError(f"estimator {name!r} is already registered")
    mapping = dict(options) if isinstance(options, Mapping) else {o: o for o in options}
    unknown = sorted(set(mapping) - set(OPTIONS))
    if unknown:
        raise DVAEInputError(f"estimator {name!r}: unknown option(s) {', '.join(unknown)}")
    info = EstimatorInfo(name, elbo, mapping, **capabilities)
    _REGISTRY[name] = info
    return info


def get_estimator(name: str) -> EstimatorInfo:
    """The registered estimator ``name``; an unknown name raises one line listing the known ones.

    Example:
        >>> get_estimator("exact").exact
        True
    """
    try:
        return _REGISTRY[name]
    except (KeyError, TypeError):
        raise DVAEInputError(
            f"unknown estimator {name!r}; choose one of {', '.join(_REGISTRY)}"
        ) from None


def estimator_names(**capabilities: Any) -> tuple[str, ...]:
    """Registered names (in registration order) whose capabilities equal the given ones;
    ``option="kl"`` selects those that take a :func:`~pyro_dvae.infer.build_elbo` option.

    Example:
        >>> estimator_names(exact=True)
        ('enumerate', 'exact')
        >>> estimator_names(option="gumbel_rao_samples")
        ('gumbel-rao',)
    """
    option = capabilities.pop("option", None)
    return tuple(
        info.name
        for info in _REGISTRY.values()
        if all(getattr(info, key) == value for key, value in capabilities.items())
        and (option is None or info.takes(option))
    )

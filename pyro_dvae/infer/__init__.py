"""Objectives, exact enumeration and evaluation for discrete-latent models."""

from .enumerated_elbo import EnumeratedELBO
from .enumeration import (
    DEFAULT_MAX_CONFIGURATIONS,
    LatentEnumeration,
    exact_log_likelihood,
    exact_posterior,
)
from .estimators import ESTIMATORS, RELAXED_ESTIMATORS, build_elbo
from .evaluation import discrete_elbo, iwae_log_likelihood
from .exact_marginal_elbo import ExactMarginalELBO
from .gumbel_softmax_elbo import KL_CHOICES, GumbelSoftmaxELBO
from .relax import RelaxMessenger, relax, relax_distribution
from .schedules import ConstantTemperature, ExponentialDecayTemperature, TemperatureSchedule

__all__ = [
    "DEFAULT_MAX_CONFIGURATIONS",
    "ESTIMATORS",
    "KL_CHOICES",
    "RELAXED_ESTIMATORS",
    "ConstantTemperature",
    "EnumeratedELBO",
    "ExactMarginalELBO",
    "ExponentialDecayTemperature",
    "GumbelSoftmaxELBO",
    "LatentEnumeration",
    "RelaxMessenger",
    "TemperatureSchedule",
    "build_elbo",
    "discrete_elbo",
    "exact_log_likelihood",
    "exact_posterior",
    "iwae_log_likelihood",
    "relax",
    "relax_distribution",
]

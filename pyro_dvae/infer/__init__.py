"""Objectives, exact enumeration and evaluation for discrete-latent models."""

from .antithetic import disarm_weights, stick_breaking_logits
from .disarm_elbo import DISARM_CATEGORICAL, DISARM_COUPLINGS, DisARMELBO
from .enumerated_elbo import EnumeratedELBO
from .enumeration import (
    DEFAULT_MAX_CONFIGURATIONS,
    exact_log_likelihood,
    exact_posterior,
)
from .estimators import ESTIMATORS, EXACT_ESTIMATORS, RELAXED_ESTIMATORS, build_elbo
from .evaluation import discrete_elbo, iwae_log_likelihood
from .exact_marginal_elbo import ExactMarginalELBO
from .gst_elbo import GSTELBO, gst_bernoulli, gst_one_hot
from .gumbel_rao_elbo import GumbelRaoELBO
from .gumbel_softmax_elbo import KL_CHOICES, GumbelSoftmaxELBO
from .rebar_elbo import CONTROL_VARIATES, RELAXELBO, linear_log_prob, relax_gradient
from .registry import EstimatorInfo, estimator_names, get_estimator, register_estimator
from .reinmax_elbo import ReinMaxELBO
from .relax import (
    Relaxation,
    RelaxMessenger,
    discrete_counterpart,
    map_leaf,
    relax,
    relax_distribution,
)
from .rloo_elbo import RLOOELBO, rloo_learning_signals
from .schedules import ConstantTemperature, ExponentialDecayTemperature, TemperatureSchedule
from .score_function_elbo import BASELINES, BaselineMessenger, NeuralBaseline, ScoreFunctionELBO
from .structured_enumeration import StructuredEnumeration
from .torch_optim_svi import TorchOptimSVI
from .unordered_set_elbo import (
    UnorderedSetELBO,
    set_log_prob,
    stochastic_beam_search,
    unordered_set_weights,
)
from .util import sampled_prior_kl
from .vimco_elbo import VIMCOELBO, vimco_learning_signals

__all__ = [
    "BASELINES",
    "CONTROL_VARIATES",
    "DEFAULT_MAX_CONFIGURATIONS",
    "DISARM_CATEGORICAL",
    "DISARM_COUPLINGS",
    "ESTIMATORS",
    "EXACT_ESTIMATORS",
    "KL_CHOICES",
    "RELAXED_ESTIMATORS",
    "BaselineMessenger",
    "ConstantTemperature",
    "DisARMELBO",
    "EnumeratedELBO",
    "ExactMarginalELBO",
    "EstimatorInfo",
    "ExponentialDecayTemperature",
    "GSTELBO",
    "GumbelRaoELBO",
    "GumbelSoftmaxELBO",
    "NeuralBaseline",
    "RELAXELBO",
    "RLOOELBO",
    "ReinMaxELBO",
    "RelaxMessenger",
    "Relaxation",
    "ScoreFunctionELBO",
    "StructuredEnumeration",
    "TemperatureSchedule",
    "TorchOptimSVI",
    "UnorderedSetELBO",
    "VIMCOELBO",
    "build_elbo",
    "disarm_weights",
    "discrete_counterpart",
    "discrete_elbo",
    "exact_log_likelihood",
    "estimator_names",
    "exact_posterior",
    "get_estimator",
    "gst_bernoulli",
    "gst_one_hot",
    "iwae_log_likelihood",
    "linear_log_prob",
    "map_leaf",
    "register_estimator",
    "relax_gradient",
    "relax",
    "relax_distribution",
    "rloo_learning_signals",
    "sampled_prior_kl",
    "set_log_prob",
    "stochastic_beam_search",
    "stick_breaking_logits",
    "unordered_set_weights",
    "vimco_learning_signals",
]

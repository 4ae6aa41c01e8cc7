"""Relaxed, straight-through, Gumbel-Rao and ReinMax distributions for discrete latent variables,
and autoregressive priors over discrete codes."""

from .autoregressive import (
    MAX_ENUMERATED_CODES,
    AutoregressiveBernoulli,
    AutoregressiveOneHotCategorical,
)
from .broadcasting import (
    Bernoulli,
    BernoulliVector,
    BroadcastingIndependent,
    OneHotCategorical,
    broadcast_dot,
    collapse_expanded,
    kl_bernoulli,
    kl_one_hot_categorical,
)
from .concrete import (
    ConcreteOneHotCategorical,
    StraightThroughOneHotCategorical,
    as_temperature,
    base_value_of,
    straight_through,
)
from .gumbel_rao import (
    GumbelRaoBernoulli,
    GumbelRaoOneHotCategorical,
    conditional_gumbel,
    conditional_logistic,
    gumbel_rao_straight_through,
)
from .linear_bernoulli import LinearBernoulliVector
from .reinmax import ReinMaxBernoulli, ReinMaxOneHotCategorical, reinmax_bernoulli, reinmax_one_hot
from .relaxed_bernoulli import ConcreteBernoulli, StraightThroughBernoulli

__all__ = [
    "AutoregressiveBernoulli",
    "AutoregressiveOneHotCategorical",
    "Bernoulli",
    "BernoulliVector",
    "BroadcastingIndependent",
    "ConcreteBernoulli",
    "ConcreteOneHotCategorical",
    "GumbelRaoBernoulli",
    "GumbelRaoOneHotCategorical",
    "LinearBernoulliVector",
    "MAX_ENUMERATED_CODES",
    "OneHotCategorical",
    "ReinMaxBernoulli",
    "ReinMaxOneHotCategorical",
    "StraightThroughBernoulli",
    "StraightThroughOneHotCategorical",
    "as_temperature",
    "base_value_of",
    "broadcast_dot",
    "collapse_expanded",
    "conditional_gumbel",
    "conditional_logistic",
    "gumbel_rao_straight_through",
    "kl_bernoulli",
    "kl_one_hot_categorical",
    "reinmax_bernoulli",
    "reinmax_one_hot",
    "straight_through",
]

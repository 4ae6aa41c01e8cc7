"""Relaxed, straight-through and Gumbel-Rao distributions for discrete latent variables."""

from .broadcasting import BernoulliVector, OneHotCategorical, broadcast_dot
from .concrete import (
    ConcreteOneHotCategorical,
    StraightThroughOneHotCategorical,
    as_temperature,
    straight_through,
)
from .gumbel_rao import (
    GumbelRaoBernoulli,
    GumbelRaoOneHotCategorical,
    conditional_gumbel,
    conditional_logistic,
    gumbel_rao_straight_through,
)
from .relaxed_bernoulli import ConcreteBernoulli, StraightThroughBernoulli

__all__ = [
    "BernoulliVector",
    "ConcreteBernoulli",
    "ConcreteOneHotCategorical",
    "GumbelRaoBernoulli",
    "GumbelRaoOneHotCategorical",
    "OneHotCategorical",
    "StraightThroughBernoulli",
    "StraightThroughOneHotCategorical",
    "as_temperature",
    "broadcast_dot",
    "conditional_gumbel",
    "conditional_logistic",
    "gumbel_rao_straight_through",
    "straight_through",
]

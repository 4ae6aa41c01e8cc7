"""Relaxed and straight-through distributions for discrete latent variables."""

from .broadcasting import BernoulliVector, OneHotCategorical, broadcast_dot
from .concrete import ConcreteOneHotCategorical, StraightThroughOneHotCategorical, straight_through
from .relaxed_bernoulli import ConcreteBernoulli, StraightThroughBernoulli

__all__ = [
    "BernoulliVector",
    "broadcast_dot",
    "ConcreteBernoulli",
    "ConcreteOneHotCategorical",
    "OneHotCategorical",
    "StraightThroughBernoulli",
    "StraightThroughOneHotCategorical",
    "straight_through",
]

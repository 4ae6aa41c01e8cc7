"""Relaxed and straight-through distributions for discrete latent variables."""

from .concrete import ConcreteOneHotCategorical, StraightThroughOneHotCategorical, straight_through
from .relaxed_bernoulli import ConcreteBernoulli, StraightThroughBernoulli

__all__ = [
    "ConcreteBernoulli",
    "ConcreteOneHotCategorical",
    "StraightThroughBernoulli",
    "StraightThroughOneHotCategorical",
    "straight_through",
]

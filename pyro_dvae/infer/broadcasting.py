"""Standard Pyro distributions swapped, under enumeration, for implementations that broadcast.

Under enumeration a decoder's output has a leading dimension of ``C`` configurations, and a
standard ``dist.Bernoulli(logits).to_event(1)`` scored against ``B`` data points materializes
``C x B x D`` log-densities. :class:`BroadcastingMessenger` replaces such a distribution, at
the moment its site is sampled or observed, with the package's equal-in-distribution
implementation that scores the same numbers by a matrix product
(:class:`~pyro_dvae.distributions.BernoulliVector`) or that sums over expanded dims once
(:class:`~pyro_dvae.distributions.Bernoulli`,
:class:`~pyro_dvae.distributions.OneHotCategorical`), so a model in plain Pyro syntax enumerates
as fast as one written with those classes. Only exact substitutions are made: the same
parameters, the same support, the same log-density up to floating-point summation order.
"""

from __future__ import annotations

import math

import torch
from pyro.distributions import Bernoulli as dist_Bernoulli
from pyro.distributions import Independent
from pyro.distributions import OneHotCategorical as dist_OneHotCategorical
from pyro.poutine.messenger import Messenger
from torch.distributions import Distribution

from ..distributions.broadcasting import (
    Bernoulli,
    BernoulliVector,
    BroadcastingIndependent,
    OneHotCategorical,
    collapse_expanded,
)

__all__ = ["BroadcastingMessenger", "broadcasting_counterpart", "unexpanded"]


def broadcasting_counterpart(fn: Distribution, observed: bool = False) -> Distribution:
    """``fn``'s broadcasting implementation, or ``fn`` itself when there is none.

    - ``Bernoulli(logits).to_event(1)`` at an observed site -> ``BernoulliVector(logits)``
      (``x . logits - sum softplus(logits)``: one matrix product against the data);
    - Pyro's ``Bernoulli`` / ``OneHotCategorical`` -> the package's subclasses (same class
      tree, so enumeration and KL rules still apply), ``.to_event(n)`` of them ->
      :class:`~pyro_dvae.distributions.BroadcastingIndependent`.

    Exactly Pyro's classes are swapped (a user's subclass may change the density); anything
    else is returned unchanged.

    Example:
        >>> import pyro.distributions as dist
        >>> d = dist.Bernoulli(logits=torch.zeros(3, 5)).to_event(1)
        >>> type(broadcasting_counterpart(d, observed=True)).__name__
        'BernoulliVector'
    """
    if type(fn) is Independent:
        base = fn.base_dist
        n = fn.reinterpreted_batch_ndims
        if observed and n == 1 and type(base) is dist_Bernoulli:
            # a plate has usually expanded the logits already: keep them un-expanded (a
            # view), so that the normalizer is computed once per distinct logit
            logits = unexpanded(base.logits, keep_rightmost=1)
            return BernoulliVector(logits, base.batch_shape[:-1], validate_args=fn._validate_args)
        swapped = broadcasting_counterpart(base)
        if swapped is not base:
            return BroadcastingIndependent(swapped, n, validate_args=fn._validate_args)
        return fn
    if type(fn) is dist_Bernoulli:
        return Bernoulli(**_parameter(fn), validate_args=fn._validate_args)
    if type(fn) is dist_OneHotCategorical:
        return OneHotCategorical(**_parameter(fn._categorical), validate_args=fn._validate_args)
    return fn


def unexpanded(t: torch.Tensor, keep_rightmost: int = 0) -> torch.Tensor:
    """``t`` without its expanded (stride-0) dims of size > 1, as a tensor autograd can
    differentiate cheaply.

    When ``t`` is an expanded view of a contiguous ``base`` (what a plate does to a
    distribution's parameters), a plain view of ``base`` is returned, whose backward is a
    reshape; a strided view of the expanded tensor would make the backward pass materialize
    the full expanded gradient. Otherwise
    :func:`~pyro_dvae.distributions.collapse_expanded` (a strided view).

    Example:
        >>> base = torch.zeros(3, 5)
        >>> unexpanded(base.unsqueeze(1).expand(3, 100, 5), keep_rightmost=1).shape
        torch.Size([3, 1, 5])
    """
    last = t.dim() - keep_rightmost
    if not any(st == 0 and n > 1 for n, st in list(zip(t.shape, t.stride()))[:last]):
        return t
    base = t._base
    shape = [1 if st == 0 and i < last else n for i, (n, st) in enumerate(zip(t.shape, t.stride()))]
    if base is not None and base.is_contiguous() and base.numel() == math.prod(shape):
        root = base.view(shape)  # a view autograd reverses by a reshape
        if (
            root.storage_offset() == t.storage_offset()
            and root.expand(t.shape).stride() == t.stride()
        ):
            return root
    return collapse_expanded(t, keep_rightmost=keep_rightmost)


def _parameter(fn: Distribution) -> dict:
    """The parameter ``fn`` was built from (``probs`` or ``logits``), so that the swapped
    distribution derives the other exactly as ``fn`` does."""
    if fn._param is fn.__dict__.get("probs"):
        return {"probs": fn.probs}
    return {"logits": fn.logits}


class BroadcastingMessenger(Messenger):
    """Swaps each sample site's distribution for :func:`broadcasting_counterpart`.

    Used by :class:`~pyro_dvae.infer.StructuredEnumeration` (and so by every exact objective)
    around the model and the guide.

    Example:
        >>> import pyro, pyro.distributions as dist
        >>> def model():
        ...     pyro.sample("x", dist.Bernoulli(logits=torch.zeros(4)).to_event(1),
        ...                 obs=torch.ones(4))
        >>> trace = pyro.poutine.trace(BroadcastingMessenger()(model)).get_trace()
        >>> type(trace.nodes["x"]["fn"]).__name__
        'BernoulliVector'
    """

    def _pyro_sample(self, msg) -> None:
        msg["fn"] = broadcasting_counterpart(msg["fn"], observed=msg["is_observed"])

"""Discrete distributions whose log-density broadcasts as a matrix product (for enumeration)."""

from __future__ import annotations

import string

import torch
import torch.nn.functional as F
from pyro.distributions import Bernoulli as dist_Bernoulli
from pyro.distributions import Independent, TorchDistribution
from pyro.distributions import OneHotCategorical as dist_OneHotCategorical
from pyro.distributions.util import sum_rightmost
from torch.distributions import constraints, register_kl

__all__ = [
    "Bernoulli",
    "BernoulliVector",
    "BroadcastingIndependent",
    "OneHotCategorical",
    "broadcast_dot",
    "collapse_expanded",
    "kl_bernoulli",
    "kl_one_hot_categorical",
]


def broadcast_dot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``(a * b).sum(-1)`` with broadcasting, without materializing the broadcast product.

    Dims where one operand has size 1 become outer-product dims of an ``einsum`` (a matrix
    product), so ``[C, 1, D]`` against ``[B, D]`` costs a ``C x D x B`` matmul and ``C x B``
    memory instead of ``C x B x D``. Expanded (stride-0) dims count as size 1, and the result
    is broadcast back over them as a view: ``[C, 1, D]`` against a ``[D]`` vector expanded to
    ``[B, D]`` costs ``C x D``.

    Example:
        >>> a, b = torch.randn(5, 1, 3), torch.randn(4, 3)
        >>> torch.allclose(broadcast_dot(a, b), (a * b).sum(-1), atol=1e-6)
        True
    """
    batch = torch.broadcast_shapes(a.shape[:-1], b.shape[:-1])
    n = len(batch)
    if n > 25 or a.shape[:-1] == b.shape[:-1]:
        # nothing to gain from a matrix product: elementwise is one fused pass
        return (a * b).sum(-1)
    # expanded (stride-0) dims carry no work: drop them, broadcast the result back at the end
    a, b = collapse_expanded(a, keep_rightmost=1), collapse_expanded(b, keep_rightmost=1)
    a = a.reshape((1,) * (n + 1 - a.dim()) + tuple(a.shape))
    b = b.reshape((1,) * (n + 1 - b.dim()) + tuple(b.shape))
    letters = string.ascii_letters
    sa, sb, so = [], [], []
    a_keep, b_keep = [], []
    for i in range(n):
        ai, bi = a.shape[i], b.shape[i]
        if ai == 1 and bi != 1:
            sb.append(letters[i])
            b_keep.append(i)
        elif bi == 1 and ai != 1:
            sa.append(letters[i])
            a_keep.append(i)
        else:
            sa.append(letters[i])
            sb.append(letters[i])
            a_keep.append(i)
            b_keep.append(i)
        so.append(letters[i])
    a = a.reshape([a.shape[i] for i in a_keep] + [a.shape[-1]])
    b = b.reshape([b.shape[i] for i in b_keep] + [b.shape[-1]])
    z = "Z"
    out = torch.einsum(f"{''.join(sa)}{z},{''.join(sb)}{z}->{''.join(so)}", a, b)
    return out.expand(batch)


class BernoulliVector(TorchDistribution):
    """``D`` independent Bernoulli variables as one event: ``Bernoulli(logits).to_event(1)``.

    Identical in distribution, but ``log_prob`` is ``x . logits - sum softplus(logits)``
    computed with :func:`broadcast_dot`, and ``expand`` is lazy (it never copies the logits).
    When a decoder's logits for ``C`` latent configurations (shape ``[C, 1, D]``) meet ``B`` data
    points (``[B, D]``), the cost is one ``C x D x B`` matrix product and ``C x B`` memory, where
    the elementwise form needs ``C x B x D``. Used by
    :class:`~pyro_dvae.models.DiscreteVAE` and recommended for user models that enumerate.

    Example:
        >>> d = BernoulliVector(torch.zeros(3, 1, 5))
        >>> d.log_prob(torch.ones(4, 5)).shape
        torch.Size([3, 4])
    """

    arg_constraints = {"logits": constraints.independent(constraints.real, 1)}
    support = constraints.independent(constraints.boolean, 1)
    #: read by the enumeration engine: log_prob memory is O(batch), not O(batch x event)
    broadcasts_efficiently = True

    def __init__(
        self,
        logits: torch.Tensor,
        batch_shape: torch.Size | None = None,
        validate_args: bool | None = None,
    ) -> None:
        if logits.dim() < 1:
            raise ValueError("BernoulliVector needs logits with at least one dim (the event)")
        self.logits = logits
        if batch_shape is None:
            batch_shape = logits.shape[:-1]
        super().__init__(torch.Size(batch_shape), logits.shape[-1:], validate_args=validate_args)

    def expand(self, batch_shape, _instance=None):
        batch_shape = torch.Size(batch_shape)
        torch.broadcast_shapes(batch_shape, self.logits.shape[:-1])  # raises if incompatible
        return BernoulliVector(self.logits, batch_shape, validate_args=self._validate_args)

    @property
    def probs(self) -> torch.Tensor:
        return torch.sigmoid(self.logits).expand(self.batch_shape + self.event_shape)

    @property
    def mean(self) -> torch.Tensor:
        return self.probs

    @property
    def variance(self) -> torch.Tensor:
        p = self.probs
        return p * (1 - p)

    def sample(self, sample_shape: torch.Size = torch.Size()) -> torch.Tensor:
        shape = self._extended_shape(sample_shape)
        with torch.no_grad():
            return torch.bernoulli(self.probs.expand(shape))

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        if self._validate_args:
            self._validate_sample(value)
        out = broadcast_dot(value, self.logits) - F.softplus(self.logits).sum(-1)
        return out.expand(torch.broadcast_shapes(out.shape, self.batch_shape))

    def entropy(self) -> torch.Tensor:
        p = self.probs
        return F.binary_cross_entropy_with_logits(
            self.logits.expand_as(p), p, reduction="none"
        ).sum(-1)


def collapse_expanded(t: torch.Tensor, keep_rightmost: int = 0) -> torch.Tensor:
    """A view of ``t`` with every expanded (stride-0) dim of size > 1 shrunk to size 1.

    The ``keep_rightmost`` rightmost dims are left as they are (e.g. event dims that will be
    summed over, where every repeat counts).

    Example:
        >>> collapse_expanded(torch.zeros(3).expand(100, 3)).shape
        torch.Size([1, 3])
        >>> collapse_expanded(torch.zeros(1, 1).expand(100, 3), keep_rightmost=1).shape
        torch.Size([1, 3])
    """
    last = t.dim() - keep_rightmost
    shape = [
        1 if stride == 0 and i < last else size
        for i, (size, stride) in enumerate(zip(t.shape, t.stride()))
    ]
    return t.as_strided(shape, t.stride())


class BroadcastingIndependent(Independent):
    """Pyro's ``Independent`` that sums the event dims *before* broadcasting over batch dims.

    When the base ``log_prob`` is a broadcast view (expanded, stride-0 batch dims, as the
    log-densities of :class:`Bernoulli` and :class:`OneHotCategorical` are), the event sum runs
    on the un-expanded values and the result is broadcast as a view: a prior ``[N]`` inside a
    data plate of ``B`` scored at ``C`` enumerated values costs ``C x N`` additions instead of
    ``C x B x N``. Same distribution; ``Bernoulli(...).to_event()`` returns one.

    Example:
        >>> d = Bernoulli(logits=torch.zeros(3)).expand([100, 3]).to_event(1)
        >>> type(d).__name__, d.log_prob(torch.ones(5, 1, 3)).shape
        ('BroadcastingIndependent', torch.Size([5, 100]))
    """

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        n = self.reinterpreted_batch_ndims
        lp = collapse_expanded(self.base_dist.log_prob(value), keep_rightmost=n)
        out = sum_rightmost(lp, n)  # event dims keep their repeats: each one counts
        return out.expand(torch.broadcast_shapes(out.shape, self.batch_shape))


class _SumsEventsBeforeBroadcasting:
    """``to_event`` returns a :class:`BroadcastingIndependent`."""

    def to_event(self, reinterpreted_batch_ndims: int | None = None) -> TorchDistribution:
        d = super().to_event(reinterpreted_batch_ndims)
        if type(d) is Independent:
            return BroadcastingIndependent(d.base_dist, d.reinterpreted_batch_ndims)
        return d


class Bernoulli(_SumsEventsBeforeBroadcasting, dist_Bernoulli):
    """Pyro's ``Bernoulli`` with a ``log_prob`` that does not repeat work over expanded dims.

    ``log_prob(v) = v * logits - softplus(logits)``, evaluated on the logits with their
    expanded (stride-0) dims collapsed and then broadcast as a view. A prior inside a data plate
    (logits ``[N]`` expanded to ``[B, N]``) scored at ``C`` enumerated values ``[C, 1, N]`` costs
    ``C x N`` instead of ``C x B x N`` log-sigmoids. Same distribution, drop-in replacement.

    Example:
        >>> d = Bernoulli(logits=torch.zeros(3)).expand([100, 3])
        >>> d.log_prob(torch.ones(5, 1, 3)).shape
        torch.Size([5, 100, 3])
    """

    broadcasts_efficiently = True

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        if self._validate_args:
            self._validate_sample(value)
        logits = collapse_expanded(self.logits)
        out = value * logits - F.softplus(logits)
        return out.expand(torch.broadcast_shapes(out.shape, self.batch_shape))


class OneHotCategorical(_SumsEventsBeforeBroadcasting, dist_OneHotCategorical):
    """Pyro's ``OneHotCategorical`` with a ``log_prob`` that broadcasts as a matrix product.

    ``log_prob(value) = value . log_softmax(logits)`` via :func:`broadcast_dot`, so enumerated
    values ``[C, 1, N, K]`` against per-datum logits ``[B, N, K]`` cost ``C x B x N`` memory, not
    ``C x B x N x K`` plus an index gather; against logits that are only expanded over ``B``
    (a prior inside a data plate) they cost ``C x N``. Same distribution, drop-in replacement.

    Example:
        >>> d = OneHotCategorical(logits=torch.zeros(4, 3, 8))
        >>> d.log_prob(torch.eye(8)[:1].expand(3, 8).reshape(1, 1, 3, 8)).shape
        torch.Size([1, 4, 3])
    """

    broadcasts_efficiently = True

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        if self._validate_args:
            self._validate_sample(value)
        out = broadcast_dot(value, self.logits)
        return out.expand(torch.broadcast_shapes(out.shape, self.batch_shape))


def _built_from_probs(d: torch.distributions.Distribution) -> bool:
    """Whether ``d`` was given ``probs`` (torch then clamps the derived logits, so an exact 0
    has to be read from the probabilities)."""
    inner = getattr(d, "_categorical", d)
    return inner._param is inner.__dict__.get("probs")


def _bernoulli_log_masses(d: dist_Bernoulli) -> tuple[torch.Tensor, torch.Tensor]:
    if _built_from_probs(d):
        return d.probs.log(), torch.log1p(-d.probs)
    return -F.softplus(-d.logits), -F.softplus(d.logits)


def _weighted_log_ratio(log_p: torch.Tensor, log_q: torch.Tensor) -> torch.Tensor:
    """``p log(p / q)`` elementwise, 0 where ``p`` is 0 (its limit), inf where only ``q`` is."""
    return torch.where(log_p == -torch.inf, 0.0, log_p.exp() * (log_p - log_q))


@register_kl(Bernoulli, Bernoulli)
def kl_bernoulli(p: dist_Bernoulli, q: dist_Bernoulli) -> torch.Tensor:
    """KL(p || q) of two Bernoullis in log space: finite wherever it is.

    ``torch``'s own rule returns ``inf`` as soon as ``q.probs`` rounds to 0 or 1 (a logit
    beyond ~16.6 in float32), although the divergence is finite; a learned prior whose unused
    units drift towards a deterministic bit reaches that in long trainings. Registered for this
    package's :class:`Bernoulli`. Exact 0/1 probabilities (given as ``probs``) keep their
    meaning: impossible under ``p`` contributes 0, impossible under ``q`` alone gives ``inf``.

    Example:
        >>> p, q = Bernoulli(logits=torch.tensor([0.0])), Bernoulli(logits=torch.tensor([17.0]))
        >>> round(torch.distributions.kl_divergence(p, q).item(), 3)  # torch's rule gives inf
        7.807
    """
    (log_p1, log_p0), (log_q1, log_q0) = _bernoulli_log_masses(p), _bernoulli_log_masses(q)
    return _weighted_log_ratio(log_p1, log_q1) + _weighted_log_ratio(log_p0, log_q0)


@register_kl(OneHotCategorical, OneHotCategorical)
def kl_one_hot_categorical(p: dist_OneHotCategorical, q: dist_OneHotCategorical) -> torch.Tensor:
    """KL(p || q) of two one-hot categoricals in log space, finite wherever it is (``torch``
    turns any ``q.probs`` that underflows to 0 into ``inf``); exact zeros given as ``probs``
    keep their meaning, as in :func:`kl_bernoulli`.

    Example:
        >>> p = OneHotCategorical(logits=torch.tensor([0.0, 0.0]))
        >>> q = OneHotCategorical(logits=torch.tensor([0.0, -120.0]))
        >>> round(torch.distributions.kl_divergence(p, q).item(), 3)  # torch's rule gives inf
        59.307
    """

    def log_probs(d: dist_OneHotCategorical) -> torch.Tensor:
        return d.probs.log() if _built_from_probs(d) else d.logits  # logits: normalized

    return _weighted_log_ratio(log_probs(p), log_probs(q)).sum(-1)

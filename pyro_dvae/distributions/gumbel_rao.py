"""Gumbel-Rao: straight-through Gumbel-softmax with the gradient Rao-Blackwellized over the noise.

The forward value is an exact discrete sample D (Gumbel-max). The backward pass uses
E[grad softmax((logits + G) / tau) | argmax(logits + G) = D], estimated by averaging over
``num_samples`` Gumbel perturbations drawn *conditionally* on the sampled D. The conditional
perturbations are built top-down in log space (the maximum of Gumbels is a Gumbel at the
log-normalizer, independent of the argmax; the other coordinates are Gumbels truncated below it).

Reference: M. B. Paulus, C. J. Maddison, A. Krause. Rao-Blackwellizing the Straight-Through
Gumbel-Softmax Gradient Estimator. ICLR 2021. arXiv:2010.04838
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .concrete import StraightThroughOneHotCategorical, straight_through
from .relaxed_bernoulli import StraightThroughBernoulli

__all__ = [
    "GumbelRaoBernoulli",
    "GumbelRaoOneHotCategorical",
    "conditional_gumbel",
    "conditional_logistic",
    "gumbel_rao_straight_through",
]

_EMPTY = torch.Size()


def _gumbel(shape: torch.Size, like: torch.Tensor) -> torch.Tensor:
    u = torch.rand(shape, dtype=like.dtype, device=like.device)
    tiny = torch.finfo(like.dtype).tiny
    return -(-u.clamp_min(tiny).log()).log()


def conditional_gumbel(
    logits: torch.Tensor, one_hot: torch.Tensor, sample_shape: torch.Size = _EMPTY
) -> torch.Tensor:
    """Perturbed logits ``X = logits + G``, ``G ~ Gumbel(0, 1)`` iid, conditioned on
    ``argmax X = argmax one_hot``. Returns ``sample_shape + broadcast(logits, one_hot).shape``.

    Top-down construction: ``X_D = logsumexp(logits) + Gumbel`` and, for ``i != D``,
    ``X_i = -logaddexp(-X_D, -(logits_i + Gumbel))`` (a Gumbel truncated below ``X_D``). The
    result is detached: the noise is a constant of the reparameterization.

    Example:
        >>> logits, d = torch.randn(5, 4), torch.eye(4)[[0, 1, 2, 3, 0]]
        >>> x = conditional_gumbel(logits, d, torch.Size([100]))
        >>> bool((x.argmax(-1) == d.argmax(-1)).all())
        True
    """
    with torch.no_grad():
        logits, one_hot = torch.broadcast_tensors(logits.detach(), one_hot.detach())
        shape = torch.Size(sample_shape) + logits.shape
        top = logits.logsumexp(-1, keepdim=True) + _gumbel(shape[:-1] + (1,), logits)
        others = -torch.logaddexp(-top, -(logits + _gumbel(shape, logits)))
        return torch.where(one_hot.bool(), top.expand(shape), others)


def conditional_logistic(
    logits: torch.Tensor, value: torch.Tensor, sample_shape: torch.Size = _EMPTY
) -> torch.Tensor:
    """Perturbed logits ``logits + L``, ``L ~ Logistic(0, 1)``, conditioned on ``(logits + L > 0)
    == value``: the binary case of :func:`conditional_gumbel`, by the inverse CDF in log space.

    Example:
        >>> logits, b = torch.randn(6), torch.tensor([0.0, 1, 1, 0, 1, 0])
        >>> x = conditional_logistic(logits, b, torch.Size([100]))
        >>> bool(((x > 0).float() == b).all())
        True
    """
    with torch.no_grad():
        logits, value = torch.broadcast_tensors(logits.detach(), value.detach())
        shape = torch.Size(sample_shape) + logits.shape
        tiny = torch.finfo(logits.dtype).tiny
        v = torch.rand(shape, dtype=logits.dtype, device=logits.device).clamp(tiny, 1 - 1e-7)
        log_v, log_1mv = v.log(), (-v).log1p()
        log_p1, log_p0 = F.logsigmoid(logits), F.logsigmoid(-logits)  # P(value=1), P(value=0)
        # the CDF of logits + L at 0 is p0; draw u uniform on (p0, 1) if value = 1, else (0, p0)
        log_u = torch.where(value.bool(), torch.logaddexp(log_p0, log_v + log_p1), log_v + log_p0)
        log_1mu = torch.where(
            value.bool(), log_p1 + log_1mv, torch.logaddexp(log_p1, log_1mv + log_p0)
        )
        # u = CDF of y = logits + L, i.e. sigmoid(y - logits): y = logits + log u - log(1 - u)
        return logits + log_u - log_1mu


def gumbel_rao_straight_through(
    logits: torch.Tensor, hard: torch.Tensor, perturbed: torch.Tensor, temperature: torch.Tensor
) -> torch.Tensor:
    """``hard`` forward; backward, the gradient of ``mean_k softmax((logits + G_k) / tau)`` with
    ``G_k = perturbed[k] - logits`` held fixed (``perturbed`` has one leading sample dim).

    Example:
        >>> logits = torch.zeros(3, requires_grad=True)
        >>> hard = torch.tensor([0.0, 1.0, 0.0])
        >>> y = gumbel_rao_straight_through(
        ...     logits, hard, conditional_gumbel(logits, hard, torch.Size([8])), torch.tensor(1.0))
        >>> y.tolist()
        [0.0, 1.0, 0.0]
    """
    noise = (perturbed - logits).detach()
    soft = torch.softmax((logits + noise) / temperature, dim=-1).mean(0)
    return straight_through(soft, hard)


class _GumbelRaoSamples:
    """The ``num_samples`` argument (conditional perturbations averaged per sample) and an
    ``expand`` that keeps it; shared by :class:`GumbelRaoOneHotCategorical` and
    :class:`GumbelRaoBernoulli`."""

    def __init__(
        self,
        temperature: torch.Tensor | float,
        probs: torch.Tensor | None = None,
        logits: torch.Tensor | None = None,
        num_samples: int = 10,
        validate_args: bool | None = None,
    ) -> None:
        if int(num_samples) < 1:
            raise ValueError(f"num_samples must be >= 1, got {num_samples}")
        self.num_samples = int(num_samples)
        super().__init__(temperature, probs=probs, logits=logits, validate_args=validate_args)

    def expand(self, batch_shape, _instance=None):
        logits = self.logits.expand(torch.Size(batch_shape) + self.event_shape)
        return type(self)(
            self.temperature,
            logits=logits,
            num_samples=self.num_samples,
            validate_args=self._validate_args,
        )


class GumbelRaoOneHotCategorical(_GumbelRaoSamples, StraightThroughOneHotCategorical):
    """One-hot categorical sampled exactly, with the Gumbel-Rao gradient (arXiv:2010.04838).

    :meth:`rsample` returns an exact one-hot sample D ~ Cat(softmax(logits)); its gradient is the
    straight-through Gumbel-softmax gradient averaged over ``num_samples`` Gumbel perturbations
    drawn conditionally on D. :meth:`log_prob` is the categorical log-mass. With
    ``num_samples=1`` this is distributed exactly as straight-through Gumbel-softmax; more
    samples only lower the variance of the gradient.

    Example:
        >>> d = GumbelRaoOneHotCategorical(0.5, logits=torch.zeros(2, 4), num_samples=10)
        >>> z = d.rsample()
        >>> z.sum(-1).tolist(), bool(((z == 0) | (z == 1)).all())
        ([1.0, 1.0], True)
    """

    def rsample(self, sample_shape: torch.Size = _EMPTY) -> torch.Tensor:
        logits = self.logits
        shape = self._extended_shape(sample_shape)
        with torch.no_grad():
            index = (logits.expand(shape) + _gumbel(shape, logits)).argmax(-1, keepdim=True)
            hard = torch.zeros(shape, dtype=logits.dtype, device=logits.device)
            hard.scatter_(-1, index, 1.0)
        perturbed = conditional_gumbel(logits, hard, torch.Size([self.num_samples]))
        return gumbel_rao_straight_through(logits, hard, perturbed, self.temperature)


class GumbelRaoBernoulli(_GumbelRaoSamples, StraightThroughBernoulli):
    """Bernoulli sampled exactly, with the Gumbel-Rao gradient of the binary Concrete relaxation.

    The binary case of :class:`GumbelRaoOneHotCategorical`: logistic noise conditioned on the
    sampled bit (:func:`conditional_logistic`), gradient of ``mean_k sigmoid((logits + L_k) /
    tau)``. :meth:`log_prob` is the Bernoulli log-mass. Paulus, Maddison & Krause 2021,
    arXiv:2010.04838.

    Example:
        >>> d = GumbelRaoBernoulli(0.5, logits=torch.zeros(5), num_samples=4)
        >>> z = d.rsample()
        >>> bool(((z == 0) | (z == 1)).all())
        True
    """

    def rsample(self, sample_shape: torch.Size = _EMPTY) -> torch.Tensor:
        logits = self.logits
        shape = self._extended_shape(sample_shape)
        with torch.no_grad():
            hard = torch.bernoulli(torch.sigmoid(logits).expand(shape))
        perturbed = conditional_logistic(logits, hard, torch.Size([self.num_samples]))
        noise = (perturbed - logits).detach()
        soft = torch.sigmoid((logits + noise) / self.temperature).mean(0)
        return straight_through(soft, hard)

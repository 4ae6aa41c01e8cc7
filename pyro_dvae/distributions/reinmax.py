"""ReinMax: a straight-through gradient for discrete samples, accurate to second order.

The forward value is an exact discrete sample D ~ q. Straight-through estimators differentiate a
first-order (Euler) approximation of the gradient of E_q[f(D)]; ReinMax differentiates the
second-order (Heun, trapezoidal) one, with no extra samples and no Gumbel noise:

    pi0 = softmax(logits)
    pi1 = (D + softmax(logits / tau)) / 2, differentiated as a softmax at pi1
    D~  = D + (2 pi1 - pi0 / 2) - stop_gradient(2 pi1 - pi0 / 2)

At ``tau = 1`` the expected ReinMax gradient is the exact gradient of E_q[f(D)] whenever ``f`` is
quadratic in D (the trapezoidal rule is exact there); straight-through is exact only for linear
``f``. The sample's randomness is D alone, so its expected gradient is a finite sum over D
(what the tests check against brute-force enumeration).

Reference: L. Liu, C. Dong, X. Liu, B. Yu, J. Gao. Bridging Discrete and Backpropagation:
Straight-Through and Beyond. NeurIPS 2023. arXiv:2304.08612
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .concrete import StraightThroughOneHotCategorical
from .relaxed_bernoulli import StraightThroughBernoulli

__all__ = [
    "ReinMaxBernoulli",
    "ReinMaxOneHotCategorical",
    "reinmax_bernoulli",
    "reinmax_one_hot",
]

_EMPTY = torch.Size()
_LOG2 = math.log(2.0)


def _surrogate(hard: torch.Tensor, pi1: torch.Tensor, pi0: torch.Tensor) -> torch.Tensor:
    """``hard`` forward; backward, the gradient of ``2 pi1 - pi0 / 2``."""
    pi2 = 2 * pi1 - 0.5 * pi0
    return hard + (pi2 - pi2.detach())


def reinmax_one_hot(
    logits: torch.Tensor, hard: torch.Tensor, temperature: torch.Tensor | float
) -> torch.Tensor:
    """The one-hot ``hard`` in the forward pass, with the ReinMax gradient wrt ``logits``.

    ``pi1 = (hard + softmax(logits / tau)) / 2`` is formed in log space and differentiated as
    ``softmax(stop_gradient(log pi1 - logits) + logits)`` (value pi1, softmax Jacobian at pi1).

    Example:
        >>> logits = torch.zeros(3, requires_grad=True)
        >>> y = reinmax_one_hot(logits, torch.tensor([0.0, 1.0, 0.0]), 1.0)
        >>> y.tolist()
        [0.0, 1.0, 0.0]
        >>> (y * torch.tensor([1.0, 0.0, 0.0])).sum().backward()
        >>> [round(g, 4) for g in logits.grad.tolist()]  # 2 J(pi1) e_0 - J(pi0) e_0 / 2
        [0.1667, -0.1667, 0.0]
    """
    tau = torch.as_tensor(temperature, dtype=logits.dtype, device=logits.device)
    hard = hard.detach()
    tau = tau.unsqueeze(-1) if tau.dim() else tau  # one temperature per group
    log_pi1 = torch.logaddexp(hard.log(), torch.log_softmax(logits / tau, -1)) - _LOG2
    pi1 = torch.softmax((log_pi1 - logits).detach() + logits, -1)
    return _surrogate(hard, pi1, torch.softmax(logits, -1))


def reinmax_bernoulli(
    logits: torch.Tensor, hard: torch.Tensor, temperature: torch.Tensor | float
) -> torch.Tensor:
    """The bits ``hard`` in the forward pass, with the ReinMax gradient wrt ``logits``: the
    two-category case of :func:`reinmax_one_hot` (category 1 with logit ``logits``, category 0
    with logit 0), in log space so that no probability rounds to 0 or 1.

    Example:
        >>> logits = torch.zeros(2, requires_grad=True)
        >>> y = reinmax_bernoulli(logits, torch.tensor([1.0, 0.0]), 1.0)
        >>> y.sum().backward()
        >>> [round(g, 4) for g in logits.grad.tolist()]  # 2 pi1 (1 - pi1) - p0 (1 - p0) / 2
        [0.25, 0.25]
    """
    tau = torch.as_tensor(temperature, dtype=logits.dtype, device=logits.device)
    hard = hard.detach()
    log_pi1 = torch.logaddexp(hard.log(), F.logsigmoid(logits / tau)) - _LOG2
    log_1m_pi1 = torch.logaddexp((1 - hard).log(), F.logsigmoid(-logits / tau)) - _LOG2
    pi1 = torch.sigmoid((log_pi1 - log_1m_pi1 - logits).detach() + logits)
    return _surrogate(hard, pi1, torch.sigmoid(logits))


class ReinMaxOneHotCategorical(StraightThroughOneHotCategorical):
    """One-hot categorical sampled exactly, with the ReinMax gradient (arXiv:2304.08612).

    :meth:`rsample` returns an exact one-hot sample D ~ Cat(softmax(logits)) whose gradient is
    :func:`reinmax_one_hot` at ``temperature`` (the paper recommends ``tau >= 1``; at 1 the
    expected gradient is exact for quadratic functions of D). :meth:`log_prob` is the
    categorical log-mass.

    Example:
        >>> d = ReinMaxOneHotCategorical(1.0, logits=torch.zeros(2, 4))
        >>> z = d.rsample()
        >>> z.sum(-1).tolist(), bool(((z == 0) | (z == 1)).all())
        ([1.0, 1.0], True)
    """

    def rsample(self, sample_shape: torch.Size = _EMPTY) -> torch.Tensor:
        logits = self.logits.expand(self._extended_shape(sample_shape))
        with torch.no_grad():
            index = torch.multinomial(
                torch.softmax(logits.reshape(-1, logits.shape[-1]), -1), 1
            ).reshape(logits.shape[:-1] + (1,))
            hard = torch.zeros_like(logits).scatter_(-1, index, 1.0)
        return reinmax_one_hot(logits, hard, self.temperature)


class ReinMaxBernoulli(StraightThroughBernoulli):
    """Bernoulli sampled exactly, with the ReinMax gradient (:func:`reinmax_bernoulli`).

    Liu et al. 2023, arXiv:2304.08612. :meth:`log_prob` is the Bernoulli log-mass.

    Example:
        >>> d = ReinMaxBernoulli(1.0, logits=torch.zeros(5))
        >>> z = d.rsample()
        >>> bool(((z == 0) | (z == 1)).all())
        True
    """

    def rsample(self, sample_shape: torch.Size = _EMPTY) -> torch.Tensor:
        logits = self.logits.expand(self._extended_shape(sample_shape))
        with torch.no_grad():
            hard = torch.bernoulli(torch.sigmoid(logits))
        return reinmax_bernoulli(logits, hard, self.temperature)

"""Binary Concrete (relaxed Bernoulli) and straight-through Bernoulli, computed in logit space.

References:
    - [1] C. J. Maddison, A. Mnih, Y. W. Teh. The Concrete Distribution. ICLR 2017. arXiv:1611.00712
    - [2] E. Jang, S. Gu, B. Poole. Categorical Reparameterization with Gumbel-Softmax. ICLR 2017.
      arXiv:1611.01144
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from pyro.distributions import Bernoulli, RelaxedBernoulli
from torch.distributions import constraints

from .concrete import as_temperature, straight_through

__all__ = ["ConcreteBernoulli", "StraightThroughBernoulli"]

LOGIT_VALUE_ATTR = "_pyro_dvae_logit_value"


def _logit_of(value: torch.Tensor) -> torch.Tensor:
    cached = getattr(value, LOGIT_VALUE_ATTR, None)
    if cached is not None and cached.shape == value.shape:
        return cached
    eps = torch.finfo(value.dtype).eps
    value = value.clamp(eps, 1 - eps)
    return value.log() - (-value).log1p()


class ConcreteBernoulli(RelaxedBernoulli):
    """Binary Concrete distribution on (0, 1) with a density evaluated in logit space.

    Samples are ``sigmoid((logits + L) / temperature)`` with logistic noise ``L``.
    :meth:`log_prob` uses the logit that :meth:`rsample` carries and ``softplus`` throughout, so it
    is finite where the sample saturates to exactly 0 or 1 in floating point (low temperature).
    Binary Concrete: Maddison et al. 2017, arXiv:1611.00712, Sec. 3.3 and App. B.

    Example:
        >>> d = ConcreteBernoulli(torch.tensor(0.05), logits=torch.tensor([8.0, -8.0]))
        >>> bool(torch.isfinite(d.log_prob(d.rsample())).all())
        True
    """

    def __init__(
        self,
        temperature: torch.Tensor | float,
        probs: torch.Tensor | None = None,
        logits: torch.Tensor | None = None,
        validate_args: bool | None = None,
    ) -> None:
        params = logits if logits is not None else probs
        temperature = as_temperature(temperature, params)
        super().__init__(temperature, probs=probs, logits=logits, validate_args=validate_args)

    def expand(self, batch_shape, _instance=None):
        new = self._get_checked_instance(ConcreteBernoulli, _instance)
        return super().expand(batch_shape, _instance=new)

    def rsample(self, sample_shape: torch.Size = torch.Size()) -> torch.Tensor:
        logit_value = self.base_dist.rsample(sample_shape)
        value = torch.sigmoid(logit_value)
        setattr(value, LOGIT_VALUE_ATTR, logit_value)
        return value

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        if self._validate_args:
            self._validate_sample(value)
        x = _logit_of(value)
        logits, tau = self.logits, self.temperature
        diff = logits - tau * x
        # log density of the logit (Maddison et al. eq. 26), then the sigmoid Jacobian
        log_p_x = tau.log() + diff - 2 * F.softplus(diff)
        return log_p_x + F.softplus(x) + F.softplus(-x)


class StraightThroughBernoulli(Bernoulli):
    """Bernoulli whose ``rsample`` is an exact binary sample with a binary-Concrete gradient.

    The forward value ``1[(logits + L) / temperature > 0]`` is exactly Bernoulli(sigmoid(logits))
    distributed, so :meth:`log_prob` is the Bernoulli log-mass; gradients flow through the relaxed
    sample (straight-through, Jang et al. 2017, arXiv:1611.01144). Samples stay exactly 0/1 after
    ``expand`` (unlike pyro-ppl issue #3127).

    Example:
        >>> d = StraightThroughBernoulli(torch.tensor(0.5), logits=torch.zeros(3)).expand([2, 3])
        >>> sorted(d.rsample().unique().tolist()) in ([0.0], [1.0], [0.0, 1.0])
        True
    """

    arg_constraints = {
        "temperature": constraints.positive,
        "probs": constraints.unit_interval,
        "logits": constraints.real,
    }
    has_rsample = True

    def __init__(
        self,
        temperature: torch.Tensor | float,
        probs: torch.Tensor | None = None,
        logits: torch.Tensor | None = None,
        validate_args: bool | None = None,
    ) -> None:
        self._concrete = ConcreteBernoulli(temperature, probs=probs, logits=logits)
        self.temperature = self._concrete.temperature
        super().__init__(probs=probs, logits=logits, validate_args=validate_args)

    def expand(self, batch_shape, _instance=None):
        new = self._get_checked_instance(StraightThroughBernoulli, _instance)
        new._concrete = self._concrete.expand(batch_shape)
        new.temperature = self.temperature
        return super().expand(batch_shape, _instance=new)

    def rsample(self, sample_shape: torch.Size = torch.Size()) -> torch.Tensor:
        soft = self._concrete.rsample(sample_shape)
        hard = (_logit_of(soft) > 0).to(soft.dtype)
        return straight_through(soft, hard)

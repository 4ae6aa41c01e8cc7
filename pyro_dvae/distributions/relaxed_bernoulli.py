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

from .concrete import as_temperature, attach_base_value, base_value_of, straight_through

__all__ = ["ConcreteBernoulli", "StraightThroughBernoulli"]


def _logit_of(value: torch.Tensor) -> torch.Tensor:
    """logit y = log y - log(1 - y) from the value alone, exact for every y in (0, 1) (subnormal
    y included). Raises on values equal to 0 or 1: there the logit, and with it the density, is
    not determined by the value."""
    ends = (value == 0) | (value == 1)
    if bool(ends.any()):
        raise ValueError(
            f"Concrete log_prob: {int(ends.sum())} entries of the value are exactly 0 or 1 (the "
            f"sample's logit is beyond what {value.dtype} resolves), so the value does not "
            "determine its density; score an rsample() with log_prob_from_base(base_value_of(y)), "
            "or use float64 or a higher temperature"
        )
    return value.log() - (-value).log1p()


class ConcreteBernoulli(RelaxedBernoulli):
    """Binary Concrete distribution on (0, 1) with a density evaluated in logit space.

    Samples are ``sigmoid((logits + L) / temperature)`` with logistic noise ``L``. The density
    is evaluated in logit space with ``softplus`` throughout. Binary Concrete: Maddison et al.
    2017, arXiv:1611.00712, Sec. 3.3 and App. B.

    :meth:`log_prob` is a function of the value alone (any copy of a tensor gets the same
    number), from the exact logit of ``y``. At low temperature a float32 sample saturates to
    exactly 1 (logit above 16.6) or 0 (logit below -103.3); the value then does not determine the
    density and :meth:`log_prob` raises a one-line ``ValueError``. :meth:`rsample` draws the logit
    exactly and attaches it to the returned tensor
    (:func:`~pyro_dvae.distributions.base_value_of`); :meth:`log_prob_from_base` scores it, and
    the package's ELBOs (:class:`~pyro_dvae.infer.GumbelSoftmaxELBO`) score their own samples
    that way.

    Example:
        >>> d = ConcreteBernoulli(torch.tensor(0.05), logits=torch.tensor([8.0, -8.0]))
        >>> y = d.rsample()
        >>> bool(torch.isfinite(d.log_prob_from_base(base_value_of(y))).all())
        True
        >>> y = torch.tensor([0.25, 1e-30])
        >>> bool((d.log_prob(y) == d.log_prob(y.clone())).all())
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
        return attach_base_value(torch.sigmoid(logit_value), logit_value)

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        """Log density at ``value`` in (0, 1), from its numbers alone.

        :raises ValueError: where an entry of ``value`` is exactly 0 or 1 (its density is not
            determined by the value; see :meth:`log_prob_from_base`).
        """
        if self._validate_args:
            self._validate_sample(value)
        return self.log_prob_from_base(_logit_of(value))

    def log_prob_from_base(self, x: torch.Tensor) -> torch.Tensor:
        """Log density of ``y = sigmoid(x)`` on (0, 1), computed from the logit ``x``.

        Exact for the logits that :meth:`rsample` attaches, also where ``sigmoid(x)`` rounds to
        0 or 1.

        Example:
            >>> d = ConcreteBernoulli(0.05, logits=torch.tensor(2.0))
            >>> round(float(d.log_prob_from_base(torch.tensor(50.0))), 2)  # sigmoid(50.) == 1.
            45.56
        """
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
        hard = (base_value_of(soft) > 0).to(soft.dtype)
        return straight_through(soft, hard)

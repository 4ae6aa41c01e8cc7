"""Concrete (Gumbel-softmax) relaxations of one-hot categorical variables, computed in log space.

References:
    - [1] C. J. Maddison, A. Mnih, Y. W. Teh. The Concrete Distribution: A Continuous Relaxation of
      Discrete Random Variables. ICLR 2017. arXiv:1611.00712
    - [2] E. Jang, S. Gu, B. Poole. Categorical Reparameterization with Gumbel-Softmax. ICLR 2017.
      arXiv:1611.01144
"""

from __future__ import annotations

import torch
from pyro.distributions import OneHotCategorical, RelaxedOneHotCategorical
from torch.distributions import constraints

__all__ = [
    "ConcreteOneHotCategorical",
    "StraightThroughOneHotCategorical",
    "as_temperature",
    "straight_through",
]

# rsample() attaches the log-space sample to the returned tensor under this attribute, so that
# log_prob() of that very tensor, under this or any other Concrete distribution (the relaxed
# prior in the model, say), never takes log(0). Pyro's own straight-through distributions use
# the same device (``_unquantize``).
LOG_VALUE_ATTR = "_pyro_dvae_log_value"


def as_temperature(temperature: torch.Tensor | float, like: torch.Tensor | None) -> torch.Tensor:
    """Temperature as a tensor on the dtype/device of ``like``; rejects non-positive values.

    Example:
        >>> as_temperature(0.5, torch.zeros(3, dtype=torch.float64))
        tensor(0.5000, dtype=torch.float64)
    """
    if like is None:
        temperature = torch.as_tensor(temperature)
    else:
        temperature = torch.as_tensor(temperature, dtype=like.dtype, device=like.device)
    if not torch.is_floating_point(temperature):
        temperature = temperature.float()
    if not bool((temperature > 0).all()):
        raise ValueError(f"temperature must be > 0, got {temperature.tolist()}")
    return temperature


def _log_of(value: torch.Tensor) -> torch.Tensor:
    cached = getattr(value, LOG_VALUE_ATTR, None)
    if cached is not None and cached.shape == value.shape:
        return cached
    return value.clamp_min(torch.finfo(value.dtype).tiny).log()


def _exp_concrete_log_prob(
    logits: torch.Tensor, temperature: torch.Tensor, log_value: torch.Tensor
) -> torch.Tensor:
    """Log density of the ExpConcrete distribution at ``log_value`` (Maddison et al., eq. 24)."""
    k = logits.shape[-1]
    tau = temperature.unsqueeze(-1) if temperature.dim() else temperature
    log_scale = torch.lgamma(torch.tensor(float(k), dtype=logits.dtype, device=logits.device))
    log_scale = log_scale + (k - 1) * temperature.log()
    score = logits - tau * log_value
    score = (score - score.logsumexp(-1, keepdim=True)).sum(-1)
    return score + log_scale


class ConcreteOneHotCategorical(RelaxedOneHotCategorical):
    """Concrete / Gumbel-softmax distribution on the simplex with a log-space density.

    Same parameters and samples as :class:`pyro.distributions.RelaxedOneHotCategorical`, but
    :meth:`log_prob` is evaluated in log space from the log-sample that :meth:`rsample` carries,
    so it stays finite (with finite gradients) at low temperature and many classes, where the
    reference implementation returns NaN (pyro-ppl issue #3304: tau=0.1, K=1000). The
    distribution is Maddison et al.'s Concrete (arXiv:1611.00712), also called Gumbel-softmax by
    Jang et al. (arXiv:1611.01144).

    Example:
        >>> d = ConcreteOneHotCategorical(torch.tensor(0.1), logits=torch.randn(1000))
        >>> bool(torch.isfinite(d.log_prob(d.rsample())))
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
        # torch's expand pattern: views of the parameters, no re-normalization of the logits
        new = self._get_checked_instance(ConcreteOneHotCategorical, _instance)
        return super().expand(batch_shape, _instance=new)

    def rsample(self, sample_shape: torch.Size = torch.Size()) -> torch.Tensor:
        log_value = self.base_dist.rsample(sample_shape)
        value = log_value.exp()
        setattr(value, LOG_VALUE_ATTR, log_value)
        return value

    def _validate_sample(self, value: torch.Tensor) -> None:
        cached = getattr(value, LOG_VALUE_ATTR, None)
        if cached is not None and cached.shape == value.shape:
            # Our own sample: at low temperature its float32 exp() can leave the simplex
            # tolerance (and underflow to 0) although the log-space value is exact. Check the
            # shape against a one-hot vertex of the same shape instead of the rounded values.
            value = torch.zeros_like(value).scatter_(-1, cached.argmax(-1, keepdim=True), 1.0)
        super()._validate_sample(value)

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        if self._validate_args:
            self._validate_sample(value)
        log_value = _log_of(value)
        # change of variables y = exp(x): log p(y) = log p_ExpConcrete(x) - sum_k x_k
        return _exp_concrete_log_prob(self.logits, self.temperature, log_value) - log_value.sum(-1)


class _StraightThrough(torch.autograd.Function):
    """Hard value forward, gradient of the soft value backward (exactly discrete forward)."""

    @staticmethod
    def forward(ctx, soft: torch.Tensor, hard: torch.Tensor) -> torch.Tensor:
        return hard

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return grad, None


def straight_through(soft: torch.Tensor, hard: torch.Tensor) -> torch.Tensor:
    """Return ``hard`` in the forward pass with the gradient of ``soft`` in the backward pass.

    Example:
        >>> soft = torch.tensor([0.7, 0.3], requires_grad=True)
        >>> y = straight_through(soft, torch.tensor([1.0, 0.0]))
        >>> y.tolist()
        [1.0, 0.0]
        >>> (y * torch.tensor([2.0, 5.0])).sum().backward()
        >>> soft.grad.tolist()
        [2.0, 5.0]
    """
    return _StraightThrough.apply(soft, hard)


class StraightThroughOneHotCategorical(OneHotCategorical):
    """One-hot categorical whose ``rsample`` is a Gumbel-max sample with a Gumbel-softmax gradient.

    The forward value is an exact one-hot vector drawn by the Gumbel-max trick, so samples follow
    the categorical distribution exactly and :meth:`log_prob` is the categorical log-mass. The
    backward pass uses the gradient of the Concrete sample at ``temperature`` (straight-through
    Gumbel-softmax, Jang et al. 2017, arXiv:1611.01144, Sec. 2.2). Samples stay one-hot after
    ``expand``, ``to_event``, reshaping and indexing: they are ordinary one-hot tensors.

    Example:
        >>> d = StraightThroughOneHotCategorical(torch.tensor(0.5), logits=torch.zeros(3, 4))
        >>> z = d.expand([2, 3]).rsample()
        >>> bool(((z == 0) | (z == 1)).all()), z.sum(-1).unique().tolist()
        (True, [1.0])
    """

    arg_constraints = {
        "temperature": constraints.positive,
        "probs": constraints.simplex,
        "logits": constraints.real_vector,
    }
    has_rsample = True

    def __init__(
        self,
        temperature: torch.Tensor | float,
        probs: torch.Tensor | None = None,
        logits: torch.Tensor | None = None,
        validate_args: bool | None = None,
    ) -> None:
        self._concrete = ConcreteOneHotCategorical(temperature, probs=probs, logits=logits)
        self.temperature = self._concrete.temperature
        super().__init__(probs=probs, logits=logits, validate_args=validate_args)

    def expand(self, batch_shape, _instance=None):
        new = self._get_checked_instance(StraightThroughOneHotCategorical, _instance)
        new._concrete = self._concrete.expand(batch_shape)
        new.temperature = self.temperature
        return super().expand(batch_shape, _instance=new)

    def rsample(self, sample_shape: torch.Size = torch.Size()) -> torch.Tensor:
        soft = self._concrete.rsample(sample_shape)
        index = _log_of(soft).argmax(-1, keepdim=True)
        hard = torch.zeros_like(soft).scatter_(-1, index, 1.0)
        return straight_through(soft, hard)

"""Concrete (Gumbel-softmax) relaxations of one-hot categorical variables, computed in log space.

References:
    - [1] C. J. Maddison, A. Mnih, Y. W. Teh. The Concrete Distribution: A Continuous Relaxation of
      Discrete Random Variables. ICLR 2017. arXiv:1611.00712
    - [2] E. Jang, S. Gu, B. Poole. Categorical Reparameterization with Gumbel-Softmax. ICLR 2017.
      arXiv:1611.01144
"""

from __future__ import annotations

import math

import torch
from pyro.distributions import OneHotCategorical, RelaxedOneHotCategorical
from torch.distributions import constraints

__all__ = [
    "BASE_VALUE_ATTR",
    "ConcreteOneHotCategorical",
    "StraightThroughOneHotCategorical",
    "as_temperature",
    "attach_base_value",
    "base_value_of",
    "smallest_positive",
    "straight_through",
]

#: ``ConcreteOneHotCategorical.rsample`` and ``ConcreteBernoulli.rsample`` attach their exact
#: base-space sample (log y, or logit y for the binary Concrete) to the tensor they return, under
#: this attribute. ``log_prob`` never reads it: a value's density is a function of the value
#: alone. The package's ELBOs read it (:func:`base_value_of`) to score their own samples exactly
#: with ``log_prob_from_base``, also where the float value has lost that information (entries
#: that underflowed to 0 or rounded to 1).
BASE_VALUE_ATTR = "_pyro_dvae_base_value"


def attach_base_value(value: torch.Tensor, base_value: torch.Tensor) -> torch.Tensor:
    """Record on ``value`` the base-space sample it was computed from; returns ``value``.

    Example:
        >>> x = torch.tensor([-0.1, -2.4])
        >>> base_value_of(attach_base_value(x.exp(), x)) is x
        True
    """
    setattr(value, BASE_VALUE_ATTR, base_value)
    return value


def base_value_of(value: torch.Tensor) -> torch.Tensor | None:
    """The base-space sample that a Concrete ``rsample`` attached to this very tensor, or ``None``.

    Copies (``clone``, slices, ``.to()``) carry none; ``log_prob`` scores every tensor from its
    values alone.

    Example:
        >>> y = ConcreteOneHotCategorical(0.5, logits=torch.zeros(3)).rsample()
        >>> torch.allclose(base_value_of(y), y.log()), base_value_of(y.clone())
        (True, None)
    """
    base = getattr(value, BASE_VALUE_ATTR, None)
    if base is not None and base.shape == value.shape:
        return base
    return None


def smallest_positive(dtype: torch.dtype) -> float:
    """The smallest positive (subnormal) number of a floating dtype.

    Example:
        >>> smallest_positive(torch.float32)
        1.401298464324817e-45
    """
    info = torch.finfo(dtype)
    return float(info.smallest_normal) * float(info.eps)


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
    """log y of a simplex point from its value alone: the exact log of every positive entry
    (subnormal ones included), shifted so that logsumexp(log y) = 0 (a float vector that misses
    a unit sum by rounding is read as the simplex point it rounds). Raises on entries equal to
    0: there log y, and with it the density, is not determined by the value."""
    zeros = value == 0
    if bool(zeros.any()):
        floor = math.log(smallest_positive(value.dtype))
        raise ValueError(
            f"Concrete log_prob: {int(zeros.sum())} entries of the value are exactly 0 (log y "
            f"below {floor:.1f}, the {value.dtype} limit), so the value does not determine its "
            "density; score an rsample() with log_prob_from_base(base_value_of(y)), or use "
            "float64 or a higher temperature"
        )
    log_value = value.log()
    return log_value - log_value.logsumexp(-1, keepdim=True)


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

    Same parameters and samples as :class:`pyro.distributions.RelaxedOneHotCategorical`, but the
    density is evaluated in log space, so it stays finite (with finite gradients) at low
    temperature and many classes, where the reference implementation returns NaN (pyro-ppl issue
    #3304: tau=0.1, K=1000). The distribution is Maddison et al.'s Concrete (arXiv:1611.00712),
    also called Gumbel-softmax by Jang et al. (arXiv:1611.01144).

    :meth:`log_prob` is a function of the value alone (any copy of a tensor gets the same
    number): it takes the exact log of every entry, subnormal ones included. A float32 sample at
    low temperature often has entries that underflowed to exactly 0 (log y < -103.3); the value
    then does not determine the density and :meth:`log_prob` raises a one-line ``ValueError``.
    :meth:`rsample` draws log y exactly and attaches it to the returned tensor
    (:func:`base_value_of`); :meth:`log_prob_from_base` scores it, and the package's ELBOs
    (:class:`~pyro_dvae.infer.GumbelSoftmaxELBO`) score their own samples that way.

    Example:
        >>> d = ConcreteOneHotCategorical(torch.tensor(0.1), logits=torch.randn(1000))
        >>> y = d.rsample()
        >>> bool(torch.isfinite(d.log_prob_from_base(base_value_of(y))))
        True
        >>> d = ConcreteOneHotCategorical(0.5, logits=torch.zeros(3))
        >>> y = torch.tensor([0.2, 0.3, 0.5])
        >>> bool(d.log_prob(y) == d.log_prob(y.clone()))
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
        return attach_base_value(log_value.exp(), log_value)

    def _validate_sample(self, value: torch.Tensor) -> None:
        # torch checks the unit sum to 1e-6, which a float32 sample at low temperature misses by
        # rounding alone (log-softmax of logits / tau ~ 100 has absolute errors ~ 100 eps):
        # check the sum to sqrt(eps) here, and the shapes against the nearest one-hot vertex.
        if torch.is_floating_point(value) and value.dim():
            tol = max(1e-6, torch.finfo(value.dtype).eps ** 0.5)
            inside = (value >= 0).all(-1) & ((value.sum(-1) - 1).abs() <= tol)
            if not bool(inside.all()):
                raise ValueError(
                    f"Expected value argument of shape {tuple(value.shape)} to lie on the simplex "
                    f"(entries >= 0 summing to 1 within {tol:.1e}) for {type(self).__name__}"
                )
            value = torch.zeros_like(value).scatter_(-1, value.argmax(-1, keepdim=True), 1.0)
        super()._validate_sample(value)

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        """Log density at the simplex point ``value``, from its numbers alone.

        :raises ValueError: where an entry of ``value`` is exactly 0 (its density is not
            determined by the value; see :meth:`log_prob_from_base`).
        """
        if self._validate_args:
            self._validate_sample(value)
        return self.log_prob_from_base(_log_of(value))

    def log_prob_from_base(self, log_value: torch.Tensor) -> torch.Tensor:
        """Log density of ``y = exp(log_value)`` on the simplex, computed from ``log_value``.

        Exact for the log-space samples that :meth:`rsample` attaches (:func:`base_value_of`),
        also where ``exp(log_value)`` underflows to 0.

        Example:
            >>> d = ConcreteOneHotCategorical(0.1, logits=torch.tensor([0.0, 40.0]))
            >>> log_y = torch.tensor([-400.0, 0.0])  # exp(-400) is 0 in float32
            >>> round(float(d.log_prob_from_base(log_y)), 2)
            396.31
        """
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
        index = base_value_of(soft).argmax(-1, keepdim=True)
        hard = torch.zeros_like(soft).scatter_(-1, index, 1.0)
        return straight_through(soft, hard)

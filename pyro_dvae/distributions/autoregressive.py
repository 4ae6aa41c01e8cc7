"""Autoregressive priors over discrete codes: binary units or one-hot groups, each conditioned
on the ones before it through one affine map.

Bernoulli (a fully visible sigmoid belief network):
p(z) = prod_i Bernoulli(z_i; sigmoid(b_i + sum_{j<i} W_ij z_j)).
One-hot groups: p(z) = prod_i OneHotCategorical(z_i; softmax(b_i + W_i z_<i)), with ``W_i`` the
rows of group i over the flattened earlier groups. Either can put its mass on correlated codes,
where a factorized prior cannot. ``log_prob`` costs one ``[D, D]`` matrix product (``D`` code
coordinates); sampling is sequential over the units or groups.

Against a guide that factorizes over the units (groups), the KL term has a low-variance estimate
from one sample ``z ~ q``: KL(q || p) = E_q[sum_i KL(q_i || p(z_i | z_<i))], because under q the
unit z_i is independent of the z_<i that set its prior conditional (:meth:`conditionals`). The
ELBOs of :mod:`pyro_dvae.infer` use it wherever a model's prior provides ``conditionals``.

References:
    - [1] B. J. Frey. Graphical Models for Machine Learning and Digital Communication. MIT
      Press, 1998 (the fully visible sigmoid belief network).
    - [2] K. Gregor, I. Danihelka, A. Mnih, C. Blundell, D. Wierstra. Deep AutoRegressive
      Networks. ICML 2014. arXiv:1310.8499 (autoregressive priors over binary latents).
"""

from __future__ import annotations

import math

import torch
from pyro.distributions import TorchDistribution
from torch.distributions import Independent, constraints

from ..errors import DVAEInputError, LatentSpaceTooLargeError
from .broadcasting import Bernoulli, OneHotCategorical

__all__ = ["AutoregressiveBernoulli", "AutoregressiveOneHotCategorical", "MAX_ENUMERATED_CODES"]

#: ``enumerate_support`` lists every code; above this many it refuses.
MAX_ENUMERATED_CODES = 2**20


class _Autoregressive(TorchDistribution):
    """Shared machinery: ``bias`` ``[..., *unit_shape]``, ``weight`` ``[..., D, D]`` over the
    flattened code, masked so that each unit (group) sees only the earlier ones."""

    arg_constraints = {
        "bias": constraints.real_vector,
        "weight": constraints.independent(constraints.real, 2),
    }
    has_enumerate_support = True
    _unit_ndim = 1  # trailing dims of bias that make one code

    def __init__(
        self, bias: torch.Tensor, weight: torch.Tensor, validate_args: bool | None = None
    ) -> None:
        name = type(self).__name__
        if bias.dim() < self._unit_ndim or weight.dim() < 2:
            raise DVAEInputError(
                f"{name}: bias must have {self._unit_ndim} trailing code dims and weight be "
                f"[..., D, D], got shapes {tuple(bias.shape)} and {tuple(weight.shape)}"
            )
        unit_shape = bias.shape[bias.dim() - self._unit_ndim :]
        d = math.prod(unit_shape)
        if weight.shape[-2:] != (d, d):
            raise DVAEInputError(
                f"{name}: weight must have shape [..., {d}, {d}] for a code of shape "
                f"{tuple(unit_shape)}, got {tuple(weight.shape)}"
            )
        self.bias, self.weight = bias, weight
        batch_shape = torch.broadcast_shapes(bias.shape[: -self._unit_ndim], weight.shape[:-2])
        super().__init__(batch_shape, unit_shape, validate_args=validate_args)

    # -- structure -----------------------------------------------------------------------------
    @property
    def group_size(self) -> int:
        """Code coordinates per autoregressive step (1 unit, or K categories)."""
        return 1 if self._unit_ndim == 1 else self.event_shape[-1]

    @property
    def masked_weight(self) -> torch.Tensor:
        """``weight`` with every entry from a unit (group) to itself or a later one zeroed."""
        d = self.weight.shape[-1]
        group = torch.arange(d, device=self.weight.device) // self.group_size
        return self.weight * (group.unsqueeze(-1) > group).to(self.weight.dtype)

    def expand(self, batch_shape, _instance=None):
        new = self._get_checked_instance(type(self), _instance)
        batch_shape = torch.Size(batch_shape)
        new.bias = self.bias.expand(batch_shape + self.event_shape)
        new.weight = self.weight
        super(_Autoregressive, new).__init__(batch_shape, self.event_shape, False)
        new._validate_args = self._validate_args
        return new

    def conditional_logits(self, value: torch.Tensor) -> torch.Tensor:
        """The logits of every unit (group) given the earlier ones of ``value``: shape of
        ``value`` and ``bias`` broadcast."""
        flat = value.flatten(-self._unit_ndim) if self._unit_ndim > 1 else value
        w = self.masked_weight
        if w.dim() == 2:
            out = flat @ w.transpose(-1, -2)
        else:
            out = (w @ flat.unsqueeze(-1)).squeeze(-1)
        return self.bias + out.reshape(out.shape[:-1] + self.event_shape)

    def conditionals(self, value: torch.Tensor) -> Independent:
        """The prior conditionals ``prod_i p(z_i | z_<i = value_<i)`` as a factorized
        distribution over the code: its ``log_prob(value)`` equals this distribution's, and
        against a guide q that factorizes the same way, ``kl_divergence(q, p.conditionals(z))``
        at ``z ~ q`` is an unbiased estimate of KL(q || p) with each unit's own sampling noise
        summed out."""
        return self._leaf(self.conditional_logits(value)).to_event(1)

    def _leaf(self, logits: torch.Tensor) -> torch.distributions.Distribution:
        raise NotImplementedError

    # -- densities and samples -----------------------------------------------------------------
    def _validate_sample(self, value: torch.Tensor) -> None:
        if not bool(((value == 0) | (value == 1)).all()):
            raise DVAEInputError(
                f"{type(self).__name__} scores discrete codes but got values other than 0 and 1 "
                "(a relaxed sample?); train it with a hard-sample estimator (st-gumbel, "
                "gumbel-rao, reinmax, score function) and kl='analytic'"
            )
        super()._validate_sample(value)

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        if self._validate_args:
            self._validate_sample(value)
        return self.conditionals(value).log_prob(value)

    def sample(self, sample_shape: torch.Size = torch.Size()) -> torch.Tensor:
        shape = self._extended_shape(sample_shape)
        k = self.group_size
        with torch.no_grad():
            bias = self.bias.expand(shape).reshape(shape[: len(shape) - self._unit_ndim] + (-1,))
            w = self.masked_weight
            z = torch.zeros_like(bias)
            for i in range(bias.shape[-1] // k):
                rows = slice(i * k, (i + 1) * k)
                logits = bias[..., rows] + (
                    z[..., : i * k].unsqueeze(-2) * w[..., rows, : i * k]
                ).sum(-1)
                z[..., rows] = self._leaf(logits).sample()
        return z.reshape(shape)

    def _num_codes(self) -> int:
        raise NotImplementedError

    def _codes(self) -> torch.Tensor:
        raise NotImplementedError

    def enumerate_support(self, expand: bool = True) -> torch.Tensor:
        n = self._num_codes()
        if n > MAX_ENUMERATED_CODES:
            raise LatentSpaceTooLargeError(
                f"{type(self).__name__} over codes of shape {tuple(self.event_shape)} has {n:,} "
                f"codes, too many to enumerate (limit {MAX_ENUMERATED_CODES:,}); use an "
                "importance-weighted bound (iwae_log_likelihood) or a sampling estimator"
            )
        values = self._codes().to(self.bias.dtype)
        values = values.reshape((n,) + (1,) * len(self.batch_shape) + self.event_shape)
        if expand:
            values = values.expand((n,) + self.batch_shape + self.event_shape)
        return values


class AutoregressiveBernoulli(_Autoregressive):
    """Binary codes ``z in {0, 1}^N`` with ``logit p(z_i = 1 | z_<i) = bias_i + W[i, :i] @ z_<i``.

    Only the strictly lower triangle of ``weight`` is used; with ``weight = 0`` this is the
    factorized ``Bernoulli(logits=bias).to_event(1)``.

    :param bias: logits of each unit given all-zero predecessors, shape ``[..., N]``.
    :param weight: autoregressive weights, shape ``[N, N]`` or ``[..., N, N]``.

    Example:
        >>> w = torch.tensor([[0.0, 0, 0], [4, 0, 0], [0, 4, 0]])
        >>> p = AutoregressiveBernoulli(torch.zeros(3), w)
        >>> p.event_shape, p.sample((2,)).shape
        (torch.Size([3]), torch.Size([2, 3]))
        >>> float(p.log_prob(torch.tensor([1.0, 1.0, 1.0])))  # log(0.5 * sigmoid(4) ** 2)
        -0.729...
    """

    support = constraints.independent(constraints.boolean, 1)

    def _leaf(self, logits: torch.Tensor) -> Bernoulli:
        return Bernoulli(logits=logits)

    def _num_codes(self) -> int:
        return 2 ** self.event_shape[0]

    def _codes(self) -> torch.Tensor:
        n = self.event_shape[0]
        codes = torch.arange(2**n, device=self.bias.device).unsqueeze(-1)
        return (codes >> torch.arange(n, device=self.bias.device)) & 1


class AutoregressiveOneHotCategorical(_Autoregressive):
    """``N`` one-hot groups of ``K`` with ``logits(z_i | z_<i) = bias_i + W_i @ flatten(z_<i)``,
    ``W_i`` the ``K`` rows of group ``i`` of ``weight`` (``[N K, N K]``; entries from group ``i``
    to itself or later groups are unused). With ``weight = 0`` this is the factorized
    ``OneHotCategorical(logits=bias).to_event(1)``.

    :param bias: logits of each group given all-zero predecessors, shape ``[..., N, K]``.
    :param weight: autoregressive weights, shape ``[N K, N K]`` or ``[..., N K, N K]``.

    Example:
        >>> p = AutoregressiveOneHotCategorical(torch.zeros(2, 3), torch.zeros(6, 6))
        >>> p.event_shape, p.sample((4,)).sum(-1).unique().tolist()
        (torch.Size([2, 3]), [1.0])
        >>> round(float(p.log_prob(torch.eye(3)[[0, 2]])), 4)  # log(1/9)
        -2.1972
    """

    support = constraints.independent(constraints.one_hot, 1)
    _unit_ndim = 2

    def _leaf(self, logits: torch.Tensor) -> OneHotCategorical:
        return OneHotCategorical(logits=logits)

    def _num_codes(self) -> int:
        n, k = self.event_shape
        return k**n

    def _codes(self) -> torch.Tensor:
        n, k = self.event_shape
        index = torch.arange(k**n, device=self.bias.device).unsqueeze(-1)
        digits = (index // k ** torch.arange(n - 1, -1, -1, device=self.bias.device)) % k
        return torch.nn.functional.one_hot(digits, k)

"""An autoregressive (fully visible sigmoid belief network) prior over binary codes.

p(z) = prod_i Bernoulli(z_i; sigmoid(b_i + sum_{j<i} W_ij z_j)): a prior over ``N`` binary
latents that can put its mass on correlated codes, where a factorized Bernoulli prior cannot.
Every unit's conditional is one affine function of the units before it, so ``log_prob`` costs
one ``[N, N]`` matrix product; sampling is sequential over the ``N`` units.

Against a guide that factorizes over the units, the KL term has a low-variance estimate from
one sample ``z ~ q``: KL(q || p) = E_q[sum_i KL(q_i || p(z_i | z_<i))], because under q the unit
z_i is independent of the z_<i that set its prior conditional (:meth:`conditionals`). The
ELBOs of :mod:`pyro_dvae.infer` use it wherever a model's prior provides ``conditionals``.

References:
    - [1] B. J. Frey. Graphical Models for Machine Learning and Digital Communication. MIT
      Press, 1998 (the fully visible sigmoid belief network).
    - [2] K. Gregor, I. Danihelka, A. Mnih, C. Blundell, D. Wierstra. Deep AutoRegressive
      Networks. ICML 2014. arXiv:1310.8499 (autoregressive priors over binary latents).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from pyro.distributions import TorchDistribution
from torch.distributions import constraints

from ..errors import DVAEInputError, LatentSpaceTooLargeError
from .broadcasting import Bernoulli

__all__ = ["AutoregressiveBernoulli", "MAX_ENUMERATED_UNITS"]

#: ``enumerate_support`` lists all ``2**N`` codes; above this many units it refuses.
MAX_ENUMERATED_UNITS = 20


class AutoregressiveBernoulli(TorchDistribution):
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

    arg_constraints = {
        "bias": constraints.real_vector,
        "weight": constraints.independent(constraints.real, 2),
    }
    support = constraints.independent(constraints.boolean, 1)
    has_enumerate_support = True

    def __init__(
        self, bias: torch.Tensor, weight: torch.Tensor, validate_args: bool | None = None
    ) -> None:
        if bias.dim() < 1 or weight.dim() < 2:
            raise DVAEInputError(
                f"bias must be [..., N] and weight [..., N, N], got shapes {tuple(bias.shape)} "
                f"and {tuple(weight.shape)}"
            )
        n = bias.shape[-1]
        if weight.shape[-2:] != (n, n):
            raise DVAEInputError(
                f"weight must have shape [..., {n}, {n}] for {n} units, got {tuple(weight.shape)}"
            )
        self.bias, self.weight = bias, weight
        batch_shape = torch.broadcast_shapes(bias.shape[:-1], weight.shape[:-2])
        super().__init__(batch_shape, torch.Size([n]), validate_args=validate_args)

    @property
    def num_units(self) -> int:
        return self.event_shape[0]

    def expand(self, batch_shape, _instance=None) -> AutoregressiveBernoulli:
        new = self._get_checked_instance(AutoregressiveBernoulli, _instance)
        batch_shape = torch.Size(batch_shape)
        new.bias = self.bias.expand(batch_shape + self.event_shape)
        new.weight = self.weight
        super(AutoregressiveBernoulli, new).__init__(batch_shape, self.event_shape, False)
        new._validate_args = self._validate_args
        return new

    def conditional_logits(self, value: torch.Tensor) -> torch.Tensor:
        """``logit p(z_i = 1 | z_<i = value_<i)`` of every unit (value and bias broadcast)."""
        w = self.weight.tril(-1)
        if w.dim() == 2:
            return self.bias + value @ w.transpose(-1, -2)
        return self.bias + (w @ value.unsqueeze(-1)).squeeze(-1)

    def conditionals(self, value: torch.Tensor) -> torch.distributions.Independent:
        """The prior conditionals ``prod_i p(z_i | z_<i = value_<i)`` as a factorized Bernoulli
        (event ``[N]``): ``log_prob(value)`` equals this distribution's, and against a guide q that
        factorizes over the units, ``kl_divergence(q, p.conditionals(z))`` at ``z ~ q`` is an
        unbiased estimate of KL(q || p) with each unit's sampling noise summed out."""
        return Bernoulli(logits=self.conditional_logits(value)).to_event(1)

    def _validate_sample(self, value: torch.Tensor) -> None:
        if not bool(((value == 0) | (value == 1)).all()):
            raise DVAEInputError(
                "AutoregressiveBernoulli scores binary codes but got non-binary values (a relaxed "
                "sample?); train it with a hard-sample estimator (st-gumbel, gumbel-rao, reinmax, "
                "score function) and kl='analytic'"
            )
        super()._validate_sample(value)

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        if self._validate_args:
            self._validate_sample(value)
        logits = self.conditional_logits(value)
        value = value.expand(logits.shape)
        return -F.binary_cross_entropy_with_logits(logits, value, reduction="none").sum(-1)

    def sample(self, sample_shape: torch.Size = torch.Size()) -> torch.Tensor:
        shape = self._extended_shape(sample_shape)
        with torch.no_grad():
            bias = self.bias.expand(shape)
            w = self.weight.tril(-1)
            z = torch.zeros(shape, dtype=bias.dtype, device=bias.device)
            for i in range(self.num_units):
                logit = bias[..., i] + (z[..., :i] * w[..., i, :i]).sum(-1)
                z[..., i] = torch.bernoulli(torch.sigmoid(logit))
        return z

    def enumerate_support(self, expand: bool = True) -> torch.Tensor:
        n = self.num_units
        if n > MAX_ENUMERATED_UNITS:
            raise LatentSpaceTooLargeError(
                f"an autoregressive prior over {n} binary units has 2^{n} codes, too many to "
                f"enumerate (limit {MAX_ENUMERATED_UNITS} units); use an importance-weighted "
                "bound (iwae_log_likelihood) or a sampling estimator"
            )
        codes = torch.arange(2**n, device=self.bias.device).unsqueeze(-1)
        bits = (codes >> torch.arange(n, device=self.bias.device)) & 1
        values = bits.to(self.bias.dtype).reshape((2**n,) + (1,) * len(self.batch_shape) + (n,))
        if expand:
            values = values.expand((2**n,) + self.batch_shape + (n,))
        return values

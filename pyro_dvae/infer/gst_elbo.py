"""Gapped straight-through (GST): exact discrete samples, a deterministic straight-through gradient.

Straight-through Gumbel-softmax differentiates ``softmax((logits + G) / tau)`` at Gumbel noise
``G`` whose argmax is the sampled class D. GST keeps two properties of that perturbation and
drops its randomness (Fan, Chi, Rudnicky & Ramadge 2022): the perturbed logits are
``logits + stop_gradient(m1 - m2)`` with::

    m1 = (max_j logits_j - logits) * D            (the sampled logit becomes the largest)
    m2 = relu(logits - max_j logits_j + gap) * (1 - D)
                                                  (every other logit ends >= gap below it)

so that the argmax of the perturbed logits is D with a margin of ``gap`` (the paper's GST-1.0
uses ``gap = 1``). The forward value is the exact one-hot D; the backward pass is the Jacobian of
``softmax(perturbed / tau)``. No resampling and one evaluation per step, like straight-through.
The estimator is biased (as every straight-through estimator); the tests measure its bias
against the exact gradient by enumeration.

Reference: T.-H. Fan, T.-C. Chi, A. I. Rudnicky, P. J. Ramadge. Training Discrete Deep
Generative Models via Gapped Straight-Through Estimator. ICML 2022, arXiv:2206.07235.
"""

from __future__ import annotations

import torch
from pyro.distributions import Bernoulli, OneHotCategorical

from ..errors import DVAEInputError
from .gumbel_softmax_elbo import GumbelSoftmaxELBO
from .relax import Relaxation

__all__ = [
    "GSTBernoulli",
    "GSTELBO",
    "GSTOneHotCategorical",
    "gst_bernoulli",
    "gst_one_hot",
]

_EMPTY = torch.Size()


def check_gap(gap: float) -> float:
    gap = float(gap)
    if not gap > 0:
        raise DVAEInputError(f"the GST gap must be > 0, got {gap}; pass e.g. 1.0")
    return gap


def gst_one_hot(
    logits: torch.Tensor,
    hard: torch.Tensor,
    temperature: float | torch.Tensor = 1.0,
    gap: float = 1.0,
) -> torch.Tensor:
    """The one-hot ``hard`` in the forward pass, with the gapped straight-through gradient wrt
    ``logits`` (the Jacobian of ``softmax((logits + stop_gradient(m1 - m2)) / tau)``).

    Example:
        >>> logits = torch.tensor([0.0, 1.0, 0.5], requires_grad=True)
        >>> y = gst_one_hot(logits, torch.tensor([1.0, 0.0, 0.0]), gap=1.0)
        >>> y.tolist()
        [1.0, 0.0, 0.0]
        >>> perturbed = logits + gst_perturbation(logits, y)
        >>> [round(v, 4) for v in perturbed.tolist()]  # sampled class on top, others >= 1 below
        [1.0, 0.0, 0.0]
    """
    hard = hard.detach()
    tau = torch.as_tensor(temperature, dtype=logits.dtype, device=logits.device)
    tau = tau.unsqueeze(-1) if tau.dim() else tau  # one temperature per group
    soft = torch.softmax((logits + gst_perturbation(logits, hard, gap)) / tau, -1)
    return hard + (soft - soft.detach())


def gst_perturbation(logits: torch.Tensor, hard: torch.Tensor, gap: float = 1.0) -> torch.Tensor:
    """GST's deterministic perturbation ``m1 - m2`` of ``logits`` given the one-hot ``hard``
    (detached).

    Example:
        >>> gst_perturbation(torch.tensor([0.0, 2.0]), torch.tensor([1.0, 0.0]), gap=0.5).tolist()
        [2.0, -0.5]
    """
    with torch.no_grad():
        hard = hard.to(logits.dtype)
        top = logits.max(-1, keepdim=True).values
        m1 = (top - logits) * hard
        m2 = torch.relu(logits - top + gap) * (1 - hard)
        return m1 - m2


def gst_bernoulli(
    logits: torch.Tensor,
    hard: torch.Tensor,
    temperature: float | torch.Tensor = 1.0,
    gap: float = 1.0,
) -> torch.Tensor:
    """The bits ``hard`` in the forward pass with the GST gradient wrt ``logits``: the two-class
    case of :func:`gst_one_hot` (class 1 with logit ``logits``, class 0 with logit 0). The
    perturbed logit is ``max(logits, gap)`` for a 1 and ``min(logits, -gap)`` for a 0.

    Example:
        >>> logits = torch.tensor([0.0, 3.0], requires_grad=True)
        >>> y = gst_bernoulli(logits, torch.tensor([1.0, 1.0]))
        >>> y.sum().backward()
        >>> [round(g, 4) for g in logits.grad.tolist()]  # sigmoid'(1) and sigmoid'(3)
        [0.1966, 0.0452]
    """
    hard = hard.detach()
    tau = torch.as_tensor(temperature, dtype=logits.dtype, device=logits.device)
    with torch.no_grad():
        target = torch.where(hard > 0, logits.clamp(min=gap), logits.clamp(max=-gap))
    soft = torch.sigmoid((logits + (target - logits).detach()) / tau)
    return hard + (soft - soft.detach())


class _GappedSampling:
    """The temperature and gap of a gapped straight-through distribution: kept through
    ``expand``; ``rsample`` is exact, with a surrogate gradient."""

    has_rsample = True

    def __init__(
        self,
        temperature: float | torch.Tensor,
        gap: float = 1.0,
        probs: torch.Tensor | None = None,
        logits: torch.Tensor | None = None,
        validate_args: bool | None = None,
    ) -> None:
        self.temperature = temperature
        self.gap = check_gap(gap)
        super().__init__(probs=probs, logits=logits, validate_args=validate_args)

    def expand(self, batch_shape, _instance=None):
        new = self._get_checked_instance(type(self), _instance)
        new.temperature, new.gap = self.temperature, self.gap
        return super().expand(batch_shape, _instance=new)


class GSTOneHotCategorical(_GappedSampling, OneHotCategorical):
    """One-hot categorical sampled exactly, with the gapped straight-through gradient
    (:func:`gst_one_hot`, arXiv:2206.07235). :meth:`log_prob` is the categorical log-mass.

    Example:
        >>> d = GSTOneHotCategorical(1.0, 1.0, logits=torch.zeros(2, 4)).expand([3, 2])
        >>> z = d.rsample()
        >>> z.shape, z.sum(-1).unique().tolist()
        (torch.Size([3, 2, 4]), [1.0])
    """

    def rsample(self, sample_shape: torch.Size = _EMPTY) -> torch.Tensor:
        logits = self.logits.expand(self._extended_shape(sample_shape))
        with torch.no_grad():
            flat = torch.softmax(logits.reshape(-1, logits.shape[-1]), -1)
            index = torch.multinomial(flat, 1).reshape(logits.shape[:-1] + (1,))
            hard = torch.zeros_like(logits).scatter_(-1, index, 1.0)
        return gst_one_hot(logits, hard, self.temperature, self.gap)


class GSTBernoulli(_GappedSampling, Bernoulli):
    """Bernoulli sampled exactly, with the gapped straight-through gradient
    (:func:`gst_bernoulli`). :meth:`log_prob` is the Bernoulli log-mass.

    Example:
        >>> z = GSTBernoulli(1.0, 1.0, logits=torch.zeros(5)).rsample()
        >>> bool(((z == 0) | (z == 1)).all())
        True
    """

    def rsample(self, sample_shape: torch.Size = _EMPTY) -> torch.Tensor:
        logits = self.logits.expand(self._extended_shape(sample_shape))
        with torch.no_grad():
            hard = torch.bernoulli(torch.sigmoid(logits))
        return gst_bernoulli(logits, hard, self.temperature, self.gap)


class GSTELBO(GumbelSoftmaxELBO):
    """Gapped straight-through estimator of the discrete ELBO (Fan et al. 2022,
    arXiv:2206.07235; see :mod:`pyro_dvae.infer.gst_elbo`).

    Latents are exact discrete samples from the guide (``OneHotCategorical`` and ``Bernoulli``
    sites, under any ``.to_event`` / ``.expand`` / ``.mask``, in any number of sites and
    plates); the backward pass differentiates ``softmax((logits + m) / tau)`` at GST's
    deterministic, gapped perturbation ``m``. The KL term is the exact discrete
    KL(q(z|x) || p(z)), so the loss is an unbiased estimate of -ELBO; the gradient is biased.
    An integer ``Categorical`` latent raises a one-line error (declare it one-hot).

    :param temperature: tau of the softmax in the backward pass.
    :param gap: the margin between the sampled logit and the others (GST-1.0: 1.0).
    :param kwargs: passed to :class:`~pyro.infer.Trace_ELBO` (``num_particles``, ...).

    Example:
        >>> import pyro, pyro.distributions as dist
        >>> def model(x):
        ...     with pyro.plate("data", len(x)):
        ...         z = pyro.sample("z", dist.Bernoulli(0.5))
        ...         pyro.sample("x", dist.Normal(2.0 * z, 1.0), obs=x)
        >>> def guide(x):
        ...     with pyro.plate("data", len(x)):
        ...         pyro.sample("z", dist.Bernoulli(logits=pyro.param("p", torch.tensor(0.0))))
        >>> loss = GSTELBO().loss_and_grads(model, guide, torch.full((8,), 2.0))
        >>> bool(pyro.param("p").unconstrained().grad < 0)  # descent raises q(z = 1)
        True
    """

    def __init__(self, temperature: float = 1.0, gap: float = 1.0, **kwargs) -> None:
        super().__init__(temperature=temperature, kl="analytic", straight_through=True, **kwargs)
        self.gap = check_gap(gap)

    def _relaxation(self) -> Relaxation:
        return Relaxation.gst(self.temperature, self.gap)

    def _get_trace(self, model, guide, args, kwargs):
        try:
            return super()._get_trace(model, guide, args, kwargs)
        except DVAEInputError as e:  # Pyro appends the trace shapes: keep the one-line message
            raise DVAEInputError(str(e).splitlines()[0]) from None

"""RLOO: multi-sample REINFORCE with a leave-one-out baseline (Kool, van Hoof, Welling 2019)."""

from __future__ import annotations

import torch
from pyro.infer import ELBO
from pyro.infer.enum import get_importance_trace
from pyro.infer.util import is_validation_enabled, torch_item
from pyro.util import check_if_enumerated, warn_if_nan

from ..errors import DVAEInputError
from .local_latents import local_data_plates, per_datum_terms
from .surrogate_loss import SurrogateLossMixin

__all__ = ["RLOOELBO", "rloo_learning_signals"]


def rloo_learning_signals(f: torch.Tensor) -> torch.Tensor:
    """Leave-one-out learning signals ``f_k - mean_{j != k} f_j`` from per-sample values
    ``f`` of shape ``[K, ...]`` (K >= 2); the result is detached.

    Equal to ``K / (K - 1) * (f_k - mean_j f_j)``.

    Example:
        >>> rloo_learning_signals(torch.tensor([1.0, 2.0, 6.0]))
        tensor([-3.0000, -1.5000,  4.5000])
    """
    f = f.detach()
    k = f.shape[0]
    if k < 2:
        raise DVAEInputError("RLOO needs at least 2 samples for its leave-one-out baseline")
    return f - (f.sum(0, keepdim=True) - f) / (k - 1)


class RLOOELBO(SurrogateLossMixin, ELBO):
    """REINFORCE with K samples and a leave-one-out baseline ("Buy 4 REINFORCE samples, get a
    baseline for free!", Kool, van Hoof & Welling, ICLR 2019 DeepRLStructPred workshop).

    Per datum, K latents ``z_1..z_K ~ q(z|x)`` are drawn and the sample ELBO
    ``f_k = log p(x, z_k) - log q(z_k|x)`` is computed for each. The gradient estimate is::

        (1/K) sum_k [ (f_k - mean_{j != k} f_j) grad log q(z_k|x) + grad f_k ]

    where ``grad f_k`` is the pathwise part (model parameters, reparameterized guide sites);
    the discrete sites' ``grad log q(z_k|x)`` at the drawn value, whose expectation is zero,
    is left out of it (on a 3x4 categorical VAE this halves the gradient variance).
    The baseline of sample k uses the other samples only, so the estimate is unbiased for the
    gradient of the ELBO (the objective is the ordinary ELBO, not a K-sample bound as in
    VIMCO). Each datum gets its own baselines: the K particles are a vectorized plate left of
    the model's plates and ``f`` is kept per datum along the data plates
    (:mod:`~pyro_dvae.infer.local_latents`).

    Works on any model and guide in Pyro syntax whose guide sites lie inside the data plates
    (or that have no data plate: the batch is then one datum), with any number of discrete
    sites (``Bernoulli``, ``Categorical``, ``OneHotCategorical``, ...), plates and
    reparameterized continuous sites. The model must broadcast over the leading particle dim.

    :param num_particles: K >= 2 samples per datum and step.
    :param max_plate_nesting: as for Pyro's ELBOs (guessed if omitted).

    References: W. Kool, H. van Hoof, M. Welling. Buy 4 REINFORCE Samples, Get a Baseline for
    Free! ICLR 2019 workshop on Deep RL Meets Structured Prediction; for the K-sample bound
    instead of the ELBO, see VIMCO (:class:`~pyro_dvae.infer.VIMCOELBO`, arXiv:1602.06725).

    Example:
        >>> import pyro, pyro.distributions as dist
        >>> def model(x):
        ...     with pyro.plate("data", len(x)):
        ...         z = pyro.sample("z", dist.Bernoulli(0.5))
        ...         pyro.sample("x", dist.Normal(z, 1.0), obs=x)
        >>> def guide(x):
        ...     p = pyro.param("p", torch.tensor(0.5))
        ...     with pyro.plate("data", len(x)):
        ...         pyro.sample("z", dist.Bernoulli(p))
        >>> loss = RLOOELBO(num_particles=4).loss_and_grads(model, guide, torch.zeros(3))
    """

    def __init__(self, num_particles: int = 4, max_plate_nesting: float = float("inf")) -> None:
        if int(num_particles) < 2:
            raise DVAEInputError(
                f"RLOO needs num_particles >= 2 (leave-one-out baseline), got {num_particles}; "
                "pass e.g. num_particles=4"
            )
        super().__init__(
            num_particles=int(num_particles),
            max_plate_nesting=max_plate_nesting,
            vectorize_particles=True,
        )

    def _get_trace(self, model, guide, args, kwargs):
        model_trace, guide_trace = get_importance_trace(
            "flat", self.max_plate_nesting, model, guide, args, kwargs
        )
        if is_validation_enabled():
            check_if_enumerated(guide_trace)
        return model_trace, guide_trace

    def sample_elbos(self, model, guide, *args, **kwargs) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-particle, per-datum sample ELBO ``f_k`` and the summed score terms
        ``log q(z_k|x)`` of the guide's non-reparameterized sites, both ``[K, num_data]``."""
        model_trace, guide_trace = next(self._get_traces(model, guide, args, kwargs))
        plates = local_data_plates(model_trace, guide_trace, lead=1, name="RLOO")
        f, scores = per_datum_terms(
            model_trace, guide_trace, plates, lead=1, detach_discrete_log_q=True
        )
        shape = (self.num_particles, plates.num_data)
        score = sum(scores.values(), torch.zeros((), dtype=f.dtype, device=f.device))
        return f.expand(shape), torch.as_tensor(score).expand(shape)

    def differentiable_loss(self, model, guide, *args, **kwargs) -> torch.Tensor:
        """A surrogate whose value is ``-ELBO`` (this draw's K-sample estimate, summed over
        data) and whose gradient is the RLOO estimate."""
        f, score = self.sample_elbos(model, guide, *args, **kwargs)
        signals = rloo_learning_signals(f)
        surrogate = (f + signals * (score - score.detach())).mean(0)
        return -surrogate.sum()

    def loss(self, model, guide, *args, **kwargs) -> float:
        """``-ELBO`` estimated from one K-sample draw, summed over data."""
        with torch.no_grad():
            f, _ = self.sample_elbos(model, guide, *args, **kwargs)
            loss = -torch_item(f.mean(0).sum())
        warn_if_nan(loss, "loss")
        return loss

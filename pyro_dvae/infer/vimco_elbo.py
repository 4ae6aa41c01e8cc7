"""VIMCO: a multi-sample score-function estimator of the importance-weighted bound."""

from __future__ import annotations

import math

import torch
from pyro.distributions.util import is_identically_zero
from pyro.infer import ELBO
from pyro.infer.enum import get_importance_trace
from pyro.infer.util import is_validation_enabled, torch_item
from pyro.util import check_if_enumerated, warn_if_nan

from ..errors import DVAEInputError
from .surrogate_loss import SurrogateLossMixin
from .util import DataPlates, find_data_plates, sample_sites

__all__ = ["VIMCOELBO", "vimco_learning_signals"]

_PARTICLE_PLATE = "num_particles_vectorized"  # the particle plate of Pyro's ELBO


def vimco_learning_signals(log_weights: torch.Tensor) -> torch.Tensor:
    """Per-sample learning signals ``L - L_{-k}`` of VIMCO, from log-weights ``[K, ...]``.

    ``L = log mean_j w_j``; ``L_{-k}`` is the same with ``w_k`` replaced by the geometric mean
    of the other weights, ``exp(mean_{j != k} log w_j)`` (Mnih & Rezende 2016, eq. 10). The
    result is detached.

    Example:
        >>> vimco_learning_signals(torch.zeros(4, 2))  # equal weights: no signal
        tensor([[0., 0.],
                [0., 0.],
                [0., 0.],
                [0., 0.]])
    """
    lw = log_weights.detach()
    k = lw.shape[0]
    if k < 2:
        raise DVAEInputError("VIMCO needs at least 2 particles for its leave-one-out baselines")
    bound = lw.logsumexp(0)
    loo_mean = (lw.sum(0, keepdim=True) - lw) / (k - 1)  # [K, ...]: mean of the others
    eye = torch.eye(k, dtype=torch.bool, device=lw.device).reshape((k, k) + (1,) * (lw.dim() - 1))
    # row k: the K log-weights with entry k replaced by the leave-one-out geometric mean
    replaced = torch.where(eye, loo_mean.unsqueeze(1), lw.unsqueeze(0))
    return bound - replaced.logsumexp(1)


class VIMCOELBO(SurrogateLossMixin, ELBO):
    """VIMCO gradient of the K-sample importance-weighted bound (Mnih & Rezende 2016,
    "Variational Inference for Monte Carlo Objectives", arXiv:1602.06725).

    Objective, per datum: ``L_K = E[log (1/K) sum_k p(x, z_k) / q(z_k|x)]`` with
    ``z_1..z_K ~ q(z|x)`` (the IWAE bound, Burda et al. 2016, arXiv:1509.00519). Its gradient is
    estimated without reparameterization:
    ``sum_k (L - L_{-k}) grad log q(z_k|x) + sum_k w~_k grad log w_k``, with the leave-one-out
    baselines ``L_{-k}`` of :func:`vimco_learning_signals` and normalized weights ``w~_k``; it is
    unbiased for ``grad L_K``. Each datum gets its own learning signals: the K particles are a
    vectorized plate left of the model's plates (Pyro's ``vectorize_particles``), and log-weights
    are summed per datum over the data plates (:func:`~pyro_dvae.infer.util.find_data_plates`).
    Reparameterized guide sites, if any, get the IWAE pathwise gradient.

    Requirements: every latent lies inside the data plates (local latents), plates are not
    subsampled, and the model broadcasts over the leading particle dim.

    :param num_particles: K >= 2.
    :param max_plate_nesting: as for Pyro's ELBOs (guessed if omitted).

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
        >>> loss = VIMCOELBO(num_particles=5).loss_and_grads(model, guide, torch.zeros(3))
    """

    def __init__(self, num_particles: int = 5, max_plate_nesting: float = float("inf")) -> None:
        if int(num_particles) < 2:
            raise DVAEInputError(
                f"VIMCO needs num_particles >= 2 (leave-one-out baselines), got {num_particles}"
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

    def _data_plates(self, model_trace, guide_trace) -> DataPlates:
        found = find_data_plates(model_trace)
        keep = [(d, s) for d, s in zip(found.dims, found.sizes) if d != -self.max_plate_nesting]
        for site in sample_sites(guide_trace):
            frames = {(f.dim, f.size) for f in site["cond_indep_stack"] if f.vectorized}
            if not set(keep) <= frames:
                raise DVAEInputError(
                    f"latent site '{site['name']}' lies outside the data plates; VIMCO's "
                    "per-datum bound needs every latent inside them (local latents)"
                )
        return DataPlates(
            dims=tuple(d for d, _ in keep),
            sizes=tuple(s for _, s in keep),
            max_plate_nesting=self.max_plate_nesting - 1,
        )

    def log_weights(self, model, guide, *args, **kwargs) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-particle, per-datum ``log p(x, z_k) - log q(z_k|x)`` and the guide's score terms
        ``log q(z_k|x)`` of its non-reparameterized sites, both ``[K, num_data]``."""
        model_trace, guide_trace = next(self._get_traces(model, guide, args, kwargs))
        plates = self._data_plates(model_trace, guide_trace)
        log_w = 0.0
        score = 0.0
        for site in sample_sites(model_trace):
            log_w = log_w + plates.reduce(site["log_prob"], lead=1)
        for site in sample_sites(guide_trace):
            log_w = log_w - plates.reduce(site["log_prob"], lead=1)
            term = site["score_parts"].score_function
            if not is_identically_zero(term):
                score = score + plates.reduce(term, lead=1)
        k = self.num_particles
        log_w = torch.as_tensor(log_w).expand(k, plates.num_data)
        score = torch.as_tensor(score, dtype=log_w.dtype).expand(k, plates.num_data)
        return log_w, score

    def differentiable_loss(self, model, guide, *args, **kwargs) -> torch.Tensor:
        """A surrogate loss whose value is ``-sum_n L_K(x_n)`` (this draw's estimate) and whose
        gradient is the VIMCO estimate."""
        log_w, score = self.log_weights(model, guide, *args, **kwargs)
        bound = log_w.logsumexp(0) - math.log(self.num_particles)
        signals = vimco_learning_signals(log_w)
        surrogate = bound + (signals * (score - score.detach())).sum(0)
        return -surrogate.sum()

    def loss(self, model, guide, *args, **kwargs) -> float:
        """The negative importance-weighted bound, summed over data (one K-sample draw)."""
        with torch.no_grad():
            log_w, _ = self.log_weights(model, guide, *args, **kwargs)
            loss = -torch_item((log_w.logsumexp(0) - math.log(self.num_particles)).sum())
        warn_if_nan(loss, "loss")
        return loss

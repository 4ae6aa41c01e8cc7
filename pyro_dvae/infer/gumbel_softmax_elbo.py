"""Gumbel-softmax (Concrete) ELBOs, with an explicit choice of KL term."""

from __future__ import annotations

import math

import torch
from pyro.infer import Trace_ELBO
from pyro.infer.util import torch_item
from pyro.util import warn_if_nan
from torch.distributions import kl_divergence

from ..errors import DVAEInputError
from .relax import RelaxMessenger, discrete_counterpart, relax
from .registry import KL_MODES
from .util import sampled_prior_kl

__all__ = ["GumbelSoftmaxELBO", "KL_CHOICES"]

#: the KL terms (``analytic``, the default, and ``relaxed``)
KL_CHOICES = KL_MODES


def _scale_and_mask(x: torch.Tensor, site: dict) -> torch.Tensor:
    if site["mask"] is not None:
        x = torch.where(site["mask"], x, torch.zeros_like(x))
    return x * site["scale"]


class GumbelSoftmaxELBO(Trace_ELBO):
    """ELBO for a model and guide with discrete latents, trained through their Gumbel-softmax
    relaxation. The model and guide declare ``OneHotCategorical`` / ``Bernoulli`` latents; this
    ELBO relaxes them (see :func:`~pyro_dvae.infer.relax`) at ``temperature``.

    ``kl="analytic"`` (the default; Jang et al. 2017, arXiv:1611.01144): reconstruction
    E_q[log p(x|y)] from the relaxed sample ``y`` minus the exact KL(q(z|x) || p(z)) between the
    *discrete* distributions. Not a bound on the relaxed model, but matches the discrete ELBO as
    tau -> 0.

    ``kl="relaxed"`` (Maddison et al. 2017, arXiv:1611.00712, App. C): the model's discrete prior
    is replaced by its Concrete counterpart at the same temperature, so the objective
    E_q[log p(x|y) + log p_tau(y) - log q_tau(y|x)] is a true lower bound on the relaxed model's
    log-likelihood; densities are evaluated in log space.

    ``straight_through=True``: forward samples are exactly one-hot/binary (Gumbel-max), gradients
    are the relaxed ones (Jang et al. 2017, Sec. 2.2). Requires ``kl="analytic"``: a hard sample
    has zero density under the relaxed prior.

    ``kl_weight`` multiplies the KL term (the latent sites' log p(z) - log q(z) for
    ``kl="relaxed"``): 1 is the ELBO; raising it from 0 to 1 over the first steps is KL warm-up
    (Sønderby et al. 2016, arXiv:1602.02282; Bowman et al. 2016, arXiv:1511.06349), which keeps
    units of q(z|x) from collapsing onto the prior before the decoder uses them. The objective
    is a bound only at ``kl_weight=1``.

    :param temperature: Concrete temperature, settable between steps (``elbo.temperature = t``).
    :param kl_weight: weight of the KL term, settable between steps (``elbo.kl_weight = w``).

    Example:
        >>> import pyro, pyro.distributions as dist
        >>> def model(x):
        ...     with pyro.plate("data", len(x)):
        ...         p = dist.OneHotCategorical(logits=torch.zeros(2, 3)).to_event(1)
        ...         z = pyro.sample("z", p)
        ...         pyro.sample("x", dist.Normal(z.sum((-1, -2)), 1.0), obs=x)
        >>> def guide(x):
        ...     logits = pyro.param("q", torch.zeros(len(x), 2, 3))
        ...     with pyro.plate("data", len(x)):
        ...         pyro.sample("z", dist.OneHotCategorical(logits=logits).to_event(1))
        >>> elbo = GumbelSoftmaxELBO(temperature=0.5, kl="analytic")
        >>> loss = elbo.loss(model, guide, torch.zeros(4))
    """

    def __init__(
        self,
        temperature: float = 1.0,
        kl: str = "analytic",
        straight_through: bool = False,
        kl_weight: float = 1.0,
        **kwargs,
    ) -> None:
        if kl not in KL_CHOICES:
            raise DVAEInputError(f"kl must be one of {KL_CHOICES}, got {kl!r}")
        if straight_through and kl == "relaxed":
            raise DVAEInputError(
                "straight-through Gumbel-softmax needs kl='analytic': a hard one-hot sample has "
                "zero density under the relaxed (Concrete) prior; use kl='analytic'"
            )
        super().__init__(**kwargs)
        self.kl = kl
        self.straight_through = straight_through
        self.temperature = temperature
        self.kl_weight = kl_weight

    @property
    def temperature(self) -> float:
        return self._temperature

    @temperature.setter
    def temperature(self, value: float) -> None:
        value = float(value)
        if not math.isfinite(value) or value <= 0:
            raise DVAEInputError(f"temperature must be > 0, got {value}; pass e.g. 1.0 or 0.5")
        self._temperature = value

    @property
    def kl_weight(self) -> float:
        return self._kl_weight

    @kl_weight.setter
    def kl_weight(self, value: float) -> None:
        value = float(value)
        if not math.isfinite(value) or value < 0:
            raise DVAEInputError(f"kl_weight must be >= 0, got {value}; pass e.g. 1.0 (the ELBO)")
        self._kl_weight = value

    def _relax_handler(self) -> RelaxMessenger:
        """The handler that swaps discrete latent sites for their relaxed counterparts
        (subclasses with another estimator of the same sites return theirs)."""
        return relax(temperature=self.temperature, straight_through=self.straight_through)

    def _get_trace(self, model, guide, args, kwargs):
        handler = self._relax_handler()
        return super()._get_trace(handler(model), handler(guide), args, kwargs)

    def _differentiable_loss_particle(self, model_trace, guide_trace):
        if self.kl == "relaxed" and self.kl_weight == 1.0:
            return super()._differentiable_loss_particle(model_trace, guide_trace)
        reconstruction, kl = 0.0, 0.0
        for name, site in model_trace.nodes.items():
            if site["type"] != "sample":
                continue
            if site["is_observed"]:
                reconstruction = reconstruction + site["log_prob_sum"]
                continue
            guide_site = guide_trace.nodes[name]
            if self.kl == "analytic":
                q = discrete_counterpart(guide_site["fn"])
                if q is not None:
                    p = discrete_counterpart(site["fn"])
                    if p is not None:
                        site_kl = kl_divergence(q, p)
                    else:  # an autoregressive prior: KL estimated at the guide's sample
                        site_kl = sampled_prior_kl(q, site["fn"], guide_site["value"])
                    if site_kl is not None:
                        kl = kl + _scale_and_mask(site_kl, guide_site).sum()
                        continue
            if not guide_site["fn"].has_rsample:
                raise DVAEInputError(
                    f"latent site '{name}' is neither discrete nor reparameterizable; "
                    "GumbelSoftmaxELBO handles discrete and reparameterized latents"
                )
            kl = kl + guide_site["log_prob_sum"] - site["log_prob_sum"]
        # observed guide sites (``pyro.factor`` in the guide) count as in Trace_ELBO: as log q
        guide_factors = sum(
            site["log_prob_sum"]
            for site in guide_trace.nodes.values()
            if site["type"] == "sample" and site["is_observed"]
        )
        elbo = reconstruction - self.kl_weight * kl - guide_factors
        return -torch_item(elbo), -elbo

    def loss(self, model, guide, *args, **kwargs) -> float:
        if self.kl == "relaxed" and self.kl_weight == 1.0:
            return super().loss(model, guide, *args, **kwargs)
        loss = 0.0
        with torch.no_grad():
            for model_trace, guide_trace in self._get_traces(model, guide, args, kwargs):
                loss += self._differentiable_loss_particle(model_trace, guide_trace)[0]
        loss = loss / self.num_particles
        warn_if_nan(loss, "loss")
        return loss

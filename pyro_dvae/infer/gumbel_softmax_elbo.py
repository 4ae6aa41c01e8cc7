"""Gumbel-softmax (Concrete) ELBOs, with an explicit choice of KL term."""

from __future__ import annotations

import math

import pyro.poutine as poutine
import torch
from pyro.distributions import Independent
from pyro.distributions.score_parts import ScoreParts
from pyro.distributions.torch_distribution import ExpandedDistribution, MaskedDistribution
from pyro.distributions.util import broadcast_shape, scale_and_mask, sum_rightmost
from pyro.infer import Trace_ELBO
from pyro.infer.util import is_validation_enabled, torch_item
from pyro.poutine.util import prune_subsample_sites
from pyro.util import check_if_enumerated, check_model_guide_match, check_site_shape, warn_if_nan
from torch.distributions import Distribution

from ..distributions.concrete import base_value_of
from ..errors import DVAEInputError
from .registry import KL_MODES
from .relax import Relaxation, RelaxMessenger, discrete_counterpart
from .util import site_kl

__all__ = ["GumbelSoftmaxELBO", "KL_CHOICES", "log_prob_from_base", "score_relaxed_sites"]

#: the KL terms (``analytic``, the default, and ``relaxed``)
KL_CHOICES = KL_MODES


def log_prob_from_base(fn: Distribution, value: torch.Tensor) -> torch.Tensor | None:
    """``fn.log_prob(value)`` computed from the exact base-space sample that a Concrete
    ``rsample`` attached to ``value`` (:func:`~pyro_dvae.distributions.base_value_of`), through any
    nesting of ``Independent``, ``ExpandedDistribution`` and ``MaskedDistribution``; ``None``
    where ``fn``'s leaf is no Concrete distribution or ``value`` carries no base sample.

    Example:
        >>> from pyro_dvae.distributions import ConcreteOneHotCategorical
        >>> d = ConcreteOneHotCategorical(0.1, logits=torch.randn(3, 50)).to_event(1)
        >>> y = d.rsample()
        >>> bool(torch.isfinite(log_prob_from_base(d, y))), log_prob_from_base(d, y.clone())
        (True, None)
    """
    if isinstance(fn, Independent):
        lp = log_prob_from_base(fn.base_dist, value)
        return None if lp is None else sum_rightmost(lp, fn.reinterpreted_batch_ndims)
    if isinstance(fn, ExpandedDistribution):
        lp = log_prob_from_base(fn.base_dist, value)
        if lp is None:
            return None
        return lp.expand(broadcast_shape(fn.batch_shape, value.shape[: value.dim() - fn.event_dim]))
    if isinstance(fn, MaskedDistribution):
        lp = log_prob_from_base(fn.base_dist, value)
        if lp is None or fn._mask is True:
            return lp
        if fn._mask is False:
            return torch.zeros_like(lp)
        return scale_and_mask(lp, mask=fn._mask)
    base = base_value_of(value)
    if base is None or not hasattr(fn, "log_prob_from_base"):
        return None
    return fn.log_prob_from_base(base)


def score_relaxed_sites(model_trace, guide_trace) -> None:
    """Fill in the log-densities of the relaxed latent sites of a model/guide trace pair from the
    guide's exact base-space samples, before ``compute_log_prob`` / ``compute_score_parts``
    (which then leave them as they are).

    A float32 Concrete sample at low temperature has entries that underflowed to 0 (or rounded to
    1), where its value no longer determines its density and ``log_prob`` raises; the log-space
    sample that ``rsample`` drew is exact, and these sites are scored from it. Sites whose value
    carries no base sample are left to ``log_prob``.
    """
    for trace, is_guide in ((model_trace, False), (guide_trace, True)):
        for site in trace.nodes.values():
            if site["type"] != "sample" or site["is_observed"]:
                continue
            lp = log_prob_from_base(site["fn"], site["value"])
            if lp is None:
                continue
            site["unscaled_log_prob"] = lp
            if is_guide:
                parts = ScoreParts(log_prob=lp, score_function=0, entropy_term=lp)
                if not site["fn"].has_rsample:
                    parts = ScoreParts(log_prob=lp, score_function=lp, entropy_term=0)
                parts = parts.scale_and_mask(site["scale"], site["mask"])
                site["score_parts"] = parts
                lp = parts.log_prob
            else:
                lp = scale_and_mask(lp, site["scale"], site["mask"])
            site["log_prob"] = lp
            site["log_prob_sum"] = lp.sum()


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

    def _relaxation(self) -> Relaxation:
        """How discrete latent sites are relaxed (subclasses with another estimator of the same
        sites return theirs: :meth:`Relaxation.gumbel_rao`, :meth:`Relaxation.reinmax`)."""
        if self.straight_through:
            return Relaxation.straight_through(self.temperature)
        return Relaxation.concrete(self.temperature)

    def _relax_handler(self) -> RelaxMessenger:
        """The handler that swaps discrete latent sites for their relaxed counterparts."""
        return RelaxMessenger(self._relaxation())

    def _get_trace(self, model, guide, args, kwargs):
        handler = self._relax_handler()
        model, guide = handler(model), handler(guide)
        if isinstance(poutine.unwrap(guide), poutine.messenger.Messenger):
            return super()._get_trace(model, guide, args, kwargs)  # a GuideMessenger: Pyro's path
        # Pyro's get_importance_trace("flat", ...), with the relaxed sites scored from their
        # exact log-space samples (score_relaxed_sites) before the remaining sites' log_prob
        guide_trace = poutine.trace(guide).get_trace(*args, **kwargs)
        model_trace = poutine.trace(poutine.replay(model, trace=guide_trace)).get_trace(
            *args, **kwargs
        )
        if is_validation_enabled():
            check_model_guide_match(model_trace, guide_trace, self.max_plate_nesting)
        guide_trace = prune_subsample_sites(guide_trace)
        model_trace = prune_subsample_sites(model_trace)
        score_relaxed_sites(model_trace, guide_trace)
        model_trace.compute_log_prob()
        guide_trace.compute_score_parts()
        if is_validation_enabled():
            for trace in (model_trace, guide_trace):
                for site in trace.nodes.values():
                    if site["type"] == "sample":
                        check_site_shape(site, self.max_plate_nesting)
            check_if_enumerated(guide_trace)
        return model_trace, guide_trace

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
                    p = discrete_counterpart(site["fn"])  # None: a prior that is not relaxed
                    kl_site = site_kl(q, site["fn"] if p is None else p, guide_site["value"])
                    if kl_site is not None:
                        kl_site = scale_and_mask(kl_site, guide_site["scale"], guide_site["mask"])
                        kl = kl + kl_site.sum()
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

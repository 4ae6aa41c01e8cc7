"""Training by the exact marginal likelihood log p(x), with z summed out of the model."""

from __future__ import annotations

import torch
from pyro.infer import ELBO
from pyro.util import warn_if_nan

from .enumeration import DEFAULT_MAX_CONFIGURATIONS, LatentEnumeration

__all__ = ["ExactMarginalELBO"]


def _kl_to_posterior(log_q: torch.Tensor, log_post: torch.Tensor) -> torch.Tensor:
    """KL(q || p(z|x)) summed over data, from per-configuration log q and (detached) log p(z|x)
    of one chunk of configurations (the chunks' terms add up to the exact KL)."""
    return (log_q.exp() * (log_q - log_post)).sum()


class ExactMarginalELBO(ELBO):
    """Objective log p(x) = log sum_z p(x, z), exact, with no guide sampling.

    This is the ELBO at its optimum: with q(z|x) = p(z|x) the bound is tight. The model's
    parameters get the exact gradient of log p(x). If ``train_guide`` (default) and the guide has
    latent sites, the guide's parameters are fitted at the same time by minimizing the exact
    KL(q(z|x) || p(z|x)) (model held fixed for that term), so that the guide can serve for
    importance-weighted evaluation; the guide never affects the model's gradient (nor do its
    ``pyro.factor`` statements, which are not part of q(z|x) and so of neither term).

    Memory is bounded: a first pass (no gradient) computes log p(x) chunk by chunk, a second pass
    back-propagates each chunk's share, weighted by its exact posterior mass
    p(z|x) = exp(log p(x, z) - log p(x)). With a single chunk, one pass is used.

    References: the identity log p(x) = ELBO(q) + KL(q(z|x) || p(z|x)) that makes this the
    ELBO's optimum (Kingma & Welling, Auto-Encoding Variational Bayes, arXiv:1312.6114); exact
    enumeration of discrete latents in Pyro (Obermeyer et al., Tensor Variable Elimination for
    Plated Factor Graphs, ICML 2019, arXiv:1902.03210).

    Example:
        >>> import pyro, pyro.distributions as dist
        >>> def model(x):
        ...     loc = pyro.param("loc", torch.tensor(1.0))
        ...     with pyro.plate("data", len(x)):
        ...         z = pyro.sample("z", dist.Bernoulli(0.5))
        ...         pyro.sample("x", dist.Normal(loc * z, 1.0), obs=x)
        >>> loss = ExactMarginalELBO().loss(model, lambda x: None, torch.zeros(3))
    """

    def __init__(
        self,
        max_configurations: int = DEFAULT_MAX_CONFIGURATIONS,
        chunk_size: int | None = None,
        train_guide: bool = True,
    ) -> None:
        super().__init__(num_particles=1)
        self.max_configurations = max_configurations
        self.chunk_size = chunk_size
        self.train_guide = train_guide

    def _space(self, model, args, kwargs) -> LatentEnumeration:
        return LatentEnumeration(model, args, kwargs, self.max_configurations)

    def _guide_log_prob(self, space, guide, values):
        return space.log_guide(guide, values) if self.train_guide else None

    def log_likelihood(self, model, *args, **kwargs) -> torch.Tensor:
        """Exact log p(x) per datum (no gradient)."""
        space = self._space(model, args, kwargs)
        total = None
        with torch.no_grad():
            for values in space.chunks(self.chunk_size):
                lse = space.log_joint(values).logsumexp(0)
                total = lse if total is None else torch.logaddexp(total, lse)
        return total

    def _get_trace(self, model, guide, args, kwargs):
        raise NotImplementedError(
            f"{type(self).__name__} sums over configurations; it draws no traces"
        )

    def loss(self, model, guide, *args, **kwargs) -> float:
        loss = -float(self.log_likelihood(model, *args, **kwargs).sum())
        warn_if_nan(loss, "loss")
        return loss

    def differentiable_loss(self, model, guide, *args, **kwargs) -> torch.Tensor:
        """-sum log p(x) as a differentiable tensor (holds every chunk's graph).

        With ``train_guide`` and a guide that samples the latents, the gradient of the exact
        KL(q(z|x) || p(z|x)) (posterior held fixed) is added, as in :meth:`loss_and_grads`; the
        value stays -sum log p(x).
        """
        space = self._space(model, args, kwargs)
        values = list(space.chunks(self.chunk_size))
        log_joint = torch.cat([space.log_joint(v) for v in values])
        log_px = log_joint.logsumexp(0)
        objective = -log_px.sum()
        log_qs = [self._guide_log_prob(space, guide, v) for v in values]
        if log_qs and all(q is not None for q in log_qs):
            log_q = torch.cat(log_qs)
            log_post = (log_joint - log_px).detach()
            kl = _kl_to_posterior(log_q, log_post)
            objective = objective + (kl - kl.detach())
        return objective

    def loss_and_grads(self, model, guide, *args, **kwargs) -> float:
        space = self._space(model, args, kwargs)
        chunk_size = self.chunk_size or space.default_chunk_size()
        if chunk_size >= space.num_configurations:
            (values,) = space.chunks(chunk_size)
            log_joint = space.log_joint(values)
            log_px = log_joint.logsumexp(0)
            objective = -log_px.sum()
            log_q = self._guide_log_prob(space, guide, values)
            if log_q is not None:
                log_post = (log_joint - log_px).detach()
                objective = objective + _kl_to_posterior(log_q, log_post)
            if objective.requires_grad:
                objective.backward()
            loss = -float(log_px.detach().sum())
        else:
            log_px = self.log_likelihood(model, *args, **kwargs)
            for values in space.chunks(chunk_size):
                log_joint = space.log_joint(values)
                weight = (log_joint.detach() - log_px).exp()
                surrogate = -(weight * log_joint).sum()
                log_q = self._guide_log_prob(space, guide, values)
                if log_q is not None:
                    log_post = log_joint.detach() - log_px
                    surrogate = surrogate + _kl_to_posterior(log_q, log_post)
                if surrogate.requires_grad:
                    surrogate.backward()
            loss = -float(log_px.detach().sum())
        warn_if_nan(loss, "loss")
        return loss

"""Training by the exact marginal likelihood, every discrete site summed out in the model."""

from __future__ import annotations

from collections.abc import Callable

import pyro.poutine as poutine
import torch
from pyro.util import warn_if_nan

from .exact_sum_elbo import ExactSumELBO, LossTerm
from .structured_enumeration import (
    DEFAULT_MAX_CONFIGURATIONS,
    StructuredEnumeration,
    combine_blocks,
)

__all__ = ["ExactMarginalELBO"]


def _detached(model: Callable) -> Callable:
    """The model with its parameters held fixed (its densities carry no gradient)."""

    def detached_model(*args, **kwargs):
        with torch.no_grad():
            return model(*args, **kwargs)

    return detached_model


def _latents_only(guide: Callable) -> Callable:
    """The guide without its ``pyro.factor``/observed sites: q(z|x) alone."""
    return poutine.block(guide, hide_fn=lambda msg: msg["type"] == "sample" and msg["is_observed"])


class ExactMarginalELBO(ExactSumELBO):
    """Objective log p(x) = log sum_y p(x, y) with every discrete site y summed in the model.

    On a purely discrete model this is exact: the ELBO at its optimum, q(y|x) = p(y|x), with no
    sampling. The model's parameters get the exact gradient of log p(x). If ``train_guide``
    (default) and the guide samples the discrete sites, the guide is fitted at the same time by
    minimizing the exact KL(q(y|x) || p(y|x)) (model held fixed for that term), so that it can
    serve for importance-weighted evaluation; the guide never affects the model's gradient
    (nor do its ``pyro.factor`` statements, which are not part of q and so of neither term).

    On a mixed model (a Gaussian-mixture VAE: cluster y, z | y Normal, x | z) the guide holds
    only the continuous sites, q(z|x), sampled by ``rsample``, and the objective is
    E_q(z|x)[log sum_y p(x, y, z) - log q(z|x)], the discrete sites summed inside the log as
    in Pyro's model-side enumeration (equal to ``TraceEnum_ELBO`` with the model's discrete
    sites enumerated).

    The sum follows the model's structure (:class:`~pyro_dvae.infer.StructuredEnumeration`:
    plate-local and ``pyro.markov`` sites by variable elimination, coupled sites in blocks).
    Memory is bounded: with several blocks, a first pass (no gradient) computes the per-datum
    sum, and a second back-propagates each block's share weighted by its exact posterior mass;
    the continuous draw is shared by every block. Subsampled plates are scaled as in Pyro.

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
        super().__init__(1, max_configurations, chunk_size)
        self.train_guide = train_guide

    def _spaces(self, model, guide, args, kwargs):
        """The model-side sum, and (if the guide is trained by KL) the guide-side one."""
        # its guide draw is the caller's (replayed in every block): no single pass
        space = self._space(model, guide, args, kwargs, guide_side=False, single_pass=False)
        kl_space = None
        if not space.continuous:
            if self.train_guide and space.guide_has_discrete:
                kl_space = self._space(
                    _detached(model), _latents_only(guide), args, kwargs, guide_side=True
                )
            space.guide = None  # a discrete guide plays no part in log p(x)
        return space, kl_space

    @staticmethod
    def _guide_draw(space: StructuredEnumeration):
        if space.guide is None:
            return None
        return poutine.trace(space.guide).get_trace(*space.args, **space.kwargs)

    def _kl_terms(self, kl_space: StructuredEnumeration | None):
        """-ELBO of the guide against the fixed model per block: its gradient is that of
        KL(q || p(y|x)) with respect to the guide."""
        if kl_space is not None:
            yield from (-elbo for elbo in self._dice_elbos(kl_space))

    def log_likelihood(self, model, *args, **kwargs) -> torch.Tensor:
        """Exact log p(x) per datum (no gradient; discrete models)."""
        return self._space(model, None, args, kwargs, guide_side=False).log_marginal()

    def loss(self, model, guide, *args, **kwargs) -> float:
        space, _ = self._spaces(model, guide, args, kwargs)
        with torch.no_grad():
            draw = self._guide_draw(space)
            loss = -float(combine_blocks(list(space.block_log_marginals(draw))).sum())
        warn_if_nan(loss, "loss")
        return loss

    def differentiable_loss(self, model, guide, *args, **kwargs) -> torch.Tensor:
        """The negative objective as a differentiable tensor (holds every block's graph).

        With ``train_guide`` and a discrete guide, the gradient of the exact KL(q || p(y|x))
        (model held fixed) is added, as in :meth:`loss_and_grads`; the value is unchanged.
        """
        space, kl_space = self._spaces(model, guide, args, kwargs)
        draw = self._guide_draw(space)
        objective = -combine_blocks(list(space.block_log_marginals(draw))).sum()
        for kl in self._kl_terms(kl_space):
            objective = objective + (kl - kl.detach())
        return objective

    def _loss_terms(self, model, guide, args, kwargs):
        """-log p(x) and its gradient (with several blocks: each block's share, weighted by its
        exact posterior mass), then the guide's KL terms (gradient only)."""
        space, kl_space = self._spaces(model, guide, args, kwargs)
        draw = self._guide_draw(space)
        if space.num_blocks == 1:
            loss = -combine_blocks(list(space.block_log_marginals(draw))).sum()
            yield LossTerm(loss, loss)
        else:
            yield from self._weighted_block_terms(space, draw)
        for kl in self._kl_terms(kl_space):
            yield LossTerm(0.0, kl)

    @staticmethod
    def _weighted_block_terms(space: StructuredEnumeration, draw):
        """-log p(x) summed over the blocks without gradient, then each block's surrogate:
        d log sum_b exp(V_b) = sum_b w_b dV_b (V_b a block's value per datum, w_b its mass)."""
        with torch.no_grad():
            results = list(space.block_log_marginals(draw))
            total = combine_blocks(results)
        yield LossTerm(-total.sum())
        _, scale, rest0 = results[0]
        log_sum = (total - rest0) / scale  # per datum, over every block
        for lp, _, rest in space.block_log_marginals(draw):
            value = scale * lp + rest
            weight = ((value.detach() - rest0) / scale - log_sum).exp()
            yield LossTerm(0.0, -(weight * value).sum(), retain_graph=True)

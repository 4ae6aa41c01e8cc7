"""The ELBO with its expectation over the guide's discrete sites summed exactly."""

from __future__ import annotations

import torch

from ..errors import DVAEInputError
from .exact_sum_elbo import ExactSumELBO, LossTerm
from .structured_enumeration import StructuredEnumeration

__all__ = ["EnumeratedELBO"]


class EnumeratedELBO(ExactSumELBO):
    """ELBO = E_q[log p(x, z) - log q(z|x)] with every discrete guide site summed exactly.

    The user writes model and guide in plain Pyro syntax; nothing needs ``config_enumerate``:

    - every discrete guide site is summed with its weight q (no sampling, so no variance from
      it); a site with several units (``.to_event``: a VAE's N groups of K classes) is summed
      over its K^N joint configurations, walked in memory-bounded blocks whose contributions
      add up (peak memory follows the block size, ``chunk_size``, not K^N);
    - every continuous guide site is sampled (reparameterized) once per enumerated
      configuration of the discrete sites it depends on, e.g. q(z | x, y) of a semi-supervised
      M2 model, ``num_particles`` times;
    - a discrete model site with no guide site is summed inside the log (model-side
      marginalization, e.g. a mixture VAE's cluster y with a guide q(z | x) only);
    - plate-local and ``pyro.markov`` sites are summed by variable elimination, and subsampled
      plates are scaled, both as in Pyro's ``TraceEnum_ELBO``.

    Each block's value is Pyro's own ``TraceEnum_ELBO`` computation (tensor variable
    elimination and the Dice expectation) on the block's enumerated traces, so loss and
    gradients equal ``TraceEnum_ELBO`` with the guide's discrete sites enumerated, wherever
    Pyro can enumerate the sites. A ``pyro.factor`` in the guide counts as part of log q, as in
    Pyro's ELBOs; a classification bonus belongs in the model.

    Reference: Obermeyer et al., Tensor Variable Elimination for Plated Factor Graphs, ICML 2019,
    arXiv:1902.03210 (exact enumeration in Pyro).

    :param num_particles: draws of the continuous sites per step (averaged).
    :param max_configurations: refuse coupled discrete sites with more joint configurations.
    :param chunk_size: configurations per block (default: chosen from a memory budget).

    Example:
        >>> import pyro, pyro.distributions as dist
        >>> def model(x):
        ...     with pyro.plate("data", len(x)):
        ...         z = pyro.sample("z", dist.Bernoulli(0.5 * torch.ones(3)).to_event(1))
        ...         pyro.sample("x", dist.Normal(z.sum(-1), 1.0), obs=x)
        >>> def guide(x):
        ...     p = pyro.param("p", 0.5 * torch.ones(3))
        ...     with pyro.plate("data", len(x)):
        ...         pyro.sample("z", dist.Bernoulli(p).to_event(1))
        >>> loss = EnumeratedELBO().loss(model, guide, torch.zeros(2))
    """

    def _guide_side(self, model, guide, args, kwargs, single_pass=True) -> StructuredEnumeration:
        return self._space(model, guide, args, kwargs, guide_side=True, single_pass=single_pass)

    def _loss_terms(self, model, guide, args, kwargs):
        """Each block's (and particle's) share of -ELBO, a differentiable scalar."""
        for elbo in self._dice_elbos(self._guide_side(model, guide, args, kwargs)):
            share = -(elbo / self.num_particles)
            yield LossTerm(share, share)

    def per_datum(self, model, guide, *args, **kwargs) -> torch.Tensor:
        """The ELBO of each datum (elements of the outermost plate holding every site),
        ``[num_data]``, averaged over ``num_particles`` (no gradient returned).

        Computed as the gradient of the total ELBO with respect to a per-datum weight (the
        ELBO is linear in it), so it is exactly the per-datum split of :meth:`loss`.
        """
        # its traces are drawn under a per-datum scale: no single pass (drawn without it)
        space = self._guide_side(model, guide, args, kwargs, single_pass=False)
        if space.model_enumerated:
            raise DVAEInputError(
                "per_datum needs the discrete sites summed in the guide; sites "
                f"{sorted(space.model_enumerated)} have no guide site"
            )
        if not space.data_frames:
            return -torch.tensor([self.loss(model, guide, *args, **kwargs)])
        _, dim, size = space.data_frames[0]
        dtype = next(
            (a.dtype for a in args if torch.is_tensor(a) and a.is_floating_point()),
            torch.get_default_dtype(),
        )
        weight = torch.ones((size,) + (1,) * (-1 - dim), dtype=dtype, requires_grad=True)
        total = sum(self._dice_elbos(space, weight))
        (grad,) = torch.autograd.grad(total, weight)
        return grad.reshape(-1) / self.num_particles

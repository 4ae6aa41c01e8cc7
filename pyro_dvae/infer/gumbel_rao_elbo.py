"""The Gumbel-Rao ELBO: straight-through Gumbel-softmax with a Rao-Blackwellized gradient."""

from __future__ import annotations

from ..errors import DVAEInputError
from .gumbel_softmax_elbo import GumbelSoftmaxELBO
from .relax import Relaxation

__all__ = ["GumbelRaoELBO"]


class GumbelRaoELBO(GumbelSoftmaxELBO):
    """Gumbel-Rao estimator of the discrete ELBO (Paulus, Maddison, Krause 2021,
    arXiv:2010.04838).

    Latents are exact discrete samples D ~ q(z|x) (forward pass identical to straight-through
    Gumbel-softmax), and the backward pass replaces the straight-through gradient of the
    Gumbel-softmax sample by its conditional expectation given D, estimated with ``num_samples``
    conditional Gumbel perturbations (:class:`~pyro_dvae.distributions.GumbelRaoOneHotCategorical`,
    :class:`~pyro_dvae.distributions.GumbelRaoBernoulli`). The KL term is the exact discrete
    KL(q(z|x) || p(z)) (``kl="analytic"`` of :class:`GumbelSoftmaxELBO`); the objective's value
    is an unbiased estimate of the discrete ELBO, its gradient is biased (as straight-through)
    but with variance at most that of straight-through Gumbel-softmax at the same temperature.

    :param num_samples: conditional Gumbel samples per latent (K in the paper); ``1`` is
        straight-through Gumbel-softmax.
    :param temperature: Gumbel-softmax temperature of the backward pass.
    :param kwargs: passed to :class:`~pyro.infer.Trace_ELBO` (``num_particles``, ...).

    Example:
        >>> import pyro, pyro.distributions as dist
        >>> def model(x):
        ...     with pyro.plate("data", len(x)):
        ...         z = pyro.sample("z", dist.OneHotCategorical(logits=torch.zeros(3)))
        ...         pyro.sample("x", dist.Normal(z[..., 0], 1.0), obs=x)
        >>> def guide(x):
        ...     logits = pyro.param("q", torch.zeros(3))
        ...     with pyro.plate("data", len(x)):
        ...         pyro.sample("z", dist.OneHotCategorical(logits=logits))
        >>> loss = GumbelRaoELBO(num_samples=10, temperature=0.5).loss(model, guide, torch.zeros(4))
    """

    def __init__(self, num_samples: int = 10, temperature: float = 1.0, **kwargs) -> None:
        if int(num_samples) < 1:
            raise DVAEInputError(f"num_samples must be >= 1, got {num_samples}")
        super().__init__(temperature=temperature, kl="analytic", straight_through=True, **kwargs)
        self.num_samples = int(num_samples)

    def _relaxation(self) -> Relaxation:
        return Relaxation.gumbel_rao(self.temperature, num_samples=self.num_samples)

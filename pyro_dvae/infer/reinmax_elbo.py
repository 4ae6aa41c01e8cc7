"""The ReinMax ELBO: exact discrete samples with a second-order straight-through gradient."""

from __future__ import annotations

from .gumbel_softmax_elbo import GumbelSoftmaxELBO
from .relax import Relaxation

__all__ = ["ReinMaxELBO"]


class ReinMaxELBO(GumbelSoftmaxELBO):
    """ReinMax estimator of the discrete ELBO (Liu et al. 2023, arXiv:2304.08612).

    Latents are exact discrete samples D ~ q(z|x), as for straight-through Gumbel-softmax, but
    the backward pass is ReinMax's (:func:`~pyro_dvae.distributions.reinmax_one_hot`): a
    second-order approximation of the gradient of E_q[f(D)] built from D, q's probabilities
    and ``softmax(logits / temperature)``, with no Gumbel noise. The KL term is the exact
    discrete KL(q(z|x) || p(z)); the objective's value is an unbiased estimate of the discrete
    ELBO and its gradient is biased (less than straight-through's: at ``temperature=1`` it is
    exact for decoders quadratic in z). The paper recommends temperatures >= 1.

    :param temperature: the temperature of ``softmax(logits / temperature)`` in the estimator.
    :param kwargs: passed to :class:`~pyro.infer.Trace_ELBO` (``num_particles``, ...).

    Example (one Bernoulli latent; the guide's logit gets a gradient through the hard sample):
        >>> import pyro, pyro.distributions as dist
        >>> def model(x):
        ...     with pyro.plate("data", len(x)):
        ...         z = pyro.sample("z", dist.Bernoulli(0.5))
        ...         pyro.sample("x", dist.Normal(2.0 * z, 1.0), obs=x)
        >>> def guide(x):
        ...     with pyro.plate("data", len(x)):
        ...         pyro.sample("z", dist.Bernoulli(logits=pyro.param("p", torch.tensor(0.0))))
        >>> loss = ReinMaxELBO().loss_and_grads(model, guide, torch.full((8,), 2.0))
        >>> bool(pyro.param("p").unconstrained().grad < 0)  # descent raises q(z = 1)
        True
    """

    def __init__(self, temperature: float = 1.0, **kwargs) -> None:
        super().__init__(temperature=temperature, kl="analytic", straight_through=True, **kwargs)

    def _relaxation(self) -> Relaxation:
        return Relaxation.reinmax(self.temperature)

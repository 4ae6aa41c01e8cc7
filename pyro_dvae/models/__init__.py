"""Ready-made discrete-latent models."""

from .discrete_vae import LIKELIHOODS, PRIORS, DiscreteVAE, mlp
from .semisupervised import SemiSupervisedVAE

__all__ = ["LIKELIHOODS", "PRIORS", "DiscreteVAE", "mlp", "SemiSupervisedVAE"]

"""Ready-made discrete-latent models."""

from .discrete_vae import LIKELIHOODS, PRIORS, DiscreteVAE, mlp

__all__ = ["LIKELIHOODS", "PRIORS", "DiscreteVAE", "mlp"]

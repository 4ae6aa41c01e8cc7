"""pyro_dvae: discrete-latent variational autoencoders on Pyro.

Relaxed (Gumbel-softmax / Concrete, straight-through) guides with an explicit KL choice, exact
memory-bounded enumeration (exact ELBO, exact log p(x), exact gradients), and evaluation.
"""

from .errors import DVAEInputError, LatentSpaceTooLargeError, NonFiniteLossError
from .latent import LatentSpec
from .models import DiscreteVAE

__version__ = "0.1.0"

__all__ = [
    "DVAEInputError",
    "DiscreteVAE",
    "LatentSpaceTooLargeError",
    "LatentSpec",
    "NonFiniteLossError",
    "__version__",
]

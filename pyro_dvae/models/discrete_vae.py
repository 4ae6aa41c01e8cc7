"""A ready-made VAE with categorical or Bernoulli latents and MLP encoder/decoder."""

from __future__ import annotations

from collections.abc import Sequence

import pyro
import pyro.distributions as dist
import torch
from torch import nn
from torch.distributions import kl_divergence

from ..distributions import (
    AutoregressiveBernoulli,
    AutoregressiveOneHotCategorical,
    Bernoulli,
    LinearBernoulliVector,
    OneHotCategorical,
)
from ..errors import DVAEInputError
from ..latent import LatentSpec

__all__ = ["DiscreteVAE", "LIKELIHOODS", "PRIORS", "mlp"]

LIKELIHOODS = ("bernoulli", "normal")
PRIORS = ("uniform", "learned", "autoregressive")


def mlp(in_dim: int, hidden: Sequence[int], out_dim: int, dropout: float = 0.0) -> nn.Sequential:
    """A ReLU multilayer perceptron ``in_dim -> hidden... -> out_dim``, with ``nn.Dropout(p)``
    after every hidden layer when ``dropout = p > 0`` (active in training mode only).

    Example:
        >>> mlp(4, (8,), 2)(torch.zeros(3, 4)).shape
        torch.Size([3, 2])
    """
    layers: list[nn.Module] = []
    width = in_dim
    for h in hidden:
        layers += [nn.Linear(width, int(h)), nn.ReLU(inplace=True)]
        if dropout > 0:
            layers.append(nn.Dropout(dropout))
        width = int(h)
    layers.append(nn.Linear(width, out_dim))
    return nn.Sequential(*layers)


class DiscreteVAE(nn.Module):
    """VAE with ``N x K`` one-hot categorical (or ``N`` Bernoulli) latents.

    ``model(x)`` declares p(z) p(x | z) and ``guide(x)`` declares q(z | x) as ordinary Pyro code
    with *discrete* distributions (site ``"z"`` in plate ``"data"``, observed site ``"x"``), so
    the same pair trains with every estimator: relaxed guides (:class:`GumbelSoftmaxELBO`),
    exact enumeration (:class:`EnumeratedELBO`, :class:`ExactMarginalELBO`), or plain Pyro ELBOs.
    The decoder broadcasts over leading dims, so enumerated or particle-batched z work.

    :param data_dim: features per datum.
    :param latent: a :class:`~pyro_dvae.LatentSpec` or a string like ``"4x8"`` or ``"20b"``.
    :param encoder_hidden: hidden widths of the encoder MLP.
    :param decoder_hidden: hidden widths of the decoder (default: the encoder's, mirrored).
    :param prior: ``"uniform"``, ``"learned"`` (prior logits are parameters) or
        ``"autoregressive"``: a learned
        :class:`~pyro_dvae.distributions.AutoregressiveBernoulli` (or
        :class:`~pyro_dvae.distributions.AutoregressiveOneHotCategorical`) prior, logits and a
        ``D x D`` weight over the ``D`` code coordinates, initialized to the uniform prior,
        that can model correlated codes; train it with a hard-sample estimator and
        ``kl="analytic"``.
    :param likelihood: ``"bernoulli"`` (binary data) or ``"normal"`` (learned per-feature scale).
    :param dropout: dropout probability after every hidden layer of the encoder and decoder, in
        training mode (``module.train()``, the default; ``eval()`` turns it off).
    :param encoder_noise: in training mode, the probability with which each binary pixel is
        flipped before the *encoder* sees it (the decoder still scores the clean ``x``): the
        denoising criterion of Im et al. 2017 (arXiv:1511.06406). Each ``q(z | x~)`` is a
        distribution over ``z``, so the objective stays a lower bound on ``log p(x)``; held-out
        evaluation (``eval()`` mode) encodes the clean ``x``.

    Example:
        >>> import pyro
        >>> from pyro.infer import SVI
        >>> from pyro_dvae.infer import GumbelSoftmaxELBO
        >>> vae = DiscreteVAE(64, "4x8", encoder_hidden=(32,))
        >>> svi = SVI(vae.model, vae.guide, pyro.optim.Adam({"lr": 1e-3}), GumbelSoftmaxELBO(0.5))
        >>> loss = svi.step(torch.bernoulli(torch.full((10, 64), 0.5)))
    """

    def __init__(
        self,
        data_dim: int,
        latent: LatentSpec | str,
        encoder_hidden: Sequence[int] = (256, 128),
        decoder_hidden: Sequence[int] | None = None,
        prior: str = "uniform",
        likelihood: str = "bernoulli",
        name: str = "discrete_vae",
        dropout: float = 0.0,
        encoder_noise: float = 0.0,
    ) -> None:
        super().__init__()
        if int(data_dim) < 1:
            raise DVAEInputError(f"data_dim must be >= 1, got {data_dim}")
        if prior not in PRIORS:
            raise DVAEInputError(f"prior must be one of {PRIORS}, got {prior!r}")
        if likelihood not in LIKELIHOODS:
            raise DVAEInputError(f"likelihood must be one of {LIKELIHOODS}, got {likelihood!r}")
        for what, p in (("dropout", dropout), ("encoder_noise", encoder_noise)):
            if not 0.0 <= float(p) < 1.0:
                raise DVAEInputError(f"{what} must be in [0, 1), got {p}")
        if encoder_noise > 0 and likelihood != "bernoulli":
            raise DVAEInputError(
                "encoder_noise flips binary pixels; it needs likelihood='bernoulli' (binary data)"
            )
        for h in tuple(encoder_hidden) + tuple(decoder_hidden or ()):
            if int(h) < 1:
                raise DVAEInputError(f"hidden layer widths must be >= 1, got {h}")
        self.latent = LatentSpec.parse(latent)
        self.data_dim = int(data_dim)
        self.prior_kind = prior
        self.likelihood_kind = likelihood
        self.name = name
        self.dropout = float(dropout)
        self.encoder_noise = float(encoder_noise)
        spec = self.latent
        self._logit_shape = (
            (spec.groups, spec.categories) if spec.kind == "categorical" else (spec.groups,)
        )
        if decoder_hidden is None:
            decoder_hidden = tuple(reversed(encoder_hidden))
        self.encoder = mlp(self.data_dim, encoder_hidden, spec.dim, self.dropout)
        self.decoder = mlp(spec.dim, decoder_hidden, self.data_dim, self.dropout)
        logits = torch.zeros(self._logit_shape)
        if prior == "uniform":
            self.register_buffer("prior_logits", logits)
        else:
            self.prior_logits = nn.Parameter(logits)
        if prior == "autoregressive":
            self.prior_weight = nn.Parameter(torch.zeros(spec.dim, spec.dim))
        if likelihood == "normal":
            self.log_scale = nn.Parameter(torch.zeros(self.data_dim))

    # -- distributions ---------------------------------------------------------------------
    def _latent_dist(self, logits: torch.Tensor) -> dist.TorchDistribution:
        if self.latent.kind == "categorical":
            return OneHotCategorical(logits=logits).to_event(1)
        return Bernoulli(logits=logits).to_event(1)

    def prior(self) -> dist.TorchDistribution:
        """p(z): ``OneHotCategorical(logits).to_event(1)`` over groups, ``Bernoulli``, or their
        autoregressive counterparts (``prior="autoregressive"``)."""
        if self.prior_kind == "autoregressive":
            cls = (
                AutoregressiveOneHotCategorical
                if self.latent.kind == "categorical"
                else AutoregressiveBernoulli
            )
            return cls(self.prior_logits, self.prior_weight)
        return self._latent_dist(self.prior_logits)

    def encode_logits(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of q(z | x), shape ``[..., N, K]`` (categorical) or ``[..., N]``."""
        return self.encoder(x).reshape(x.shape[:-1] + self._logit_shape)

    def _code(self, z: torch.Tensor) -> torch.Tensor:
        """The decoder's input: one-hot groups flattened (``[..., N * K]``), or ``z`` itself."""
        return z.flatten(-2) if self.latent.kind == "categorical" else z

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Bernoulli logits (or Normal means) of p(x | z); ``z`` may have any leading dims."""
        return self.decoder(self._code(z))

    def likelihood(self, z: torch.Tensor) -> dist.TorchDistribution:
        """p(x | z) as a distribution with event shape ``[data_dim]``.

        Bernoulli pixels come as a :class:`~pyro_dvae.distributions.LinearBernoulliVector` of
        the decoder's last hidden layer, so that scoring enumerated codes against a data batch
        contracts over the hidden width rather than over the pixels.
        """
        if self.likelihood_kind == "bernoulli":
            *hidden, last = self.decoder  # no per-call Sequential slice on the training path
            h = self._code(z)
            for layer in hidden:
                h = layer(h)
            return LinearBernoulliVector(h, last.weight, last.bias)
        return dist.Normal(self.decode(z), self.log_scale.exp()).to_event(1)

    # -- Pyro model and guide ---------------------------------------------------------------
    def model(self, x: torch.Tensor) -> None:
        """p(z) p(x | z) with ``z`` at site ``"z"`` and ``x`` observed at site ``"x"``."""
        pyro.module(self.name, self)
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", self.prior())
            pyro.sample("x", self.likelihood(z), obs=x)

    def guide(self, x: torch.Tensor) -> None:
        """q(z | x) from the encoder, discrete (relaxed by the ELBO when asked)."""
        pyro.module(self.name, self)
        if self.training and self.encoder_noise > 0:  # denoising: encode a corrupted copy
            flip = torch.rand_like(x) < self.encoder_noise
            x = torch.where(flip, 1.0 - x, x)
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", self._latent_dist(self.encode_logits(x)))

    # -- conveniences ----------------------------------------------------------------------
    @torch.no_grad()
    def sample_prior(self, n: int) -> torch.Tensor:
        """``n`` latent codes drawn from p(z) (one-hot ``[n, N, K]`` or binary ``[n, N]``)."""
        return self.prior().sample((n,))

    @torch.no_grad()
    def sample_x(self, n: int) -> torch.Tensor:
        """Means of p(x | z) for ``n`` codes z drawn from the prior."""
        return self.mean(self.sample_prior(n))

    @torch.no_grad()
    def mean(self, z: torch.Tensor) -> torch.Tensor:
        """E[x | z]: pixel probabilities (Bernoulli) or means (Normal)."""
        out = self.decode(z)
        return torch.sigmoid(out) if self.likelihood_kind == "bernoulli" else out

    @torch.no_grad()
    def posterior_mode(self, x: torch.Tensor) -> torch.Tensor:
        """The most probable code under q(z | x) (q factorizes, so per group)."""
        logits = self.encode_logits(x)
        if self.latent.kind == "categorical":
            return nn.functional.one_hot(logits.argmax(-1), self.latent.categories).to(x.dtype)
        return (logits > 0).to(x.dtype)

    @torch.no_grad()
    def kl_per_group(self, x: torch.Tensor) -> torch.Tensor:
        """KL(q(z_i | x) || p(z_i)) of every latent group (categorical) or unit (Bernoulli),
        in nats, shape ``[..., N]``; their sum over ``N`` is the ELBO's KL term.

        A group whose mean KL over the data is ~0 carries no information about x ("inactive",
        collapsed onto the prior; Burda et al. 2016, arXiv:1509.00519, count active units).
        For an autoregressive prior, group i's term is KL(q_i || p(z_i | z_<i)) at one sample
        ``z ~ q(z | x)`` (their sum is an unbiased estimate of the KL).

        Example:
            >>> vae = DiscreteVAE(6, "3x4", encoder_hidden=(8,))
            >>> vae.kl_per_group(torch.zeros(5, 6)).shape
            torch.Size([5, 3])
        """
        q = self._latent_dist(self.encode_logits(x)).base_dist
        if self.prior_kind == "autoregressive":
            return kl_divergence(q, self.prior().conditionals(q.sample()).base_dist)
        p = self.prior().base_dist
        return kl_divergence(q, p.expand(q.batch_shape))

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        """E[x | z] at the mode of q(z | x)."""
        return self.mean(self.posterior_mode(x))

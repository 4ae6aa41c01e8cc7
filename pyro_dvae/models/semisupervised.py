"""Kingma et al.'s semi-supervised VAE "M2" (arXiv:1406.5298) as plain Pyro model and guide."""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator, Sequence

import pyro
import pyro.distributions as dist
import torch
from pyro import poutine
from torch import nn
from torch.nn import functional as F

__all__ = ["SemiSupervisedVAE"]


def _widths(hidden: int | Sequence[int]) -> list[int]:
    return [int(hidden)] if isinstance(hidden, int) else [int(h) for h in hidden]


def _softplus_mlp(sizes: Sequence[int], batch_norm: bool = False) -> nn.Sequential:
    """``sizes[0] -> ... -> sizes[-1]`` with softplus between layers (and ``BatchNorm1d`` before
    every softplus when ``batch_norm``); the last layer is linear."""
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(a, b))
        if i < len(sizes) - 2:
            if batch_norm:
                layers.append(nn.BatchNorm1d(b))
            layers.append(nn.Softplus())
    return nn.Sequential(*layers)


class SemiSupervisedVAE(nn.Module):
    """The semi-supervised VAE "M2" of Kingma et al. 2014: a class ``y`` and a style ``z``.

    Generative model: ``y ~ OneHotCategorical(uniform)``, ``z ~ Normal(0, I)``,
    ``x ~ Bernoulli(decoder([y, z]))`` (independent pixels; targets in ``[0, 1]`` are accepted,
    e.g. grey levels, as in Pyro's SS-VAE example). Guide: ``q(y | x)`` a classifier MLP and
    ``q(z | x, y) = Normal(encoder([x, y]))``. All three networks broadcast over leading
    dimensions, so ``y`` can be enumerated.

    ``model(x, y=None)`` and ``guide(x, y=None)`` are ordinary Pyro code under one plate
    ``"data"``:

    - ``y`` given (one-hot, labelled batch): ``y`` is observed in the model and absent from the
      guide, and the model adds Kingma et al.'s classification term ``alpha * log q(y | x)`` as
      ``pyro.factor("classify", ...)``. It has to be in the *model*: Pyro's ELBOs count a factor
      in the guide as part of ``log q`` and would subtract it.
    - ``y`` omitted (unlabelled batch): ``y`` is a latent of the guide, marked
      ``infer={"enumerate": "parallel"}``; :class:`~pyro_dvae.infer.EnumeratedELBO` (or Pyro's
      ``TraceEnum_ELBO``) sums it exactly, drawing ``z`` once per class, and relaxed estimators
      (:class:`~pyro_dvae.infer.GumbelSoftmaxELBO`) sample it.

    ``scale`` multiplies the labelled or unlabelled ELBO term (e.g. labels / training images for
    a labelled batch drawn at every step, so that every image counts once per epoch as in Kingma
    et al.'s objective); the classification term keeps weight ``alpha`` per labelled example
    whatever ``scale`` is.

    :param data_dim: pixels per image.
    :param classes: number of classes.
    :param z_dim: dimension of ``z``.
    :param hidden: hidden widths of the decoder and the z-encoder (an int for one layer).
    :param classifier_hidden: hidden widths of the classifier ``q(y | x)`` (default: ``hidden``).
    :param alpha: weight of ``log q(y | x)`` per labelled example (Kingma et al. use
        ``0.1 * N`` on the labelled mean, i.e. ``0.1 * N / labels`` per labelled example).
    :param batch_norm: ``BatchNorm1d`` after every hidden layer of the classifier (training
        batches normalize with their own statistics; :meth:`classify` uses the running ones).
    :param classifier_dropout: dropout probability on the classifier's input pixels, in
        training mode only.
    :param entropy_weight: weight of the entropy ``H(q(y | x))`` in the unlabelled ELBO (1, the
        default, is the ELBO). Below 1 the model adds ``-(1 - entropy_weight) * H(q(y | x))`` as
        ``pyro.factor("entropy", ...)`` on unlabelled batches (under their ``scale``), which
        rewards confident classifications (entropy minimization, Grandvalet & Bengio 2004); the
        loss is then no longer a bound on ``-log p(x)``.
    :param consistency_weight: weight ``w`` of a consistency term on unlabelled batches: the
        model adds ``-w * KL(q(y | x) || q(y | augment(x)))`` as ``pyro.factor("consistency",
        ...)``, the first ``q`` held fixed (no gradient), so the classifier learns to give an
        image and its perturbed copy the same class (Laine & Aila 2017; Xie et al. 2020). Like
        the classification term it is outside ``scale`` and outside the ELBO (0, the default:
        off).
    :param augment: the perturbation of the consistency term, a function from a batch of images
        to a batch of the same shape (e.g. ``functools.partial(random_translate, max_shift=2)``
        from :mod:`pyro_dvae.data`); ``None``: the image itself, so only the classifier's input
        dropout perturbs it.
    :param consistency_threshold: 0 (default): the consistency term is the KL above. In
        ``(0, 1)``: it is FixMatch's pseudo-label loss instead, ``-w * log q(y_hat | augment(x))``
        with ``y_hat`` the most probable class under ``q(y | x)``, counted only for the images
        where that probability is at least the threshold (Sohn et al. 2020).
    :param adversarial_epsilon: when positive, the consistency term's perturbation also moves the
        (augmented) image by ``epsilon`` (L2 norm) in the direction that changes ``q(y | x)``
        the most, found by one power iteration (virtual adversarial training, Miyato et al.
        2018); ``epsilon`` is in the units of the pixels (Miyato et al. use 2.0 on MNIST
        intensities in ``[0, 1]``).

    Example:
        >>> import pyro, torch
        >>> from pyro_dvae.infer import EnumeratedELBO, TorchOptimSVI
        >>> m2 = SemiSupervisedVAE(data_dim=6, classes=3, z_dim=2, hidden=8, alpha=10.0)
        >>> svi = TorchOptimSVI(m2.model, m2.guide, lambda ps: torch.optim.Adam(ps, lr=1e-2),
        ...                     EnumeratedELBO())
        >>> x = torch.bernoulli(torch.full((4, 6), 0.5))
        >>> y = torch.nn.functional.one_hot(torch.tensor([0, 1, 2, 0]), 3).float()
        >>> loss_unlabelled = svi.step(x)  # y summed out exactly
        >>> loss_labelled = svi.step(x, y)  # y observed, plus alpha * log q(y | x)
        >>> m2.classify(x).shape
        torch.Size([4])

    References:
        - D. P. Kingma, D. J. Rezende, S. Mohamed, M. Welling. Semi-Supervised Learning with
          Deep Generative Models. NeurIPS 2014, arXiv:1406.5298.
        - E. Jang, S. Gu, B. Poole. Categorical Reparameterization with Gumbel-Softmax. ICLR
          2017, arXiv:1611.01144 (M2 trained with a relaxed ``y``).
        - S. Laine, T. Aila. Temporal Ensembling for Semi-Supervised Learning. ICLR 2017,
          arXiv:1610.02242 (the consistency term).
        - T. Miyato, S. Maeda, M. Koyama, S. Ishii. Virtual Adversarial Training: A
          Regularization Method for Supervised and Semi-Supervised Learning. TPAMI 2018,
          arXiv:1704.03976 (the adversarial perturbation).
        - K. Sohn et al. FixMatch: Simplifying Semi-Supervised Learning with Consistency and
          Confidence. NeurIPS 2020, arXiv:2001.07685 (thresholded pseudo-labels).
        - Q. Xie, Z. Dai, E. Hovy, M.-T. Luong, Q. V. Le. Unsupervised Data Augmentation for
          Consistency Training. NeurIPS 2020, arXiv:1904.12848 (KL to a fixed target).
    """

    def __init__(
        self,
        data_dim: int,
        classes: int = 10,
        z_dim: int = 50,
        hidden: int | Sequence[int] = 500,
        classifier_hidden: int | Sequence[int] | None = None,
        alpha: float = 1.0,
        batch_norm: bool = False,
        classifier_dropout: float = 0.0,
        entropy_weight: float = 1.0,
        consistency_weight: float = 0.0,
        augment: Callable[[torch.Tensor], torch.Tensor] | None = None,
        adversarial_epsilon: float = 0.0,
        consistency_threshold: float = 0.0,
    ) -> None:
        super().__init__()
        widths = _widths(hidden)
        cwidths = widths if classifier_hidden is None else _widths(classifier_hidden)
        self.data_dim, self.classes, self.z_dim = int(data_dim), int(classes), int(z_dim)
        self.alpha = float(alpha)
        self.entropy_weight = float(entropy_weight)
        self.consistency_weight = float(consistency_weight)
        self.augment = augment
        self.adversarial_epsilon = float(adversarial_epsilon)
        if not 0.0 <= consistency_threshold < 1.0:
            raise ValueError(
                f"consistency_threshold must be in [0, 1), got {consistency_threshold}; pass 0 "
                "for the KL or e.g. 0.95 for FixMatch's pseudo-labels"
            )
        self.consistency_threshold = float(consistency_threshold)
        self.decoder = _softplus_mlp([classes + z_dim, *widths, data_dim])
        self.encoder = _softplus_mlp([data_dim + classes, *widths, 2 * z_dim])
        self.classifier = _softplus_mlp([data_dim, *cwidths, classes], batch_norm=batch_norm)
        self.input_dropout = nn.Dropout(classifier_dropout) if classifier_dropout > 0 else None

    # ------------------------------------------------------------------ networks ------------
    def classifier_logits(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of ``q(y | x)``, shape ``x.shape[:-1] + (classes,)``."""
        if self.input_dropout is not None:
            x = self.input_dropout(x)
        flat = x.reshape(-1, x.shape[-1])  # BatchNorm1d wants (N, features)
        return self.classifier(flat).reshape(x.shape[:-1] + (self.classes,))

    def q_y(self, x: torch.Tensor) -> dist.OneHotCategorical:
        """The guide's ``q(y | x)``, batch shape ``x.shape[:-1]``."""
        return dist.OneHotCategorical(logits=self.classifier_logits(x))

    def consistency(self, x: torch.Tensor) -> torch.Tensor:
        """``KL(q(y | x) || q(y | augment(x)))`` per image, the first ``q`` without gradient
        (with ``consistency_threshold``: the masked pseudo-label loss instead)."""
        with torch.no_grad():
            target = F.log_softmax(self.classifier_logits(x), -1)
        perturbed = x if self.augment is None else self.augment(x)
        if self.adversarial_epsilon > 0:
            perturbed = perturbed + self.adversarial_direction(perturbed, target)
        log_q = F.log_softmax(self.classifier_logits(perturbed), -1)
        if self.consistency_threshold > 0:
            confidence, label = target.max(-1)
            mask = (confidence >= math.log(self.consistency_threshold)).to(log_q.dtype)
            return -mask * log_q.gather(-1, label.unsqueeze(-1)).squeeze(-1)
        return (target.exp() * (target - log_q)).sum(-1)

    def adversarial_direction(
        self, x: torch.Tensor, target: torch.Tensor, xi: float = 1e-6
    ) -> torch.Tensor:
        """``adversarial_epsilon`` times the unit vector (per image) along which
        ``KL(target || q(y | x + r))`` grows fastest at ``r = 0``: one power iteration from a
        random direction, finite difference ``xi`` (Miyato et al. 2018). No gradient flows
        through it."""

        def unit(v: torch.Tensor) -> torch.Tensor:
            return v / v.flatten(1).norm(dim=1).clamp_min(1e-12).reshape(
                (-1,) + (1,) * (v.dim() - 1)
            )

        with torch.enable_grad():  # also under no_grad (evaluation): the direction needs it
            r = (xi * unit(torch.randn_like(x))).requires_grad_(True)
            log_q = F.log_softmax(self.classifier_logits(x.detach() + r), -1)
            kl = (target.exp() * (target - log_q)).sum()
            (grad,) = torch.autograd.grad(kl, r)
        return self.adversarial_epsilon * unit(grad.detach())

    def q_z(self, x: torch.Tensor, y: torch.Tensor) -> dist.Independent:
        """The guide's ``q(z | x, y)``, batch shape broadcast from ``x`` and ``y``."""
        # encoder([x, y]) with its first layer split as W_x x + W_y y + b: under an enumerated
        # y, the x part (the largest product) is computed once instead of once per class
        first = self.encoder[0]
        d = x.shape[-1]
        h = F.linear(x, first.weight[:, :d], first.bias) + F.linear(y, first.weight[:, d:])
        loc, log_scale = self.encoder[1:](h).split(self.z_dim, -1)
        return dist.Normal(loc, log_scale.exp()).to_event(1)

    def decoder_logits(self, y: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """Pixel logits of ``p(x | y, z)``, batch shape broadcast from ``y`` and ``z``."""
        shape = torch.broadcast_shapes(y.shape[:-1], z.shape[:-1])
        return self.decoder(
            torch.cat([y.expand(shape + y.shape[-1:]), z.expand(shape + z.shape[-1:])], -1)
        )

    # ------------------------------------------------------------------ Pyro ---------------
    def model(self, x: torch.Tensor, y: torch.Tensor | None = None, scale: float = 1.0) -> None:
        """``p(y) p(z) p(x | y, z)``; ``y`` observed when given, with ``alpha * log q(y | x)``."""
        pyro.module("m2", self)
        with pyro.plate("data", x.shape[0]):
            if y is not None:  # Kingma et al.'s classification term, outside the ELBO's scale
                pyro.factor("classify", self.alpha * self.q_y(x).log_prob(y))
            elif self.consistency_weight:  # unlabelled: q(y | x) stable under perturbations
                pyro.factor("consistency", -self.consistency_weight * self.consistency(x))
            with poutine.scale(scale=scale):
                if y is None and self.entropy_weight != 1.0:  # sharpen q(y | x) (not an ELBO)
                    entropy = self.q_y(x).entropy()
                    pyro.factor("entropy", -(1.0 - self.entropy_weight) * entropy)
                prior_y = dist.OneHotCategorical(logits=x.new_zeros(self.classes))
                y = pyro.sample("y", prior_y, obs=y)
                prior_z = dist.Normal(x.new_zeros(()), 1.0).expand([self.z_dim]).to_event(1)
                z = pyro.sample("z", prior_z)
                likelihood = dist.Bernoulli(logits=self.decoder_logits(y, z), validate_args=False)
                pyro.sample("x", likelihood.to_event(1), obs=x)

    def guide(
        self, x: torch.Tensor, y: torch.Tensor | None = None, scale: float = 1.0
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``q(y | x) q(z | x, y)``; ``y`` enumerated (or relaxed) when not given. Returns the
        ``(y, z)`` used (an enumerated ``y`` carries its enumeration dim, and ``z`` with it)."""
        pyro.module("m2", self)
        with pyro.plate("data", x.shape[0]), poutine.scale(scale=scale):
            if y is None:
                y = pyro.sample("y", self.q_y(x), infer={"enumerate": "parallel"})
            z = pyro.sample("z", self.q_z(x, y))
        return y, z

    @contextlib.contextmanager
    def elbo_only(self) -> Iterator[SemiSupervisedVAE]:
        """Within the block, the unlabelled model is the ELBO's: no entropy or consistency
        factor (e.g. to evaluate a test -ELBO); the labelled one keeps its classification term.

        Example:
            >>> m2 = SemiSupervisedVAE(6, 3, 2, 8, consistency_weight=5.0)
            >>> with m2.elbo_only():
            ...     m2.consistency_weight
            0.0
            >>> m2.consistency_weight
            5.0
        """
        saved = self.entropy_weight, self.consistency_weight
        self.entropy_weight, self.consistency_weight = 1.0, 0.0
        try:
            yield self
        finally:
            self.entropy_weight, self.consistency_weight = saved

    # ------------------------------------------------------------------ classification -----
    @torch.no_grad()
    def classify(self, x: torch.Tensor, batch_size: int = 10_000) -> torch.Tensor:
        """The most probable class under ``q(y | x)`` (integer labels), in evaluation mode."""
        was_training = self.training
        self.eval()
        try:
            chunks = [x[i : i + batch_size] for i in range(0, len(x), batch_size)] or [x]
            return torch.cat([self.classifier_logits(c).argmax(-1) for c in chunks])
        finally:
            self.train(was_training)

    @torch.no_grad()
    def elbo_per_class(self, x: torch.Tensor, num_samples: int = 1) -> torch.Tensor:
        """``ELBO(x, y)`` for every class ``y``, shape ``x.shape[:-1] + (classes,)``:
        ``log p(y) + log p(z) + log p(x | y, z) - log q(z | x, y)`` averaged over
        ``num_samples`` draws of ``z ~ q(z | x, y)``. Its argmax over ``y`` is the generative
        model's own classification (:meth:`generative_classify`)."""
        eye = torch.eye(self.classes, dtype=x.dtype, device=x.device)
        y = eye.reshape((self.classes,) + (1,) * (x.dim() - 1) + (self.classes,))
        q = self.q_z(x, y)  # batch shape (classes,) + x.shape[:-1]
        z = q.sample((num_samples,))
        prior = dist.Normal(x.new_zeros(()), 1.0).expand([self.z_dim]).to_event(1)
        likelihood = dist.Bernoulli(logits=self.decoder_logits(y, z), validate_args=False)
        log_w = prior.log_prob(z) + likelihood.to_event(1).log_prob(x) - q.log_prob(z)
        log_w = log_w.mean(0) - torch.log(torch.tensor(float(self.classes)))
        return log_w.movedim(0, -1)

    def generative_classify(self, x: torch.Tensor, num_samples: int = 1) -> torch.Tensor:
        """``argmax_y ELBO(x, y)``: the class under which the generative model explains ``x``
        best (integer labels); compare with :meth:`classify`, the guide's ``q(y | x)``."""
        return self.elbo_per_class(x, num_samples).argmax(-1)

    def accuracy(self, x: torch.Tensor, labels: torch.Tensor) -> float:
        """Fraction of ``x`` that :meth:`classify` assigns to ``labels`` (integer classes)."""
        return float((self.classify(x) == labels.to(torch.long)).float().mean())

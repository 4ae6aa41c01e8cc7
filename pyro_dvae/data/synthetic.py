"""Synthetic binary data from a KNOWN small discrete-latent model with exact ``log p(x)``.

The model has ``N`` independent categorical groups of ``K`` classes,
``z_g ~ Categorical(softmax(prior_logits[g]))``, and a linear Bernoulli decoder,
``x_d ~ Bernoulli(sigmoid(bias[d] + sum_g weights[g, z_g, d]))``. With only ``K^N``
configurations, ``log p(x)`` and ``p(z | x)`` are computed exactly by brute-force summation in
float64, which makes the data set a ground truth for checking estimators and bounds.

Configurations are indexed in :func:`itertools.product` order: index
``sum_g z_g * K^(N-1-g)`` (group 0 most significant, the last group changing fastest).
"""

from __future__ import annotations

import torch

from ..errors import DVAEInputError, LatentSpaceTooLargeError
from .dataset import BinaryDataset, validate_data

__all__ = ["MAX_EXACT_CONFIGURATIONS", "SyntheticModel", "make_synthetic"]

MAX_EXACT_CONFIGURATIONS = 1 << 16


class SyntheticModel:
    """A known ``N x K`` categorical-latent model with a linear Bernoulli decoder.

    Parameters are float64 tensors: ``prior_logits`` ``(N, K)``, ``weights`` ``(N, K, D)`` and
    ``bias`` ``(D,)``. Use :meth:`random` for a seeded random model.

    Example:
        >>> m = SyntheticModel.random(groups=2, categories=3, data_dim=5, seed=0)
        >>> x, z = m.sample(4, torch.Generator().manual_seed(0))
        >>> x.shape, z.shape, m.num_configurations
        (torch.Size([4, 5]), torch.Size([4, 2]), 9)
        >>> torch.allclose(m.posterior(x).sum(-1), torch.ones(4, dtype=torch.float64))
        True
    """

    def __init__(self, prior_logits: torch.Tensor, weights: torch.Tensor, bias: torch.Tensor):
        prior_logits = torch.as_tensor(prior_logits, dtype=torch.float64)
        weights = torch.as_tensor(weights, dtype=torch.float64)
        bias = torch.as_tensor(bias, dtype=torch.float64)
        if prior_logits.dim() != 2 or prior_logits.shape[1] < 2:
            raise DVAEInputError(
                f"prior_logits must have shape (groups, categories>=2), got "
                f"{tuple(prior_logits.shape)}"
            )
        n, k = prior_logits.shape
        if bias.dim() != 1 or weights.shape != (n, k, bias.shape[0]):
            raise DVAEInputError(
                f"weights must have shape (groups, categories, data_dim) = ({n}, {k}, D) and bias "
                f"(D,); got {tuple(weights.shape)} and {tuple(bias.shape)}"
            )
        for name, t in (("prior_logits", prior_logits), ("weights", weights), ("bias", bias)):
            if not bool(torch.isfinite(t).all()):
                raise DVAEInputError(
                    f"SyntheticModel {name} has NaN/inf entries; pass finite values"
                )
        self.prior_logits = prior_logits
        self.weights = weights
        self.bias = bias

    @classmethod
    def random(
        cls,
        groups: int = 2,
        categories: int = 4,
        data_dim: int = 16,
        seed: int = 0,
        *,
        weight_scale: float = 2.5,
        prior_scale: float = 1.0,
        generator: torch.Generator | None = None,
    ) -> SyntheticModel:
        """A seeded random model with Gaussian parameters.

        ``prior_logits ~ N(0, prior_scale^2)``, ``weights ~ N(0, weight_scale^2)`` and
        ``bias ~ N(0, 1)``, drawn in that order from ``generator`` when given, else from a fresh
        generator seeded with ``seed``.

        Example:
            >>> SyntheticModel.random(seed=1).weights.shape
            torch.Size([2, 4, 16])
        """
        _check_sizes(groups, categories, data_dim)
        g = generator if generator is not None else torch.Generator().manual_seed(seed)
        f64 = torch.float64
        prior_logits = prior_scale * torch.randn(groups, categories, generator=g, dtype=f64)
        weights = weight_scale * torch.randn(groups, categories, data_dim, generator=g, dtype=f64)
        bias = torch.randn(data_dim, generator=g, dtype=f64)
        return cls(prior_logits, weights, bias)

    @property
    def groups(self) -> int:
        """Number of categorical groups ``N``."""
        return int(self.prior_logits.shape[0])

    @property
    def categories(self) -> int:
        """Number of classes ``K`` per group."""
        return int(self.prior_logits.shape[1])

    @property
    def data_dim(self) -> int:
        """Number of binary features ``D``."""
        return int(self.bias.shape[0])

    @property
    def num_configurations(self) -> int:
        """``K^N``, the number of joint latent configurations."""
        return self.categories**self.groups

    def prior_probs(self) -> torch.Tensor:
        """Per-group prior probabilities, ``(N, K)`` float64.

        Example:
            >>> SyntheticModel.random().prior_probs().shape
            torch.Size([2, 4])
        """
        return torch.softmax(self.prior_logits, dim=-1)

    def configurations(self) -> torch.Tensor:
        """All ``K^N`` configurations as an int64 ``(K^N, N)`` tensor, in itertools.product order.

        Example:
            >>> SyntheticModel.random(groups=2, categories=2, data_dim=3).configurations().tolist()
            [[0, 0], [0, 1], [1, 0], [1, 1]]
        """
        self._check_enumerable()
        k, n = self.categories, self.groups
        idx = torch.arange(self.num_configurations, device=self.bias.device)
        powers = k ** torch.arange(n - 1, -1, -1, device=self.bias.device)
        return (idx[:, None] // powers) % k

    def config_index(self, z: torch.Tensor) -> torch.Tensor:
        """Map ``(n, N)`` class indices to configuration indices ``sum_g z_g K^(N-1-g)`` (int64).

        Example:
            >>> m = SyntheticModel.random(groups=2, categories=4)
            >>> m.config_index(torch.tensor([[0, 0], [1, 2], [3, 3]])).tolist()
            [0, 6, 15]
        """
        k, n = self.categories, self.groups
        powers = k ** torch.arange(n - 1, -1, -1, device=z.device)
        return (z.long() * powers).sum(-1)

    def decoder_logits(self, z: torch.Tensor) -> torch.Tensor:
        """Bernoulli logits ``bias + sum_g weights[g, z_g]`` for ``(n, N)`` indices, ``(n, D)``.

        Example:
            >>> m = SyntheticModel.random()
            >>> m.decoder_logits(torch.tensor([[0, 1]])).shape
            torch.Size([1, 16])
        """
        group = torch.arange(self.groups, device=z.device)
        return self.bias + self.weights[group, z.long()].sum(-2)

    def log_prior(self) -> torch.Tensor:
        """``log p(z)`` for every configuration, ``(K^N,)`` float64 (sums to 1 in prob space)."""
        z = self.configurations()
        logp = torch.log_softmax(self.prior_logits, dim=-1)
        return logp[torch.arange(self.groups, device=z.device), z].sum(-1)

    def log_joint(self, x: torch.Tensor) -> torch.Tensor:
        """``log p(x, z)`` for every datum and configuration, ``(n, K^N)`` float64.

        Example:
            >>> m = SyntheticModel.random()
            >>> m.log_joint(torch.zeros(3, 16)).shape
            torch.Size([3, 16])
        """
        validate_data(x, data_dim=self.data_dim, name="x")
        x = x.to(dtype=torch.float64, device=self.bias.device)
        logits = self.decoder_logits(self.configurations())  # (C, D)
        log_lik = x @ logits.T - torch.nn.functional.softplus(logits).sum(-1)  # (n, C)
        return log_lik + self.log_prior()

    def log_likelihood(self, x: torch.Tensor) -> torch.Tensor:
        """Exact ``log p(x)`` per datum (nats), summing over all ``K^N`` configurations; float64.

        Example:
            >>> m = SyntheticModel.random()
            >>> x, _ = m.sample(5, torch.Generator().manual_seed(0))
            >>> bool((m.log_likelihood(x) < 0).all())
            True
        """
        return torch.logsumexp(self.log_joint(x), dim=-1)

    def posterior(self, x: torch.Tensor) -> torch.Tensor:
        """Exact posterior ``p(z | x)`` over configurations, ``(n, K^N)`` float64 (rows sum to 1).

        Example:
            >>> m = SyntheticModel.random()
            >>> m.posterior(torch.ones(2, 16)).shape
            torch.Size([2, 16])
        """
        return torch.softmax(self.log_joint(x), dim=-1)

    def sample(
        self, n: int, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Draw ``n`` data ``(x, z)``: ``x`` float32 ``(n, D)`` in {0, 1}, ``z`` int64 ``(n, N)``.

        Deterministic given the state of ``generator`` (a CPU ``torch.Generator``).

        Example:
            >>> m = SyntheticModel.random()
            >>> x, z = m.sample(3, torch.Generator().manual_seed(0))
            >>> x.dtype, z.dtype, z.shape
            (torch.float32, torch.int64, torch.Size([3, 2]))
        """
        if int(n) < 0:
            raise DVAEInputError(f"number of samples must be >= 0, got {n}")
        n = int(n)
        dev = self.bias.device
        u = torch.rand(n, self.groups, generator=generator, dtype=torch.float64).to(dev)
        cdf = torch.cumsum(self.prior_probs(), dim=-1)  # (N, K)
        z = (u[..., None] >= cdf).sum(-1).clamp_(max=self.categories - 1)
        probs = torch.sigmoid(self.decoder_logits(z))
        v = torch.rand(n, self.data_dim, generator=generator, dtype=torch.float64).to(dev)
        return (v < probs).to(torch.float32), z

    def to(self, device: torch.device | str) -> SyntheticModel:
        """Return a copy of the model on ``device``."""
        return SyntheticModel(
            self.prior_logits.to(device), self.weights.to(device), self.bias.to(device)
        )

    def _check_enumerable(self) -> None:
        if self.num_configurations > MAX_EXACT_CONFIGURATIONS:
            raise LatentSpaceTooLargeError(
                f"exact computations need K^N = {self.num_configurations} configurations, more "
                f"than {MAX_EXACT_CONFIGURATIONS}; use fewer groups or categories"
            )

    def __repr__(self) -> str:
        return (
            f"SyntheticModel(groups={self.groups}, categories={self.categories}, "
            f"data_dim={self.data_dim})"
        )


def _check_sizes(groups: int, categories: int, data_dim: int) -> None:
    if groups < 1 or categories < 2 or data_dim < 1:
        raise DVAEInputError(
            f"synthetic model needs groups >= 1, categories >= 2 and data_dim >= 1; got "
            f"groups={groups}, categories={categories}, data_dim={data_dim}"
        )


def make_synthetic(
    num_train: int = 2000,
    num_valid: int = 500,
    num_test: int = 500,
    groups: int = 2,
    categories: int = 4,
    data_dim: int = 16,
    seed: int = 0,
) -> BinaryDataset:
    """Draw a dataset from a seeded :class:`SyntheticModel`; the dataset keeps the true model.

    One ``torch.Generator`` seeded with ``seed`` draws the model, then train, valid and test.
    Labels are configuration indices (see :meth:`SyntheticModel.config_index`).
    ``dataset.true_model`` is the generating model and ``dataset.true_test_log_likelihood`` the
    exact mean test ``log p(x)`` (also stated in ``dataset.description``).

    Example:
        >>> ds = make_synthetic(num_train=100, num_valid=20, num_test=20)
        >>> ds.train.shape, ds.true_model.num_configurations
        (torch.Size([100, 16]), 16)
    """
    sizes = {"num_train": num_train, "num_valid": num_valid, "num_test": num_test}
    for label, value in sizes.items():
        if int(value) < 1:
            raise DVAEInputError(f"{label} must be >= 1, got {value}; pass a positive size")
    _check_sizes(groups, categories, data_dim)
    if categories**groups > MAX_EXACT_CONFIGURATIONS:
        raise LatentSpaceTooLargeError(
            f"synthetic data with {groups}x{categories} latents has {categories**groups} "
            f"configurations, more than {MAX_EXACT_CONFIGURATIONS} for exact log p(x); "
            "use fewer groups or categories"
        )
    g = torch.Generator().manual_seed(seed)
    model = SyntheticModel.random(groups, categories, data_dim, generator=g)
    splits = [model.sample(int(n), g) for n in (num_train, num_valid, num_test)]
    (train, z_tr), (valid, z_va), (test, z_te) = splits
    true_ll = float(model.log_likelihood(test).mean())
    return BinaryDataset(
        name="synthetic",
        train=train,
        valid=valid,
        test=test,
        train_labels=model.config_index(z_tr),
        valid_labels=model.config_index(z_va),
        test_labels=model.config_index(z_te),
        image_shape=None,
        description=(
            f"synthetic data from a known {groups}x{categories} categorical-latent model with a "
            f"linear Bernoulli decoder (D={data_dim}, seed={seed}); true mean test log p(x) = "
            f"{true_ll:.4f} nats/datum"
        ),
        true_model=model,
    )

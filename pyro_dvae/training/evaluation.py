"""Held-out evaluation in nats per datum, and the figures written at the end of a run.

Example:
    >>> import torch
    >>> _batched(lambda xb: xb.sum(-1), torch.ones(250, 2)).shape
    torch.Size([250])
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

from ..latent import LatentSpec
from ..utils.checkpoint import fixed_seed
from ._config import TrainConfig

__all__: list[str] = []

_EVAL_BATCH = 100
#: a latent group is *active* when its mean KL(q(z_i|x) || p(z_i)) over the test set exceeds this
ACTIVE_KL = 0.01


def _batched_rows(fn, x: torch.Tensor, batch: int = _EVAL_BATCH) -> torch.Tensor:
    return torch.cat([fn(x[i : i + batch]).detach() for i in range(0, len(x), batch)])


def _batched(fn, x: torch.Tensor, batch: int = _EVAL_BATCH) -> torch.Tensor:
    return _batched_rows(lambda xb: fn(xb).reshape(-1), x, batch)


@contextmanager
def _eval_mode(module: torch.nn.Module) -> Iterator[None]:
    """``module.eval()`` inside (no dropout, no encoder noise), its previous mode restored after."""
    was_training = module.training
    module.eval()
    try:
        yield
    finally:
        module.train(was_training)


def _eval_elbo(model, x: torch.Tensor, seed: int, num_samples: int = 1) -> float:
    from ..infer import discrete_elbo

    with torch.no_grad(), fixed_seed(seed), _eval_mode(model):
        values = _batched(
            lambda xb: discrete_elbo(model.model, model.guide, xb, num_samples=num_samples), x
        )
    return -float(values.mean())


def _evaluate(model, data, spec: LatentSpec, config: TrainConfig) -> dict[str, Any]:
    with _eval_mode(model):
        return _test_metrics(model, data, spec, config)


def _test_metrics(model, data, spec: LatentSpec, config: TrainConfig) -> dict[str, Any]:
    from ..infer import exact_log_likelihood, iwae_log_likelihood

    x = data.test
    nelbo = _eval_elbo(model, x, config.seed + 2, num_samples=10)
    batch = max(1, min(_EVAL_BATCH, 100_000 // config.iwae_samples))
    with torch.no_grad(), fixed_seed(config.seed + 3):
        iwae = _batched(
            lambda xb: iwae_log_likelihood(
                model.model, model.guide, xb, num_samples=config.iwae_samples
            ),
            x,
            batch,
        )
    exact = None
    if spec.num_configurations <= config.max_configurations:
        with torch.no_grad():
            ll = _batched(
                lambda xb: exact_log_likelihood(
                    model.model, xb, max_configurations=config.max_configurations
                ),
                x,
            )
        exact = -float(ll.mean())
    true_ll = getattr(data, "true_test_log_likelihood", None)
    kl = _batched_rows(model.kl_per_group, x).mean(0)  # [N]: mean over the test set
    return {
        "test_nelbo": nelbo,
        "test_nll_iwae": -float(iwae.mean()),
        "test_nll_exact": exact,
        "true_test_nll": None if true_ll is None else -float(true_ll),
        "test_kl": float(kl.sum()),
        "active_groups": int((kl > ACTIVE_KL).sum()),
        "eval": {
            "elbo_samples": 10,
            "iwae_samples": config.iwae_samples,
            "active_kl_threshold": ACTIVE_KL,
        },
    }


def _write_plots(model, data, history: dict, out: Path, seed: int) -> None:
    import matplotlib.pyplot as plt

    from ..plots import plot_prior_samples, plot_reconstructions, plot_training_curve

    with torch.no_grad(), fixed_seed(seed), _eval_mode(model):
        x = data.test[:10]
        x_rec = model.reconstruct(x)
        samples = model.sample_x(32)
    for fig in (
        plot_training_curve(history, out / "training_curve.png"),
        plot_reconstructions(x, x_rec, data.image_shape, out / "reconstructions.png"),
        plot_prior_samples(samples, data.image_shape, out / "prior_samples.png"),
    ):
        plt.close(fig)

"""Held-out evaluation in nats per datum: the one entry point of training, ``compare`` and
export, always in eval mode (no dropout, no encoder noise) and without touching the training
RNG streams.

:func:`evaluate_nelbo` and :func:`evaluate_nll_exact` are the numbers of learning curves and
validation; :func:`evaluate_run` gives the final test metrics of a run (the evaluation part of
:class:`RunMetrics`, the typed contents of ``metrics.json``).

Example:
    >>> from pyro_dvae.models import DiscreteVAE
    >>> model = DiscreteVAE(16, "2x3", encoder_hidden=(8,), dropout=0.5)
    >>> x = torch.bernoulli(torch.full((20, 16), 0.3))
    >>> a = evaluate_nelbo(model, x, seed=0)
    >>> a == evaluate_nelbo(model, x, seed=0) and model.training  # mode restored
    True
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NotRequired, TypedDict

import torch

from ..latent import LatentSpec
from ..utils.checkpoint import fixed_seed

__all__ = [
    "ACTIVE_KL",
    "RunMetrics",
    "batched",
    "eval_mode",
    "evaluate_nelbo",
    "evaluate_nll_exact",
    "evaluate_run",
]

EVAL_BATCH = 100
#: a latent group is *active* when its mean KL(q(z_i|x) || p(z_i)) over the test set exceeds this
ACTIVE_KL = 0.01


class RunMetrics(TypedDict):
    """What :func:`~pyro_dvae.training.train` returns and writes to ``metrics.json`` (nats/datum);
    read a run's back with :func:`~pyro_dvae.utils.files.read_metrics`.

    The first group comes from :func:`evaluate_run`; the rest describe the run. ``train``
    returns the ``history``; ``metrics.json`` names the file that holds it instead
    (``history_file``; runs written before it kept the ``history``).
    """

    test_nelbo: float
    test_nll_iwae: float
    test_nll_exact: float | None
    true_test_nll: float | None
    test_kl: float
    active_groups: int
    eval: dict[str, Any]
    dataset: str
    latent: str
    estimator: str
    num_configurations: int | None
    log2_num_configurations: float
    data_dim: int
    num_train: int
    num_valid: int
    num_test: int
    valid_nelbo: float
    final_temperature: float | None
    steps: int
    epochs_completed: int
    skipped_steps: list[dict[str, Any]]
    train_seconds: float
    device: str
    distributed: dict[str, Any]
    config: dict[str, Any]
    versions: dict[str, str]
    history: NotRequired[dict[str, list]]
    history_file: NotRequired[str]
    seconds: float


def batched(
    fn: Callable[[torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    batch: int = EVAL_BATCH,
    *,
    rows: bool = False,
) -> torch.Tensor:
    """``fn`` over ``x`` in batches of ``batch`` rows, results detached and concatenated
    (flattened per batch, or kept as rows with ``rows=True``).

    Example:
        >>> batched(lambda xb: xb.sum(-1), torch.ones(250, 2)).shape
        torch.Size([250])
    """
    shape = (lambda t: t) if rows else (lambda t: t.reshape(-1))
    return torch.cat([shape(fn(x[i : i + batch]).detach()) for i in range(0, len(x), batch)])


@contextmanager
def eval_mode(module: torch.nn.Module) -> Iterator[None]:
    """``module.eval()`` inside (no dropout, no encoder noise), its previous mode restored after.

    Example:
        >>> net = torch.nn.Dropout(0.5)
        >>> with eval_mode(net):
        ...     net.training
        False
        >>> net.training
        True
    """
    was_training = module.training
    module.eval()
    try:
        yield
    finally:
        module.train(was_training)


def evaluate_nelbo(model: Any, x: torch.Tensor, *, seed: int, num_samples: int = 1) -> float:
    """The discrete -ELBO per datum of ``model`` (a :class:`~pyro_dvae.models.DiscreteVAE`) on
    ``x``, in eval mode, under ``seed`` (the surrounding RNG streams are left as they were).

    Example:
        >>> from pyro_dvae.models import DiscreteVAE
        >>> model = DiscreteVAE(16, "2x3", encoder_hidden=(8,))
        >>> evaluate_nelbo(model, torch.ones(4, 16), seed=1) > 0
        True
    """
    from ..infer import discrete_elbo

    with torch.no_grad(), fixed_seed(seed), eval_mode(model):
        values = batched(
            lambda xb: discrete_elbo(model.model, model.guide, xb, num_samples=num_samples), x
        )
    return -float(values.mean())


def evaluate_nll_exact(model: Any, x: torch.Tensor, *, max_configurations: int) -> float:
    """The exact negative log-likelihood per datum (every latent configuration summed), in eval
    mode.

    Example:
        >>> from pyro_dvae.models import DiscreteVAE
        >>> model = DiscreteVAE(16, "2x3", encoder_hidden=(8,))
        >>> evaluate_nll_exact(model, torch.ones(4, 16), max_configurations=9) > 0
        True
    """
    from ..infer import exact_log_likelihood

    with torch.no_grad(), eval_mode(model):
        ll = batched(
            lambda xb: exact_log_likelihood(model.model, xb, max_configurations=max_configurations),
            x,
        )
    return -float(ll.mean())


def evaluate_run(model: Any, data: Any, config: Any) -> dict[str, Any]:
    """The test metrics of a trained model (the first keys of :class:`RunMetrics`): -ELBO with 10
    samples, IWAE NLL, exact NLL where ``K^N <= config.max_configurations``, the true NLL when
    ``data`` knows it, KL and active latent groups; in eval mode, seeded from ``config.seed``.

    Example:
        >>> from pyro_dvae.data import load_digits
        >>> from pyro_dvae.models import DiscreteVAE
        >>> from pyro_dvae.training import TrainConfig
        >>> data = load_digits()
        >>> model = DiscreteVAE(data.data_dim, "2x3", encoder_hidden=(8,))
        >>> m = evaluate_run(model, data, TrainConfig(latent="2x3", iwae_samples=5))
        >>> m["test_nll_exact"] <= m["test_nelbo"]
        True
    """
    with eval_mode(model):
        return _test_metrics(model, data, LatentSpec.parse(config.latent), config)


def _test_metrics(model: Any, data: Any, spec: LatentSpec, config: Any) -> dict[str, Any]:
    from ..infer import iwae_log_likelihood

    x = data.test
    nelbo = evaluate_nelbo(model, x, seed=config.seed + 2, num_samples=10)
    batch = max(1, min(EVAL_BATCH, 100_000 // config.iwae_samples))
    with torch.no_grad(), fixed_seed(config.seed + 3):
        iwae = batched(
            lambda xb: iwae_log_likelihood(
                model.model, model.guide, xb, num_samples=config.iwae_samples
            ),
            x,
            batch,
        )
    exact = None
    if spec.num_configurations <= config.max_configurations:
        exact = evaluate_nll_exact(model, x, max_configurations=config.max_configurations)
    true_ll = getattr(data, "true_test_log_likelihood", None)
    kl = batched(model.kl_per_group, x, rows=True).mean(0)  # [N]: mean over the test set
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


def _write_plots(model: Any, data: Any, history: dict, out: Path, seed: int) -> None:
    import matplotlib.pyplot as plt

    from ..plots import plot_prior_samples, plot_reconstructions, plot_training_curve

    with torch.no_grad(), fixed_seed(seed), eval_mode(model):
        x = data.test[:10]
        x_rec = model.reconstruct(x)
        samples = model.sample_x(32)
    for fig in (
        plot_training_curve(history, out / "training_curve.png"),
        plot_reconstructions(x, x_rec, data.image_shape, out / "reconstructions.png"),
        plot_prior_samples(samples, data.image_shape, out / "prior_samples.png"),
    ):
        plt.close(fig)

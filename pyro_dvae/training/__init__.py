"""Training loop: :class:`TrainConfig` and :func:`train`.

:func:`train` fits a :class:`~pyro_dvae.models.DiscreteVAE` with Pyro's ``SVI`` on minibatches,
anneals the relaxation temperature, and evaluates the held-out test set in nats per datum:
the discrete ELBO, an importance-weighted (IWAE) estimate of ``log p(x)`` and, when the latent
space is small enough, the exact ``log p(x)`` by enumeration.

Example:
    >>> from pyro_dvae.training import TrainConfig, train
    >>> cfg = TrainConfig(latent="2x4", epochs=1, iwae_samples=10, encoder_hidden=(32,))
    >>> metrics = train(cfg, progress=False)  # doctest: +SKIP
"""

from __future__ import annotations

from ..infer import ESTIMATORS, RELAXED_ESTIMATORS
from ._checkpointing import CHECKPOINT_NAME, ResumePoint, resume_point
from ._checkpointing import RUN_OUTPUTS as RUN_OUTPUTS
from ._config import DATASETS, LR_SCHEDULES, ON_NAN, TrainConfig
from ._limits import MAX_LATENT_UNITS as MAX_LATENT_UNITS
from ._limits import MAX_PARAMETERS as MAX_PARAMETERS
from ._loop import train
from ._signals import TrainingInterrupted
from .evaluation import RunMetrics, eval_mode, evaluate_nelbo, evaluate_nll_exact, evaluate_run
from .semisupervised import (
    SEMISUPERVISED_ESTIMATORS,
    SemiSupervisedConfig,
    confusion_matrix,
    pick_labelled,
    train_semisupervised,
)

__all__ = [
    "CHECKPOINT_NAME",
    "DATASETS",
    "ESTIMATORS",
    "LR_SCHEDULES",
    "ON_NAN",
    "RELAXED_ESTIMATORS",
    "ResumePoint",
    "RunMetrics",
    "SEMISUPERVISED_ESTIMATORS",
    "SemiSupervisedConfig",
    "TrainConfig",
    "TrainingInterrupted",
    "confusion_matrix",
    "eval_mode",
    "evaluate_nelbo",
    "evaluate_nll_exact",
    "evaluate_run",
    "pick_labelled",
    "resume_point",
    "train",
    "train_semisupervised",
]

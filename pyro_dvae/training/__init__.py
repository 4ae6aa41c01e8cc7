"""Training: :class:`TrainConfig`, :class:`Trainer` and :func:`train`.

A :class:`Trainer` holds one run (model, ELBO, optimizer, loop state, RNG) with ``step``, ``fit``,
``evaluate``, ``save`` and ``restore``; :func:`train` fits a
:class:`~pyro_dvae.models.DiscreteVAE` with Pyro's ``SVI`` on minibatches, anneals the
relaxation temperature, and evaluates the held-out test set in nats per datum:
the discrete ELBO, an importance-weighted (IWAE) estimate of ``log p(x)`` and, when the latent
space is small enough, the exact ``log p(x)`` by enumeration.

Example:
    >>> from pyro_dvae.training import TrainConfig, train
    >>> cfg = TrainConfig(latent="2x4", epochs=1, iwae_samples=10, encoder_hidden=(32,))
    >>> metrics = train(cfg, progress=False)  # doctest: +SKIP
"""

from __future__ import annotations

from ..infer import ESTIMATORS, RELAXED_ESTIMATORS
from ..utils.checkpoint import CHECKPOINT_NAME, ResumePoint, resume_point
from ..utils.checkpoint import RUN_OUTPUTS as RUN_OUTPUTS
from ._config import DATASETS, LR_SCHEDULES, ON_NAN, TrainConfig
from ._limits import MAX_LATENT_UNITS as MAX_LATENT_UNITS
from ._limits import MAX_PARAMETERS as MAX_PARAMETERS
from ._loop import train
from ._signals import TrainingInterrupted
from ._state import LoopState
from .evaluation import RunMetrics, eval_mode, evaluate_nelbo, evaluate_nll_exact, evaluate_run
from .semisupervised import (
    SEMISUPERVISED_ESTIMATORS,
    SemiSupervisedConfig,
    confusion_matrix,
    pick_labelled,
    train_semisupervised,
)
from .trainer import Trainer

__all__ = [
    "CHECKPOINT_NAME",
    "DATASETS",
    "ESTIMATORS",
    "LR_SCHEDULES",
    "LoopState",
    "ON_NAN",
    "RELAXED_ESTIMATORS",
    "ResumePoint",
    "RunMetrics",
    "SEMISUPERVISED_ESTIMATORS",
    "SemiSupervisedConfig",
    "TrainConfig",
    "Trainer",
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

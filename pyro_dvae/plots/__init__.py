"""Matplotlib figures for training runs and posterior analysis.

Every function returns a :class:`matplotlib.figure.Figure` and, when ``path`` is given, also
saves it as a PNG. The non-interactive ``Agg`` backend is used, so no display is needed.

- training: :func:`plot_training_curve`, :func:`plot_elbo_curves`, :func:`plot_learning_curves`
- images: :func:`plot_reconstructions`, :func:`plot_prior_samples`,
  :func:`plot_latent_traversals`
- latent codes: :func:`plot_code_usage`, :func:`plot_posterior_entropy`,
  :func:`plot_code_vs_label`
- a whole run directory: :func:`plot_run`
"""

from __future__ import annotations

from .images import (
    latent_traversals,
    plot_latent_traversals,
    plot_prior_samples,
    plot_reconstructions,
)
from .latents import plot_code_usage, plot_code_vs_label, plot_posterior_entropy
from .run import plot_comparison_dir, plot_run
from .semisupervised import plot_accuracy_curve, plot_class_samples, plot_confusion_matrix
from .training import plot_elbo_curves, plot_learning_curves, plot_training_curve

__all__ = [
    "latent_traversals",
    "plot_accuracy_curve",
    "plot_class_samples",
    "plot_confusion_matrix",
    "plot_code_usage",
    "plot_code_vs_label",
    "plot_comparison_dir",
    "plot_elbo_curves",
    "plot_latent_traversals",
    "plot_learning_curves",
    "plot_posterior_entropy",
    "plot_prior_samples",
    "plot_reconstructions",
    "plot_run",
    "plot_training_curve",
]

"""Diagnostics of gradient estimators against exact answers."""

from .gradients import (
    GradientDiagnostics,
    compare_gradients,
    default_group,
    exact_gradient,
    gradient_diagnostics,
    gradient_estimates,
    preserved_param_store,
)

__all__ = [
    "GradientDiagnostics",
    "compare_gradients",
    "default_group",
    "exact_gradient",
    "gradient_diagnostics",
    "gradient_estimates",
    "preserved_param_store",
]

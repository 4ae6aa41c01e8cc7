"""Estimator comparison against the exact answer: same data, model, seeds and budget for several
estimators, with learning curves, time to a target NLL and gradient diagnostics.

Example:
    >>> from pyro_dvae.comparison import CompareConfig, run_comparison, summarize, write_results
    >>> cfg = CompareConfig(steps=200, seeds=(0, 1))
    >>> specs = "exact,gumbel-softmax:tau=0.5,nvil"
    >>> result = summarize(run_comparison(specs, cfg))  # doctest: +SKIP
    >>> write_results(result, "runs/compare")  # doctest: +SKIP
"""

from .harness import DEFAULT_ESTIMATORS, CompareConfig, run_comparison
from .plotting import save_learning_curves, save_temperature_sweep
from .recorder import RunRecorder, preserved_training_state
from .report import format_markdown, write_results
from .spec import SPEC_OPTIONS, EstimatorSpec, parse_spec, parse_specs
from .summary import (
    SCALAR_METRICS,
    curve_metric,
    gradient_table,
    mean_sd,
    summarize,
    time_to_target,
)

__all__ = [
    "DEFAULT_ESTIMATORS",
    "SCALAR_METRICS",
    "SPEC_OPTIONS",
    "CompareConfig",
    "EstimatorSpec",
    "RunRecorder",
    "curve_metric",
    "format_markdown",
    "gradient_table",
    "mean_sd",
    "parse_spec",
    "parse_specs",
    "preserved_training_state",
    "run_comparison",
    "save_learning_curves",
    "save_temperature_sweep",
    "summarize",
    "time_to_target",
    "write_results",
]

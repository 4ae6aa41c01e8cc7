"""Posterior analysis: export trained models to ArviZ, reload runs, latent-code statistics.

Names are imported on first use, so ``import pyro_dvae.analysis.latent_stats`` (used by the
plots) does not import ArviZ.

Example:
    >>> from pyro_dvae.analysis import to_inference_data, load_run  # doctest: +SKIP
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = [
    "GROUPS",
    "SAMPLED_GROUPS",
    "TrainedRun",
    "code_usage",
    "export_run",
    "load_inference_data",
    "load_run",
    "mutual_information",
    "posterior_entropy",
    "posterior_probs",
    "probs_from_inference_data",
    "save_inference_data",
    "to_inference_data",
]

_WHERE = {
    "GROUPS": "arviz_export",
    "SAMPLED_GROUPS": "arviz_export",
    "export_run": "arviz_export",
    "load_inference_data": "arviz_export",
    "save_inference_data": "arviz_export",
    "to_inference_data": "arviz_export",
    "TrainedRun": "runs",
    "load_run": "runs",
    "code_usage": "latent_stats",
    "mutual_information": "latent_stats",
    "posterior_entropy": "latent_stats",
    "posterior_probs": "latent_stats",
    "probs_from_inference_data": "latent_stats",
}


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        return getattr(importlib.import_module(f".{_WHERE[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)

"""Summaries over seeds: mean and spread of every metric, time to a target NLL, gradient tables.

The learning-curve metric (:func:`curve_metric`) is the exact test NLL where the latent space can
be enumerated, else the discrete test -ELBO. "Steps/seconds to target" are read off the learning
curve: the first evaluation at or below the target (``None`` if never reached). When no
estimator ended meaningfully below the NLL of a model that ignores the latents (independent pixel
frequencies, where a collapsed posterior sits), ``result["collapse"]["stuck"]`` is true and the
report says so instead of presenting an automatic target as reached.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Sequence
from typing import Any

__all__ = [
    "COLLAPSE_MARGIN",
    "SCALAR_METRICS",
    "curve_metric",
    "gradient_table",
    "mean_sd",
    "summarize",
    "time_to_target",
]

#: an estimator moved from the collapsed start when its final mean NLL (or -ELBO) is this
#: fraction of the collapsed NLL below it (0.27 nats on the digits' 27.29)
COLLAPSE_MARGIN = 0.01

#: per-run scalar metrics aggregated over seeds
SCALAR_METRICS = (
    "test_nll_exact",
    "test_nelbo",
    "test_nll_iwae",
    "ms_per_step",
    "train_seconds",
    "steps",
    "steps_to_target",
    "seconds_to_target",
)


def mean_sd(values: Iterable[float | None]) -> dict[str, Any]:
    """Mean, sample SD, min, max and count of the values that are not ``None``/NaN.

    Example:
        >>> mean_sd([1.0, 3.0, None])
        {'mean': 2.0, 'sd': 1.4142135623730951, 'min': 1.0, 'max': 3.0, 'n': 2}
    """
    xs = [float(v) for v in values if v is not None and not math.isnan(float(v))]
    if not xs:
        return {"mean": None, "sd": None, "min": None, "max": None, "n": 0}
    return {
        "mean": statistics.fmean(xs),
        "sd": statistics.stdev(xs) if len(xs) > 1 else None,
        "min": min(xs),
        "max": max(xs),
        "n": len(xs),
    }


def curve_metric(result: dict[str, Any]) -> str:
    """``"nll_exact"`` when the exact NLL was computed, else ``"nelbo"``.

    Example:
        >>> curve_metric({"dataset": {"exact_feasible": False}})
        'nelbo'
    """
    return "nll_exact" if result["dataset"]["exact_feasible"] else "nelbo"


def time_to_target(curve: dict[str, list], metric: str, target: float) -> tuple[Any, Any]:
    """``(steps, seconds)`` of the first evaluation with ``metric <= target``, else ``(None,
    None)``.

    Example:
        >>> time_to_target({"step": [1, 2], "seconds": [0.1, 0.2], "nelbo": [5.0, 3.0]},
        ...                "nelbo", 4.0)
        (2, 0.2)
    """
    for step, seconds, value in zip(curve["step"], curve["seconds"], curve[metric]):
        if value is not None and value <= target:
            return step, seconds
    return None, None


def _final_key(metric: str) -> str:
    return "test_nll_exact" if metric == "nll_exact" else "test_nelbo"


def _relative(value: float, norm: float) -> float | None:
    return value / norm if norm > 0 and math.isfinite(value) else None


def gradient_table(
    runs: Sequence[dict[str, Any]], *, own_temperature_only: bool = True
) -> list[dict[str, Any]]:
    """Gradient diagnostics averaged over seeds, one row per (step, temperature, group).

    Each row has ``rel_bias = bias / ||exact||``, ``rel_sd = sqrt(variance) / ||exact||``,
    ``bias_noise = bias / bias_se`` (about 1 for an unbiased estimator, larger when biased),
    ``cosine`` and ``mse``, each as a :func:`mean_sd` dict.

    Example:
        >>> row = {"step": 5, "temperature": None, "at_training_temperature": True,
        ...        "group": "encoder", "bias": 1.0, "bias_se": 0.5, "cosine": 0.9,
        ...        "variance": 4.0, "mse": 5.0, "exact_norm": 2.0}
        >>> gradient_table([{"gradients": [row]}])[0]["rel_sd"]["mean"]
        1.0
    """
    groups: dict[tuple, list[dict[str, Any]]] = {}
    for run in runs:
        for row in run["gradients"]:
            if own_temperature_only and not row["at_training_temperature"]:
                continue
            groups.setdefault((row["step"], row["temperature"], row["group"]), []).append(row)
    table = []
    for (step, temperature, group), rows in sorted(
        groups.items(), key=lambda kv: (kv[0][0], kv[0][1] or 0.0, kv[0][2])
    ):
        rel = _relative
        table.append(
            {
                "step": step,
                "temperature": temperature,
                "group": group,
                "rel_bias": mean_sd(rel(r["bias"], r["exact_norm"]) for r in rows),
                "rel_sd": mean_sd(rel(math.sqrt(r["variance"]), r["exact_norm"]) for r in rows),
                "bias_noise": mean_sd(rel(r["bias"], r["bias_se"]) for r in rows),
                "cosine": mean_sd(r["cosine"] for r in rows),
                "mse": mean_sd(r["mse"] for r in rows),
            }
        )
    return table


def summarize(result: dict[str, Any], target: float | None = None) -> dict[str, Any]:
    """Add ``target`` and, per estimator, ``summary`` (:func:`mean_sd` of :data:`SCALAR_METRICS`
    plus ``reached``: runs that reached the target) and ``gradients`` (:func:`gradient_table`,
    own temperature) and ``temperature_sweep`` (all temperatures, relaxed estimators) to the
    output of :func:`~pyro_dvae.comparison.run_comparison`; returns it.

    Without ``target``, the target is the median over estimators of the mean final NLL.

    Example:
        >>> run = {"seed": 0, "test_nll_exact": 25.0, "test_nelbo": 26.0, "test_nll_iwae": 25.1,
        ...        "ms_per_step": 3.0, "train_seconds": 1.0, "steps": 2, "gradients": [],
        ...        "curve": {"step": [2], "seconds": [1.0], "nll_exact": [25.0], "nelbo": [26.0]}}
        >>> res = {"dataset": {"exact_feasible": True}, "estimators": [{"spec": "exact",
        ...        "relaxed": False, "runs": [run]}]}
        >>> summarize(res)["target"]["value"], res["estimators"][0]["summary"]["reached"]
        (25.0, 1)
    """
    metric = curve_metric(result)
    finals = []
    for est in result["estimators"]:
        values = [r[_final_key(metric)] for r in est["runs"]]
        finals.append(mean_sd(values)["mean"])
    auto = target is None
    if auto:
        known = [f for f in finals if f is not None]
        target = statistics.median(known) if known else math.inf
    for est in result["estimators"]:
        for run in est["runs"]:
            run["steps_to_target"], run["seconds_to_target"] = time_to_target(
                run["curve"], metric, target
            )
        summary = {key: mean_sd(run.get(key) for run in est["runs"]) for key in SCALAR_METRICS}
        summary["reached"] = sum(run["steps_to_target"] is not None for run in est["runs"])
        summary["runs"] = len(est["runs"])
        est["summary"] = summary
        est["gradients"] = gradient_table(est["runs"])
        est["temperature_sweep"] = (
            gradient_table(est["runs"], own_temperature_only=False) if est["relaxed"] else []
        )
    result["target"] = {
        "metric": "test_nll_exact" if metric == "nll_exact" else "test_nelbo",
        "value": target,
        "auto": auto,
    }
    result["collapse"] = _collapse(result["dataset"].get("collapsed_nll"), finals)
    return result


def _collapse(collapsed: float | None, finals: list[float | None]) -> dict[str, Any]:
    """``{"nll": collapsed, "stuck": whether no estimator's final mean is COLLAPSE_MARGIN below
    it}``; ``stuck`` is false when either is unknown.

    Example:
        >>> _collapse(27.29, [27.31, 27.2, None]), _collapse(27.29, [27.3, 25.9])["stuck"]
        ({'nll': 27.29, 'stuck': True}, False)
    """
    known = [f for f in finals if f is not None and math.isfinite(f)]
    stuck = collapsed is not None and bool(known)
    stuck = stuck and all(f > collapsed * (1 - COLLAPSE_MARGIN) for f in known)
    return {"nll": collapsed, "stuck": stuck}

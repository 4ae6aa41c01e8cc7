"""PNG plots of a comparison: learning curves (against steps and seconds) and the gradient bias
and spread of relaxed estimators against temperature.

Figures are built with :class:`matplotlib.figure.Figure` directly (no pyplot, no global backend
change) and saved at 110 dpi. Each ``save_*`` function writes a file and returns its path (the
:mod:`pyro_dvae.plots` functions return Figures).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

from ..utils.files import save_figure
from .summary import curve_metric

__all__ = ["save_learning_curves", "save_temperature_sweep"]

_DPI = 110


def _colors(n: int) -> list:
    from matplotlib import colormaps

    cmap = colormaps["tab10" if n <= 10 else "tab20"]
    return [cmap(i % cmap.N) for i in range(n)]


def _stack(runs: list[dict[str, Any]], key: str) -> np.ndarray:
    """``[seeds, points]`` of a curve entry, cut to the shortest run (None -> NaN)."""
    length = min(len(run["curve"]["step"]) for run in runs)
    rows = [[np.nan if v is None else v for v in run["curve"][key][:length]] for run in runs]
    return np.asarray(rows, dtype=float)


def save_learning_curves(result: dict[str, Any], path: str | Path) -> Path:
    """Test NLL (exact, else -ELBO) against training steps and against training seconds: the
    mean over seeds with a band from the lowest to the highest seed, and the target as a
    dashed line.

    Example:
        >>> save_learning_curves(summarize(result), "curves.png")  # doctest: +SKIP
        PosixPath('curves.png')
    """
    metric = curve_metric(result)
    label = "test NLL, exact (nats)" if metric == "nll_exact" else "test -ELBO (nats)"
    estimators = result["estimators"]
    fig = Figure(figsize=(12, 5.4))
    axes = fig.subplots(1, 2, sharey=True)
    colors = _colors(len(estimators))
    tops, bottoms = [], []
    for est, color in zip(estimators, colors):
        values = _stack(est["runs"], metric)
        if values.size == 0 or np.isnan(values).all():
            continue
        mean = np.nanmean(values, axis=0)
        lo, hi = np.nanmin(values, axis=0), np.nanmax(values, axis=0)
        steps = _stack(est["runs"], "step")[0]
        seconds = np.nanmean(_stack(est["runs"], "seconds"), axis=0)
        for ax, x in zip(axes, (steps, seconds)):
            keep = x > 0 if ax is axes[1] else np.ones_like(x, dtype=bool)  # log-scale time
            ax.plot(x[keep], mean[keep], color=color, lw=1.8, label=est["spec"])
            if values.shape[0] > 1:
                ax.fill_between(x[keep], lo[keep], hi[keep], color=color, alpha=0.15, lw=0)
        bottoms.append(float(np.nanmin(lo)))
        tops.append(float(mean[min(len(mean) - 1, max(1, len(mean) // 10))]))
    target = result.get("target", {}).get("value")
    for ax, xlabel in zip(axes, ("training step", "training time (s), log scale")):
        if target is not None and math.isfinite(target):
            ax.axhline(target, color="0.3", ls="--", lw=1, label=None)
        ax.set_xlabel(xlabel)
        ax.grid(alpha=0.3)
    axes[0].set_xlim(left=0)
    axes[1].set_xscale("log")  # estimators' speeds differ by orders of magnitude
    axes[1].xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    if tops and bottoms:  # hide the first steps' large values that flatten the rest
        low, high = min(bottoms), max(tops)
        pad = 0.05 * max(high - low, 1e-3)
        axes[0].set_ylim(low - pad, high + pad)
    axes[0].set_ylabel(label)
    axes[0].set_title("against steps")
    axes[1].set_title("against training time (harness time excluded)")
    data = result["dataset"]
    seeds = len(result["config"]["seeds"])
    fig.suptitle(
        f"{data['name']}, latent {data['latent']}: mean over {seeds} seed(s), band = min..max"
        + ("; dashed: target" if target is not None else "")
    )
    handles, labels = axes[0].get_legend_handles_labels()
    ncol = min(4, max(1, len(labels)))
    fig.legend(handles, labels, loc="lower center", ncol=ncol, frameon=False, fontsize=9)
    rows = math.ceil(len(labels) / ncol)
    fig.subplots_adjust(left=0.07, right=0.98, top=0.88, wspace=0.06, bottom=0.12 + 0.045 * rows)
    path = Path(path)
    save_figure(fig, path, dpi=_DPI)
    return path


def save_temperature_sweep(result: dict[str, Any], path: str | Path) -> Path | None:
    """Relative gradient bias and relative SD (see :func:`~.gradient_table`) of each relaxed
    estimator against temperature, at the last diagnostic checkpoint, per parameter group
    (log-log axes, error bars = SD over seeds, a star at the training temperature). Returns
    ``None`` (and writes nothing) when no relaxed estimator was diagnosed.

    Example:
        >>> save_temperature_sweep(summarize(result), "sweep.png")  # doctest: +SKIP
        PosixPath('sweep.png')
    """
    relaxed = [e for e in result["estimators"] if e.get("temperature_sweep")]
    if not relaxed:
        return None
    fig = Figure(figsize=(11, 7.6))
    axes = fig.subplots(2, 2, sharex=True)
    colors = _colors(len(result["estimators"]))
    color_of = {e["spec"]: c for e, c in zip(result["estimators"], colors)}
    steps: set[int] = set()
    all_temps: set[float] = set()
    samples = result["config"]["diag_samples"]
    for est in relaxed:
        last = max(row["step"] for row in est["temperature_sweep"])
        steps.add(last)
        tau = est["runs"][0].get("final_temperature")
        for col, group in enumerate(("encoder", "decoder")):
            rows = [
                r for r in est["temperature_sweep"] if r["step"] == last and r["group"] == group
            ]
            rows.sort(key=lambda r: r["temperature"])
            temps = np.array([r["temperature"] for r in rows])
            all_temps.update(temps.tolist())
            for row_i, key in enumerate(("rel_bias", "rel_sd")):
                mean = np.array(
                    [np.nan if r[key]["mean"] is None else r[key]["mean"] for r in rows]
                )
                sd = np.array([0.0 if r[key]["sd"] is None else r[key]["sd"] for r in rows])
                ax = axes[row_i, col]
                ax.errorbar(
                    temps, mean, yerr=sd, color=color_of[est["spec"]], marker="o", ms=4,
                    lw=1.6, capsize=3, label=est["spec"],
                )  # fmt: skip
                if tau is not None and tau in temps:
                    i = int(np.flatnonzero(temps == tau)[0])
                    ax.plot(tau, mean[i], marker="*", ms=13, color=color_of[est["spec"]], mec="k")
                if key == "rel_sd":  # noise floor of the bias estimate: rel. SD / sqrt(S)
                    floor = mean / math.sqrt(samples)
                    axes[0, col].plot(temps, floor, color=color_of[est["spec"]], ls=":", lw=1.2)
    titles = {"rel_bias": "relative bias", "rel_sd": "relative SD of one estimate"}
    for row_i, key in enumerate(("rel_bias", "rel_sd")):
        for col, group in enumerate(("encoder", "decoder")):
            ax = axes[row_i, col]
            ax.set_xscale("log")
            ax.set_yscale("log")
            ax.set_xticks(sorted(all_temps))
            ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
            ax.xaxis.set_minor_formatter(NullFormatter())
            ax.yaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
            ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
            ax.yaxis.set_minor_formatter(NullFormatter())
            ax.grid(alpha=0.3, which="major")
            ax.set_title(f"{group}: {titles[key]}", fontsize=11)
            if row_i == 1:
                ax.set_xlabel("temperature tau")
            if col == 0:
                ax.set_ylabel(
                    "||mean - exact|| / ||exact||"
                    if key == "rel_bias"
                    else "sqrt(tr Cov) / ||exact||"
                )
    step_text = ", ".join(str(s) for s in sorted(steps))
    fig.suptitle(
        f"Relaxed gradients vs the exact ELBO gradient at step {step_text}, mean over seeds\n"
        f"star: training tau; bars: SD over seeds; dotted: noise floor of the bias "
        f"(rel. SD / sqrt({samples}))",
        fontsize=11,
    )
    handles, labels = axes[0, 0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=min(4, len(labels)), frameon=False)
    fig.subplots_adjust(left=0.09, right=0.98, top=0.89, bottom=0.13, hspace=0.25, wspace=0.18)
    path = Path(path)
    save_figure(fig, path, dpi=_DPI)
    return path
